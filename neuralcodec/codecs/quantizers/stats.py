"""Codebook statistics: how many codes a quantizer actually uses, and how evenly.

* ``utilization``: fraction of the codebook that received at least one vector;
* ``perplexity``: ``exp(H)`` of the usage distribution, the "effective number of codes"
  (equal to ``codebook_size`` when every code is used equally often);
* ``dead_codes``: codes that received no vector.

The quantizers count assignments while training (``quantizer.stats()``); for a model card,
count the indices of an evaluation set with :func:`usage_counts` and :func:`codebook_stats`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def usage_counts(indices: Tensor, codebook_size: int) -> Tensor:
    """How many times each code appears in ``indices`` (negative indices, dropped quantizers, are ignored).

    Example:
        >>> usage_counts(torch.tensor([[0, 2, 2, -1]]), 4).tolist()
        [1.0, 0.0, 2.0, 0.0]
    """
    flat = indices.reshape(-1)
    flat = flat[flat >= 0]
    if flat.numel() and int(flat.max()) >= codebook_size:
        raise ValueError(f"index {int(flat.max())} out of range for a codebook of {codebook_size} codes")
    return torch.bincount(flat.long(), minlength=codebook_size).to(torch.float64)


def codebook_stats(counts: Tensor) -> dict[str, float]:
    """Utilization, perplexity and dead codes from per-code usage counts.

    Example:
        >>> s = codebook_stats(torch.tensor([5.0, 5.0, 0.0, 0.0]))
        >>> s["utilization"], round(s["perplexity"], 6), s["dead_codes"]
        (0.5, 2.0, 2)
    """
    counts = counts.detach().to(torch.float64).reshape(-1)
    codebook_size = counts.numel()
    total = float(counts.sum())
    used = int((counts > 0).sum())
    if total > 0:
        probs = counts[counts > 0] / total
        entropy = float(-(probs * probs.log()).sum())
    else:
        entropy = 0.0
    perplexity = math.exp(entropy) if total > 0 else 0.0
    return {
        "codebook_size": codebook_size,
        "vectors": total,
        "used_codes": used,
        "dead_codes": codebook_size - used,
        "utilization": used / codebook_size,
        "perplexity": perplexity,
        "normalized_perplexity": perplexity / codebook_size,
        "entropy_bits": entropy / math.log(2),
    }
