"""Integer CDF tables for the rANS coder, built deterministically in float64 on the CPU.

A *table set* is the triple ``(cdfs, cdf_lengths, offsets)`` of CompressAI's
``encode_with_indexes``, as int32 tensors:

* ``cdfs``: ``(n_tables, max_len)``; row ``i`` holds ``cdf_lengths[i]`` increasing
  values from ``0`` to ``2**precision``, zero-padded on the right;
* ``cdf_lengths``: ``(n_tables,)``; number of bins + 1 (so a table of ``L`` in-range
  values has ``L + 1`` bins, the last one the *escape* bin, and ``cdf_length = L + 2``);
* ``offsets``: ``(n_tables,)``; symbol ``s`` is coded in bin ``s - offsets[i]``; values
  outside ``[offset, offset + L)`` go to the escape bin and then to the coder's side stream.

Every bin (the escape included) gets a frequency of at least 1, so any value can be
coded, and the frequencies add up to exactly ``2**precision``. The quantization is our
own and is vectorized over rows: bins whose share would fall below one unit are pinned
to 1, the rest of the total is shared out in proportion to the probabilities
(floor, then the largest remainders, ties broken by bin index). All arithmetic is in
float64 on the CPU, so the same probabilities give the same tables on every machine.

>>> import torch
>>> cdf = pmf_to_quantized_cdf(torch.tensor([0.5, 0.25, 0.25, 0.0]), precision=4)
>>> cdf.tolist()
[0, 7, 11, 15, 16]
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "pmf_to_quantized_cdf",
    "tables_from_pmfs",
    "discretized_gaussian_tables",
    "default_scale_table",
    "table_hash",
    "tensor_hash",
    "check_tables",
]


def pmf_to_quantized_cdf(pmf: Tensor, precision: int = 16, lengths: Tensor | Sequence[int] | None = None) -> Tensor:
    """Quantize probability rows to integer CDFs summing to exactly ``2**precision``.

    ``pmf`` is ``(n_bins,)`` or ``(n_tables, n_bins)`` of non-negative weights (they are
    normalized per row; the escape bin, if any, is just one of the bins). With
    ``lengths``, row ``i`` uses only its first ``lengths[i]`` bins and the rest is padding.
    Returns int32 CDFs of shape ``(..., n_bins + 1)``: ``cdf[0] = 0``, ``cdf[n] = 2**precision``
    for each row's own ``n``, zeros after that. Every used bin has frequency >= 1.

    >>> import torch
    >>> cdf = pmf_to_quantized_cdf(torch.tensor([[0.9, 0.1, 0.0], [1.0, 0.0, 7.0]]), precision=8, lengths=[2, 3])
    >>> cdf.tolist()
    [[0, 230, 256, 0], [0, 32, 33, 256]]
    """
    if not 1 <= precision <= 30:
        raise ValueError(f"precision must be in 1..30, got {precision}")
    squeeze = pmf.dim() == 1
    p = pmf.detach().to(device="cpu", dtype=torch.float64)
    if squeeze:
        p = p.unsqueeze(0)
    if p.dim() != 2 or p.size(1) < 1:
        raise ValueError(f"pmf must be (n_bins,) or (n_tables, n_bins), got shape {tuple(pmf.shape)}")
    n_tables, n_bins = p.shape
    if lengths is None:
        n = torch.full((n_tables,), n_bins, dtype=torch.int64)
    else:
        n = torch.as_tensor(lengths, dtype=torch.int64).reshape(-1).cpu()
        if n.numel() != n_tables or bool(((n < 1) | (n > n_bins)).any()):
            raise ValueError("lengths must give 1..n_bins used bins for each row")
    total = 1 << precision
    if bool((n > total).any()):
        raise ValueError(f"a table has more bins ({int(n.max())}) than 2**precision ({total})")
    used = torch.arange(n_bins)[None, :] < n[:, None]
    if not bool(torch.isfinite(p[used]).all()) or bool((p[used] < 0).any()):
        raise ValueError("pmf must be finite and non-negative")
    p = torch.where(used, p, torch.zeros((), dtype=torch.float64))
    mass = p.sum(1, keepdim=True)
    if bool((mass <= 0).any()):
        raise ValueError("every pmf row needs a positive total")
    p = p / mass

    # Pin to 1 every bin whose proportional share of what is left would be < 1; repeat,
    # since pinning shrinks what is left for the others (converges in a few rounds).
    pinned = ~used
    while True:
        free = used & ~pinned
        budget = (total - (used & pinned).sum(1, keepdim=True)).to(torch.float64)
        free_mass = torch.where(free, p, torch.zeros((), dtype=torch.float64)).sum(1, keepdim=True)
        share = torch.where(free_mass > 0, p * budget / free_mass.clamp_min(1e-300), torch.zeros((), dtype=torch.float64))
        newly = free & (share < 1.0)
        if not bool(newly.any()):
            break
        pinned = pinned | newly

    free = used & ~pinned
    share = torch.where(free, share, torch.zeros((), dtype=torch.float64))
    freq = torch.where(free, share.floor(), torch.zeros((), dtype=torch.float64)).to(torch.int64)
    freq = freq + (used & pinned).to(torch.int64)
    # Largest remainders get the units lost to flooring; stable sort -> ties go to lower bins.
    missing = total - freq.sum(1, keepdim=True)
    remainder = torch.where(free, share - share.floor(), torch.full((), -1.0, dtype=torch.float64))
    order = torch.argsort(-remainder, dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n_bins).expand(n_tables, n_bins).contiguous())
    freq = freq + ((rank < missing) & free).to(torch.int64)
    if bool((freq.sum(1) != total).any()) or bool(((freq < 1) & used).any()):  # cannot happen; guard anyway
        raise RuntimeError("pmf_to_quantized_cdf: internal error")

    cdf = torch.zeros(n_tables, n_bins + 1, dtype=torch.int64)
    cdf[:, 1:] = freq.cumsum(1)
    cdf = torch.where(torch.arange(n_bins + 1)[None, :] <= n[:, None], cdf, torch.zeros((), dtype=torch.int64))
    cdf = cdf.to(torch.int32)
    return cdf[0] if squeeze else cdf


def tables_from_pmfs(
    pmfs: Sequence[Tensor],
    offsets: Tensor | Sequence[int],
    tail_masses: Tensor | Sequence[float] | None = None,
    precision: int = 16,
) -> tuple[Tensor, Tensor, Tensor]:
    """Build a padded table set from per-table probabilities of the in-range values.

    ``pmfs[i]`` holds the probabilities of the values ``offsets[i], offsets[i] + 1, ...``;
    an escape bin is appended with ``tail_masses[i]`` (default: what the pmf leaves of 1,
    never less than 0). Returns int32 ``(cdfs, cdf_lengths, offsets)``.

    >>> import torch
    >>> cdfs, lengths, offsets = tables_from_pmfs([torch.tensor([0.25, 0.5, 0.25]), torch.tensor([1.0])], [-1, 0])
    >>> lengths.tolist(), offsets.tolist(), cdfs.shape
    ([5, 3], [-1, 0], torch.Size([2, 5]))
    """
    rows = [torch.as_tensor(p).detach().to("cpu", torch.float64).reshape(-1) for p in pmfs]
    if not rows:
        raise ValueError("need at least one pmf")
    offsets_t = torch.as_tensor(offsets, dtype=torch.int64).reshape(-1).cpu()
    if offsets_t.numel() != len(rows):
        raise ValueError("one offset per pmf")
    if tail_masses is None:
        tails = torch.stack([(1.0 - r.sum()).clamp_min(0.0) for r in rows])
    else:
        tails = torch.as_tensor(tail_masses, dtype=torch.float64).reshape(-1).cpu()
        if tails.numel() != len(rows):
            raise ValueError("one tail mass per pmf")
    n_bins = torch.tensor([r.numel() + 1 for r in rows], dtype=torch.int64)
    padded = torch.zeros(len(rows), int(n_bins.max()), dtype=torch.float64)
    for i, r in enumerate(rows):
        padded[i, : r.numel()] = r
        padded[i, r.numel()] = tails[i]
    cdfs = pmf_to_quantized_cdf(padded, precision, lengths=n_bins)
    return cdfs, (n_bins + 1).to(torch.int32), offsets_t.to(torch.int32)


def default_scale_table(min_scale: float = 0.11, max_scale: float = 256.0, levels: int = 64) -> Tensor:
    """The usual log-spaced scale table of hyperprior models (CompressAI's default values).

    >>> t = default_scale_table()
    >>> len(t), round(float(t[0]), 2), round(float(t[-1]), 1)
    (64, 0.11, 256.0)
    """
    return torch.exp(torch.linspace(math.log(min_scale), math.log(max_scale), levels))


def _normal_cdf(x: Tensor) -> Tensor:
    # erfc keeps precision far in the lower tail, where the escape mass is measured.
    return 0.5 * torch.erfc(x * (-(2.0**-0.5)))


def discretized_gaussian_tables(
    scale_table: Tensor | Sequence[float], tail_mass: float = 1e-9, precision: int = 16
) -> tuple[Tensor, Tensor, Tensor]:
    """Tables of zero-mean Gaussians of the given scales, discretized to unit bins.

    Same meaning as CompressAI's ``GaussianConditional.update()``: table ``i`` covers
    ``[-c, c]`` with ``c = ceil(scale_i * z)``, ``z`` the ``1 - tail_mass/2`` normal quantile;
    the mass outside is the escape bin. Computed in float64 (the scales, taken as given,
    are converted exactly).

    >>> cdfs, lengths, offsets = discretized_gaussian_tables([0.5, 2.0])
    >>> lengths.tolist(), offsets.tolist()
    ([11, 29], [-4, -13])
    """
    scales = torch.as_tensor(scale_table).detach().to("cpu", torch.float64).reshape(-1)
    if scales.numel() < 1 or not bool(torch.isfinite(scales).all()) or bool((scales <= 0).any()):
        raise ValueError("scale_table must hold positive finite scales")
    if not 0 < tail_mass < 1:
        raise ValueError("tail_mass must be in (0, 1)")
    z = -float(torch.special.ndtri(torch.tensor(tail_mass / 2, dtype=torch.float64)))
    centers = torch.ceil(scales * z).to(torch.int64)
    lengths = 2 * centers + 1
    width = int(lengths.max())
    distance = (torch.arange(width)[None, :] - centers[:, None]).abs().to(torch.float64)
    s = scales[:, None]
    upper = _normal_cdf((0.5 - distance) / s)
    lower = _normal_cdf((-0.5 - distance) / s)
    pmf = upper - lower  # symmetric: computed on |x| so both tails use the accurate side
    padded = torch.zeros(len(scales), width + 1, dtype=torch.float64)
    valid = torch.arange(width)[None, :] < lengths[:, None]
    padded[:, :width] = torch.where(valid, pmf, torch.zeros((), dtype=torch.float64))
    tails = 2 * _normal_cdf(-(centers.to(torch.float64) + 0.5) / scales)
    padded.scatter_(1, lengths[:, None], tails[:, None])
    cdfs = pmf_to_quantized_cdf(padded, precision, lengths=lengths + 1)
    return cdfs, (lengths + 2).to(torch.int32), (-centers).to(torch.int32)


def check_tables(cdfs: Tensor, cdf_lengths: Tensor, offsets: Tensor, precision: int = 16) -> None:
    """Raise ``ValueError`` unless ``(cdfs, cdf_lengths, offsets)`` is a well-formed table set.

    >>> import torch
    >>> check_tables(*tables_from_pmfs([torch.tensor([0.5, 0.5])], [0]))
    """
    if cdfs.dim() != 2 or cdf_lengths.dim() != 1 or offsets.dim() != 1:
        raise ValueError("cdfs must be 2-D, cdf_lengths and offsets 1-D")
    if not (cdfs.size(0) == cdf_lengths.numel() == offsets.numel()):
        raise ValueError("cdfs, cdf_lengths and offsets disagree on the number of tables")
    c = cdfs.detach().cpu().to(torch.int64)
    n = cdf_lengths.detach().cpu().to(torch.int64)
    if bool(((n < 2) | (n > c.size(1))).any()):
        raise ValueError("cdf_lengths out of range")
    cols = torch.arange(c.size(1))[None, :]
    last = c.gather(1, (n - 1)[:, None])[:, 0]
    steps = c[:, 1:] - c[:, :-1]
    in_row = cols[:, 1:] < n[:, None]
    if bool((c[:, 0] != 0).any()) or bool((last != (1 << precision)).any()) or bool(((steps < 1) & in_row).any()):
        raise ValueError(f"each CDF row must rise strictly from 0 to 2**{precision}")


def tensor_hash(*tensors: Tensor) -> str:
    """Short hex (16 chars of SHA-256) of tensors' dtypes, shapes and bytes, device-independent.

    >>> import torch
    >>> tensor_hash(torch.arange(3, dtype=torch.int32)) == tensor_hash(torch.arange(3, dtype=torch.int32))
    True
    """
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def table_hash(cdfs: Tensor, cdf_lengths: Tensor, offsets: Tensor) -> str:
    """Short hex hash of a table set (as int32), so encoder and decoder can check they agree.

    >>> import torch
    >>> t = tables_from_pmfs([torch.tensor([0.5, 0.5])], [0])
    >>> len(table_hash(*t))
    16
    """
    return tensor_hash(*(x.to(torch.int32) for x in (cdfs, cdf_lengths, offsets)))
