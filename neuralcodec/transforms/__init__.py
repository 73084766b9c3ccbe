"""Wavelet packet transforms (1D/2D/3D; filter bank and CDF 9/7 lifting).

>>> import torch
>>> from neuralcodec.transforms import wpt, iwpt
>>> x = torch.randn(2, 3, 64, 64)
>>> y = wpt(x, 3)              # (2, 3 * 64, 8, 8), channel = c * 64 + band
>>> bool((iwpt(y, 3) - x).abs().max() < 1e-4)
True
"""

from .lifting import iwpt_lifting97, wpt_lifting97
from .wavelets import (
    IWPT,
    WPT,
    crop_to,
    iwpt,
    iwpt_filter_bank,
    pad_to_multiple,
    wpt,
    wpt_filter_bank,
)

__all__ = [
    "wpt",
    "iwpt",
    "WPT",
    "IWPT",
    "pad_to_multiple",
    "crop_to",
    "wpt_filter_bank",
    "iwpt_filter_bank",
    "wpt_lifting97",
    "iwpt_lifting97",
]
