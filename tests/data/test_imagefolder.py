import re

import numpy as np
import pytest
import torch
from PIL import Image

from splitlearn.data import DataError, load_histology, load_image_folder

from .conftest import TILE_CLASSES


def as_bytes(features: torch.Tensor) -> np.ndarray:
    """(n, 3, H, W) features back to (n, H, W, 3) uint8 pixels."""
    return (features * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_round_trip_classes_ids_and_stratified_split(tiles_dir):
    root, tiles = tiles_dir
    (root / "01_TUMOR" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    train, test = load_image_folder(root, seed=5)
    assert (len(train), len(test)) == (12, 3)
    assert sorted(torch.cat([train.sample_ids, test.sample_ids]).tolist()) == list(range(15))
    for ds in (train, test):
        assert (ds.classes, ds.name, ds.sample_shape, ds.features.dtype) == (TILE_CLASSES, "tiles", (3, 4, 6), torch.float32)
        np.testing.assert_array_equal(as_bytes(ds.features), tiles[ds.sample_ids.numpy()])
        assert torch.equal(ds.labels, ds.sample_ids // 5)
    assert test.labels.tolist() == [0, 1, 2]
    assert torch.equal(load_image_folder(root, seed=5)[1].sample_ids, test.sample_ids)


def test_resize_and_extensions(tiles_dir):
    root, _ = tiles_dir
    Image.new("L", (9, 9), 200).save(root / "02_STROMA" / "GREY.PNG")
    Image.new("RGB", (3, 3), (10, 20, 30)).save(root / "02_STROMA" / "zz.jpeg")
    train, test = load_image_folder(root, image_size=8, test_fraction=0.5)
    features = torch.cat([train.features, test.features])[torch.cat([train.sample_ids, test.sample_ids]).argsort()]
    assert features.shape == (17, 3, 8, 8)
    assert (as_bytes(features[5:6]) == 200).all()  # grey PNG sorts first in its class, as RGB
    assert np.abs(as_bytes(features[11:12]).astype(int) - [10, 20, 30]).max() <= 2  # JPEG is lossy
    only_tif = load_image_folder(root, image_size=8, extensions=(".TIF",))
    assert sum(map(len, only_tif)) == 15


def test_mixed_sizes_need_image_size(tiles_dir):
    root, _ = tiles_dir
    path = root / "03_COMPLEX" / "big.tif"
    Image.new("RGB", (7, 4)).save(path)
    with pytest.raises(DataError, match=f"{re.escape(str(path))} is 7x4, earlier ones are 6x4; pass image_size"):
        load_image_folder(root)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # Pillow warns about the damage before failing
@pytest.mark.parametrize("damage", [lambda data: b"II*\0 not really a tiff", lambda data: data[: len(data) // 2]])
def test_corrupt_image_names_file(tiles_dir, damage):
    root, _ = tiles_dir
    path = root / "02_STROMA" / "tile_3.tif"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=f"cannot read image {re.escape(str(path))}"):
        load_image_folder(root)


def test_empty_class_and_missing_folders(tiles_dir, tmp_path):
    root, _ = tiles_dir
    (root / "04_LYMPHO").mkdir()
    with pytest.raises(DataError, match=f"class folder {re.escape(str(root / '04_LYMPHO'))} has no images"):
        load_image_folder(root)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (4, 4)).save(flat / "a.tif")
    with pytest.raises(DataError, match=f"image folder {re.escape(str(flat))} has no class sub-folders"):
        load_image_folder(flat)
    with pytest.raises(DataError, match=f"image folder {re.escape(str(tmp_path / 'nope'))} does not exist"):
        load_image_folder(tmp_path / "nope")


def test_histology_accepts_extracted_folder_or_its_parent(tiles_dir, tmp_path):
    root, _ = tiles_dir
    Image.new("RGB", (4, 4)).save(root / "01_TUMOR" / "extra.png")  # histology reads .tif only
    kather = root.rename(tmp_path / "Kather_texture_2016_image_tiles_5000")
    for folder in (kather, tmp_path):
        train, test = load_histology(folder, image_size=16, test_fraction=0.4, seed=1)
        assert (len(train), len(test), train.sample_shape, train.name) == (9, 6, (3, 16, 16), "histology")
        assert train.classes == TILE_CLASSES
    assert load_histology(kather)[0].sample_shape == (3, 64, 64)
    with pytest.raises(DataError, match="does not exist; download .*zenodo.53169"):
        load_histology(tmp_path / "nope")
