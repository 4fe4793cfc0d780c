"""Image-folder data sets (one sub-folder per class), e.g. colorectal cancer histology tiles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from splitlearn.data.dataset import ArrayDataset, DataError
from splitlearn.data.partition import stratified_split

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
HISTOLOGY_FOLDER = "Kather_texture_2016_image_tiles_5000"
HISTOLOGY_URL = "https://doi.org/10.5281/zenodo.53169"


def _read_image(path: Path, image_size: int | None) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image_size is not None:
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(image)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def load_image_folder(
    root: str | os.PathLike,
    *,
    image_size: int | None = None,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Images under ``root/<class>/`` as RGB (3, H, W) in [0, 1], stratified train/test split.

    Classes are the sub-folder names, sorted; files with other extensions (case-insensitive)
    are ignored. Without ``image_size`` all images must share one size; with it they are resized
    to ``(image_size, image_size)``. Sample ids number the files in class then file-name order.
    ``name`` defaults to the folder name.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"image folder {root} has no class sub-folders")
    suffixes = tuple(e.lower() for e in extensions)
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise DataError(f"class folder {class_dir} has no images ({', '.join(suffixes)})")
        for path in files:
            images.append(_read_image(path, image_size))
            if images[-1].shape != images[0].shape:
                raise DataError(
                    f"image {path} is {images[-1].shape[1]}x{images[-1].shape[0]}, earlier ones are "
                    f"{images[0].shape[1]}x{images[0].shape[0]}; pass image_size to resize them"
                )
            labels.append(label)
    full = ArrayDataset(
        torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255).contiguous(),
        torch.tensor(labels),
        classes=tuple(p.name for p in class_dirs),
        name=root.name if name is None else name,
    )
    train, test = stratified_split(full.labels, test_fraction=test_fraction, seed=seed)
    return full.subset(train), full.subset(test)


def load_histology(
    root: str | os.PathLike, *, image_size: int | None = 64, test_fraction: float = 0.2, seed: int = 0
) -> tuple[ArrayDataset, ArrayDataset]:
    """Colorectal cancer histology textures (Kather et al. 2016; 8 classes of 150x150 RGB .tif tiles).

    ``root`` holds 01_TUMOR ... 08_EMPTY, or is the parent of the extracted
    Kather_texture_2016_image_tiles_5000 folder. Tiles are resized to ``image_size`` (None keeps 150).
    """
    root = Path(root)
    if (root / HISTOLOGY_FOLDER).is_dir():
        root = root / HISTOLOGY_FOLDER
    elif not root.is_dir():
        raise DataError(
            f"histology folder {root} does not exist; download and extract "
            f"{HISTOLOGY_FOLDER}.zip from {HISTOLOGY_URL} and pass its folder as root"
        )
    return load_image_folder(
        root, image_size=image_size, extensions=(".tif", ".tiff"), test_fraction=test_fraction, seed=seed,
        name="histology",
    )  # fmt: skip
