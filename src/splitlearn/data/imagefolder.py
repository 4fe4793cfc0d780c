"""Image-folder data sets (one sub-folder per class): PNG, JPEG and TIFF read by Pillow, as RGB or
grayscale, optionally resized. The colorectal cancer histology tiles are a preset of it."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from splitlearn.data.dataset import ArrayDataset, DataError
from splitlearn.data.partition import stratified_split

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
IMAGE_MODES = {"rgb": "RGB", "grayscale": "L"}  # mode -> Pillow mode: 3 channels, or 1
HISTOLOGY_FOLDER = "Kather_texture_2016_image_tiles_5000"
HISTOLOGY_URL = "https://doi.org/10.5281/zenodo.53169"


def _read_image(path: Path, image_size: int | None, mode: str = "rgb") -> np.ndarray:
    """(H, W, C) uint8 pixels; ``DataError`` naming the file, in one line, if Pillow cannot decode it all."""
    try:
        with Image.open(path) as image:
            image = image.convert(IMAGE_MODES[mode])  # decodes the whole file: a truncated one fails here
            if image_size is not None:
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            pixels = np.asarray(image)
    # Pillow reports damage as OSError (truncated), SyntaxError (broken PNG chunks), struct.error or EOFError.
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {' '.join(str(e).split()) or type(e).__name__}") from None
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def load_image_folder(
    root: str | os.PathLike,
    *,
    image_size: int | None = None,
    mode: str = "rgb",
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Images under ``root/<class>/`` in [0, 1], stratified, seeded train/test split.

    ``mode`` is ``"rgb"`` (3, H, W) or ``"grayscale"`` (1, H, W); Pillow converts each file,
    whatever its own mode. Classes are the sub-folder names, sorted; files with other extensions
    (case-insensitive) are ignored. Without ``image_size`` all images must share one size; with
    it they are resized to ``(image_size, image_size)``. Sample ids number the files in class
    then file-name order. ``name`` defaults to the folder name. A file that cannot be decoded
    (truncated, damaged, not an image) is a ``DataError`` naming it.
    """
    if mode not in IMAGE_MODES:
        raise ValueError(f"mode must be one of {', '.join(IMAGE_MODES)}, got {mode!r}")
    if image_size is not None and (type(image_size) is not int or image_size < 1):
        raise ValueError(f"image_size must be a positive int (or None to keep each file's size), got {image_size!r}")
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
            images.append(_read_image(path, image_size, mode))
            if images[-1].shape != images[0].shape:
                raise DataError(
                    f"image {path} is {images[-1].shape[1]}x{images[-1].shape[0]}, earlier ones are "
                    f"{images[0].shape[1]}x{images[0].shape[0]}; pass image_size (--image-size) to resize them"
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
    A preset of :func:`load_image_folder`: RGB, ``.tif`` files only, named "histology".
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
        root, image_size=image_size, mode="rgb", extensions=(".tif", ".tiff"), test_fraction=test_fraction, seed=seed,
        name="histology",
    )  # fmt: skip
