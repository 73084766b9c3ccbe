"""Exact integer convolutions in floating point, shared by the fixed-point context networks.

A convolution of integer-valued tensors is exact in a float format whenever every partial sum
stays below that format's exact-integer limit, whatever the summation order (threads, batch
size, GEMM blocking, device). The callers bound the partial sums from the weights' L1 norms and
the inputs' maxima, pick the narrowest exact format with :func:`exact_dtype`, and run the
convolution under :func:`exact_conv_mode`, which switches off what is not exact (cuDNN's
FFT/Winograd algorithms, TF32).

>>> exact_dtype(1000.0, "net"), exact_dtype(2.0**30, "net")
(torch.float32, torch.float64)
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["F32_EXACT", "F64_EXACT", "exact_dtype", "exact_conv_mode"]

F32_EXACT = float(2**24)  # every integer of smaller magnitude is a float32
F64_EXACT = float(2**52)  # ... a float64 (kept one bit below 2**53, as the callers' bounds)


def exact_dtype(bound: float, what: str) -> torch.dtype:
    """float32 if every partial sum is below ``2**24``, float64 below ``2**52``, else
    ``OverflowError`` (``what`` names the network: only a corrupted input gets there)."""
    if bound < F32_EXACT:
        return torch.float32
    if bound < F64_EXACT:
        return torch.float64
    raise OverflowError(f"{what} overflow (input out of the trained range)")


@contextlib.contextmanager
def exact_conv_mode() -> Iterator[None]:
    """cuDNN and TF32 off for the block (FFT/Winograd algorithms and TF32 are not exact)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
