import re

import numpy as np
import pytest
import torch
from PIL import Image

from splitlearn.data import DataError, load_dataset, load_histology, load_image_folder

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


def test_png_jpeg_and_tiff_as_grayscale_or_rgb(tmp_path):
    """One folder mixing formats and modes: Pillow converts each file to the declared mode and size."""
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (5, 5), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(grey, "L").save(tmp_path / "a" / "1.png")
    Image.new("RGB", (5, 5), (255, 0, 0)).save(tmp_path / "a" / "2.JPG")
    Image.new("RGBA", (5, 5), (0, 0, 255, 255)).save(tmp_path / "b" / "3.png")
    Image.new("RGB", (10, 10), (30, 30, 30)).save(tmp_path / "b" / "4.tiff")
    for mode, channels in (("grayscale", 1), ("rgb", 3)):
        train, test = load_image_folder(tmp_path, image_size=5, mode=mode, test_fraction=0.5, seed=0)
        ds = {i: x for d in (train, test) for i, x in zip(d.sample_ids.tolist(), d.features)}
        assert train.sample_shape == (channels, 5, 5) and train.classes == ("a", "b")
        pixels = {i: (x * 255).round().to(torch.uint8) for i, x in ds.items()}
        if mode == "grayscale":
            assert torch.equal(pixels[0][0], torch.from_numpy(grey))  # a grayscale PNG, exactly
            assert abs(int(pixels[1].float().mean()) - 76) <= 2  # pure red in Pillow's L = R * 299/1000
            assert torch.equal(pixels[3], torch.full((1, 5, 5), 30, dtype=torch.uint8))  # TIFF, resized from 10x10
        else:
            assert all(torch.equal(pixels[0][c], torch.from_numpy(grey)) for c in range(3))
            assert pixels[2][:, 2, 2].tolist() == [0, 0, 255]  # RGBA PNG loses its alpha
    with pytest.raises(ValueError, match="mode must be one of rgb, grayscale, got 'cmyk'"):
        load_image_folder(tmp_path, mode="cmyk")
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        load_image_folder(tmp_path, image_size=0)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")
@pytest.mark.parametrize("keep", [0.5, 0.1])  # cut in the pixel data, and in the header chunks
def test_truncated_png_is_named_in_one_line(tmp_path, keep):
    for c in ("benign", "malignant"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16), dtype=np.uint8), "L").save(tmp_path / c / f"{i}.png")
    path = tmp_path / "malignant" / "1.png"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError, match=f"^cannot read image {re.escape(str(path))}: ") as error:
        load_image_folder(tmp_path)
    assert "\n" not in str(error.value)


def test_image_folder_through_the_registry(tiles_dir):
    root, _ = tiles_dir
    train, test = load_dataset("imagefolder", root=root, seed=3, image_size=8, mode="grayscale")
    assert (train.name, train.sample_shape, len(train) + len(test)) == ("tiles", (1, 8, 8), 15)
    with pytest.raises(DataError, match="data set 'imagefolder' is read from a folder of your own .* pass its path as root"):
        load_dataset("imagefolder")
