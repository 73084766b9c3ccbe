"""Random-crop training data from a folder of images, held in memory as 8-bit RGB.

Large lossy photos are downscaled first (Lanczos, by at least ``min_downscale``), which
removes their block artefacts, as is usual for CLIC/ImageNet-style training sets.

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> from PIL import Image
>>> d = Path(tempfile.mkdtemp())
>>> Image.fromarray(np.zeros((80, 90, 3), np.uint8)).save(d / "a.png")
>>> ds = ImageCropDataset(d, crop=32, min_downscale=1.0)
>>> ds.sample(4, np.random.default_rng(0)).shape
torch.Size([4, 3, 32, 32])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import MediaError

__all__ = ["ImageCropDataset", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")


class ImageCropDataset:
    """All images of a folder (recursively), downscaled and kept as uint8 ``(H, W, 3)`` arrays.

    Args:
        root: folder of images.
        crop: side of the square random crops.
        min_downscale: every image is shrunk by at least this factor (Lanczos).
        max_side: images whose shorter side is still above this after ``min_downscale`` are
            shrunk further, so very large photos do not dominate.
    """

    def __init__(self, root: str | os.PathLike, crop: int = 128, min_downscale: float = 2.0,
                 max_side: int = 768) -> None:
        self.root = Path(root)
        self.crop = crop
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise MediaError(f"no images found in {self.root}")
        self.files: list[Path] = []
        self.images: list[np.ndarray] = []
        for path in files:
            try:
                with Image.open(path) as im:
                    im = ImageOps.exif_transpose(im).convert("RGB")
                    w, h = im.size
                    factor = max(min_downscale, min(w, h) / max_side, 1.0)
                    if factor > 1.0:
                        im = im.resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.LANCZOS)
                    arr = np.asarray(im, dtype=np.uint8).copy()
            except OSError as e:
                raise MediaError(f"cannot read training image {path}: {e}") from None
            if arr.shape[0] >= crop and arr.shape[1] >= crop:
                self.files.append(path)
                self.images.append(arr)
        if not self.images:
            raise MediaError(f"no image in {self.root} is at least {crop}x{crop} after downscaling")
        # Sample images in proportion to their number of crop positions (area).
        areas = np.array([(a.shape[0] - crop + 1) * (a.shape[1] - crop + 1) for a in self.images], dtype=np.float64)
        self.weights = areas / areas.sum()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def pixels(self) -> int:
        return int(sum(a.shape[0] * a.shape[1] for a in self.images))

    def sample(self, batch: int, rng: np.random.Generator, crop: int | None = None) -> torch.Tensor:
        """``batch`` random crops (random image, position, horizontal flip) as float in [0, 1].

        ``crop`` overrides the dataset's crop size (images smaller than it are skipped).
        """
        crop = crop or self.crop
        if crop == self.crop:
            weights = self.weights
        else:
            areas = np.array([max(a.shape[0] - crop + 1, 0) * max(a.shape[1] - crop + 1, 0) for a in self.images],
                             dtype=np.float64)
            if areas.sum() == 0:
                raise MediaError(f"no training image is at least {crop}x{crop}")
            weights = areas / areas.sum()
        out = np.empty((batch, crop, crop, 3), dtype=np.uint8)
        which = rng.choice(len(self.images), size=batch, p=weights)
        for i, k in enumerate(which):
            img = self.images[k]
            top = int(rng.integers(0, img.shape[0] - crop + 1))
            left = int(rng.integers(0, img.shape[1] - crop + 1))
            patch = img[top : top + crop, left : left + crop]
            out[i] = patch[:, ::-1] if rng.random() < 0.5 else patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)

    def names(self) -> Sequence[str]:
        return [p.name for p in self.files]
