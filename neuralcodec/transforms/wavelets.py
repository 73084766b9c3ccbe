"""Full wavelet packet transforms (1D, 2D, 3D) with periodization, as polyphase convolutions.

Every level of a full wavelet packet transform (WPT) splits every band in two along every
spatial axis. With the periodization boundary, ``J`` levels along one axis are a linear map that
is shift-invariant by ``P = 2**J`` samples, so they are *one* stride-1 convolution on the
polyphase components of the signal: the axis of length ``N`` is viewed as ``N/P`` blocks of
``P`` samples, the ``P`` phases become channels, and a ``P -> P`` channel convolution with
circular padding produces the ``P`` bands. The composed kernels are computed once (float64,
from PyWavelets' own ``dwt``/``idwt`` applied to impulses, so they match ``pywt`` by
construction) and cached. nD transforms are separable: one such convolution per spatial axis.

Channel layout (the documented contract)
----------------------------------------
Input ``(B, C, *S)`` with ``d = len(S)`` spatial axes (1: ``T``; 2: ``H, W``; 3: ``T, H, W``).
Output ``(B, C * bands, *S / 2**J)`` with ``bands = 2**(J*d)`` and channel ``c * bands + band``.

``band`` is written in base ``2**d`` with ``J`` digits, the first level's digit most significant
(PyWavelets' "natural" packet order: every level splits each band into its low part first,
then its high parts, and the children of band ``b`` are ``b * 2**d + digit``). Within one level,
``digit = sum_k bit_k * 2**k`` where ``bit_k`` is 1 for the high-pass (detail) filter along
spatial axis ``k`` (``k = 0`` is the first spatial axis). So:

* 1D: digit 0 = ``cA``, 1 = ``cD`` (as ``pywt.dwt``).
* 2D (axes H, W): digit 0 = LL (``cA``), 1 = high along H only (``cH``), 2 = high along W only
  (``cV``), 3 = HH (``cD``) -- exactly ``pywt.dwt2``'s ``cA, (cH, cV, cD)`` order, which is also
  ``pytorch_wavelets.DWTForward``'s ``(low, highs[:, :, 0..2])`` order used by WaLLoC.
* 3D (axes T, H, W): digit = ``t + 2*h + 4*w`` with ``pywt.dwtn`` keys written in axis order
  ``'aaa', 'daa', 'ada', 'dda', 'aad', 'dad', 'add', 'ddd'``.

For ``J`` levels, band ``b`` is the ``pywt.WaveletPacket``/``WaveletPacket2D``
(``mode="periodization"``) node whose path spells the digits of ``b`` from the first level on
(1D: ``'a'``=0, ``'d'``=1; 2D: ``'a'``=0, ``'h'``=1, ``'v'``=2, ``'d'``=3).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pywt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "wpt",
    "iwpt",
    "WPT",
    "IWPT",
    "pad_to_multiple",
    "crop_to",
    "wpt_filter_bank",
    "iwpt_filter_bank",
]

DEFAULT_WAVELET = "bior4.4"


# ----------------------------------------------------------------------------------------------
# Composed polyphase kernels (float64, numpy, cached)
# ----------------------------------------------------------------------------------------------


def _check_wavelet(wavelet: str) -> pywt.Wavelet:
    try:
        w = pywt.Wavelet(wavelet)
    except ValueError as err:
        raise ValueError(
            f"unknown wavelet {wavelet!r}: use a discrete wavelet that pywt knows "
            f"(e.g. 'haar', 'db2', 'sym4', 'coif1', 'bior2.2', 'bior4.4')"
        ) from err
    if not (w.orthogonal or w.biorthogonal):
        raise ValueError(f"wavelet {wavelet!r} is neither orthogonal nor biorthogonal")
    return w


def _extract_kernel(response: np.ndarray, blocks: int) -> tuple[np.ndarray, int]:
    """Turn impulse responses ``response[in_ch, out_ch, k]`` (circular, ``blocks`` long) into a
    conv kernel ``weight[out_ch, in_ch, tap]`` and its left padding.

    ``out[o, k] = sum_{i, d} w[o, i, d] * in[i, k + d]`` and the response to a unit impulse
    at ``in[i, 0]`` is ``out[o, k] = w[o, i, -k]``, so tap offset ``d`` reads index ``-d``.
    """
    offsets = np.arange(-(blocks // 2) + 1, blocks // 2 + 1)  # d in (-blocks/2, blocks/2]
    taps = response[:, :, (-offsets) % blocks]  # [in, out, d]
    used = np.nonzero(np.abs(taps).max(axis=(0, 1)) > 1e-14)[0]
    lo, hi = used.min(), used.max()
    kernel = np.ascontiguousarray(taps[:, :, lo : hi + 1].transpose(1, 0, 2))
    return kernel, int(-offsets[lo])


@functools.lru_cache(maxsize=64)
def _axis_kernels(wavelet: str, levels: int) -> tuple[np.ndarray, int, np.ndarray, int]:
    """Analysis and synthesis polyphase kernels for ``levels`` packet levels along one axis.

    Returns ``(analysis, analysis_left_pad, synthesis, synthesis_left_pad)``; both kernels have
    shape ``(P, P, K)`` with ``P = 2**levels``. Analysis maps phases (input channels) to bands in
    natural order (output channels); synthesis maps bands back to phases.
    """
    w = _check_wavelet(wavelet)
    period = 2**levels
    support = (w.dec_len - 1) * (period - 1) + 1  # samples touched by one composed filter
    blocks = 2 * math.ceil(support / period) + 4  # long enough that nothing wraps onto itself
    length = period * blocks

    # Analysis: impulses at positions 0..P-1 (all phases of block 0), natural packet order.
    sig = np.eye(length)[:period][:, None, :]  # (P impulses, 1 band, length)
    for _ in range(levels):
        low, high = pywt.dwt(sig, w, mode="periodization", axis=-1)
        sig = np.stack([low, high], axis=2).reshape(period, -1, low.shape[-1])
    analysis, a_pad = _extract_kernel(sig, blocks)  # sig: (phase, band, block)

    # Synthesis: impulses at coefficient 0 of every band, reconstructed level by level.
    coef = np.zeros((period, period, blocks))
    coef[np.arange(period), np.arange(period), 0] = 1.0  # (impulse, band, block)
    for _ in range(levels):
        n_imp, n_bands, n = coef.shape
        pairs = coef.reshape(n_imp, n_bands // 2, 2, n)
        coef = pywt.idwt(pairs[:, :, 0], pairs[:, :, 1], w, mode="periodization", axis=-1)
    phases = coef.reshape(period, blocks, period).transpose(0, 2, 1)  # (band, phase, block)
    synthesis, s_pad = _extract_kernel(phases, blocks)
    return analysis, a_pad, synthesis, s_pad


def _fold(kernel: Tensor, left: int, blocks: int) -> tuple[Tensor, int]:
    """Wrap a kernel that is longer than the signal (few blocks) around it, circularly."""
    taps = kernel.shape[-1]
    if left <= blocks and taps - 1 - left <= blocks and taps <= blocks + 1:
        return kernel, left
    folded = kernel.new_zeros(kernel.shape[:-1] + (blocks,))
    index = (torch.arange(taps, device=kernel.device) - left) % blocks
    folded.index_add_(-1, index, kernel)
    return folded, 0


# ----------------------------------------------------------------------------------------------
# One axis at a time
# ----------------------------------------------------------------------------------------------


def _circular_conv(x: Tensor, kernel: Tensor, left: int, along_last: bool) -> Tensor:
    """``x``: (N, P, blocks) or (N, P, blocks, R); circular conv along the blocks axis."""
    blocks = x.shape[2]
    kernel, left = _fold(kernel, left, blocks)
    right = kernel.shape[-1] - 1 - left
    if along_last:
        x = F.pad(x, (left, right), mode="circular")
        return F.conv1d(x, kernel)
    x = F.pad(x, (0, 0, left, right), mode="circular")
    return F.conv2d(x, kernel.unsqueeze(-1))


def _analysis_axis(x: Tensor, outer: int, size: int, inner: int, period: int, kernel, left) -> Tensor:
    """Transform the axis of ``size`` samples sitting between ``outer`` and ``inner`` elements.

    Returns a contiguous tensor laid out as ``(outer, band, size/period, inner)``.
    """
    blocks = size // period
    if inner == 1:
        phases = x.reshape(outer, blocks, period).transpose(1, 2)
        return _circular_conv(phases, kernel, left, along_last=True)
    phases = x.reshape(outer, blocks, period, inner).transpose(1, 2)
    return _circular_conv(phases, kernel, left, along_last=False)


def _synthesis_axis(y: Tensor, outer: int, blocks: int, inner: int, period: int, kernel, left) -> Tensor:
    """Inverse of :func:`_analysis_axis`: ``(outer, band, blocks, inner)`` -> ``(outer, blocks*period, inner)``."""
    if inner == 1:
        phases = _circular_conv(y.reshape(outer, period, blocks), kernel, left, along_last=True)
        return phases.transpose(1, 2).reshape(outer, blocks * period, 1)
    phases = _circular_conv(y.reshape(outer, period, blocks, inner), kernel, left, along_last=False)
    return phases.transpose(1, 2).reshape(outer, blocks * period, inner)


def _check_input(x: Tensor, levels: int, name: str) -> int:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4, 5):
        raise ValueError(
            f"{name} expects (B, C, T), (B, C, H, W) or (B, C, T, H, W); got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} expects a floating point tensor, got {x.dtype}")
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be a positive int, got {levels!r}")
    return x.ndim - 2


_AXIS_NAMES = {1: ("T",), 2: ("H", "W"), 3: ("T", "H", "W")}


def _check_divisible(sizes, levels: int, name: str) -> None:
    period = 2**levels
    names = _AXIS_NAMES[len(sizes)]
    for axis_name, size in zip(names, sizes):
        if size % period:
            raise ValueError(
                f"{name}: dimension {axis_name} has size {size}, which is not divisible by "
                f"2**levels = {period}; pad first, e.g. "
                f"`x, size = pad_to_multiple(x, {period})` and later `crop_to(x, size)`"
            )


def _kernels(wavelet: str, levels: int, dtype, device):
    analysis, a_left, synthesis, s_left = _axis_kernels(wavelet, levels)
    return (
        torch.as_tensor(analysis, dtype=dtype, device=device),
        a_left,
        torch.as_tensor(synthesis, dtype=dtype, device=device),
        s_left,
    )


def _analysis(x: Tensor, levels: int, weight: Tensor, left: int) -> Tensor:
    """Packet analysis with a given per-axis polyphase kernel (phases -> bands)."""
    dims = x.ndim - 2
    batch, channels, *sizes = x.shape
    period = 2**levels

    # Process the last axis first; after axis k the layout is
    # (B*C, S_0..S_{k-1}, band_k, blocks_k, band_{k+1}, blocks_{k+1}, ...).
    out = x
    inner = 1
    for k in reversed(range(dims)):
        outer = batch * channels * math.prod(sizes[:k])
        out = _analysis_axis(out, outer, sizes[k], inner, period, weight, left)
        inner *= sizes[k]
    blocks = [s // period for s in sizes]
    if dims == 1:
        return out.reshape(batch, channels * period, blocks[0])

    # (BC, band_0, blocks_0, ..., band_{d-1}, blocks_{d-1}) with band_k split in J bits (MSB =
    # level 1) -> (BC, [level 1: bit_{d-1} .. bit_0], ..., [level J: ...], blocks_0, ...).
    shape = [batch * channels]
    for k in range(dims):
        shape += [2] * levels + [blocks[k]]
    out = out.reshape(shape)
    bit_dim = lambda k, level: 1 + k * (levels + 1) + level  # noqa: E731
    order = [0]
    for level in range(levels):
        order += [bit_dim(k, level) for k in reversed(range(dims))]
    order += [1 + k * (levels + 1) + levels for k in range(dims)]
    bands = period**dims
    return out.permute(order).reshape(batch, channels * bands, *blocks)


def _synthesis(y: Tensor, levels: int, weight: Tensor, left: int) -> Tensor:
    """Packet synthesis with a given per-axis polyphase kernel (bands -> phases)."""
    dims = y.ndim - 2
    batch, channels_bands, *blocks = y.shape
    period = 2**levels
    channels = channels_bands // period**dims
    bc = batch * channels

    if dims == 1:
        out = y.reshape(bc, period, blocks[0])
    else:
        # Inverse of the final permutation in wpt_filter_bank.
        shape = [bc] + [2] * (levels * dims) + blocks
        out = y.reshape(shape)
        # source dims: 1 + level*dims + (dims-1-k) is bit (k, level); blocks at 1 + levels*dims + k
        order = [0]
        for k in range(dims):
            order += [1 + level * dims + (dims - 1 - k) for level in range(levels)]
            order.append(1 + levels * dims + k)
        out = out.permute(order)

    sizes = [b * period for b in blocks]
    for k in range(dims):
        outer = bc * math.prod(sizes[:k])
        inner = math.prod(period * b for b in blocks[k + 1 :])
        out = _synthesis_axis(out, outer, blocks[k], inner, period, weight, left)
    return out.reshape(batch, channels, *sizes)


def _adjoint(weight: Tensor, left: int) -> tuple[Tensor, int]:
    """Kernel of the adjoint (transpose) circular convolution: swap in/out, reverse the taps."""
    return weight.transpose(0, 1).flip(-1).contiguous(), weight.shape[-1] - 1 - left


class _AnalysisFn(torch.autograd.Function):
    """Analysis whose gradient is the adjoint transform (a synthesis-shaped pass with the
    transposed kernel), as fast as the forward and itself differentiable; autograd through the
    pads/convs/permutes would be about 3x slower than the forward pass."""

    @staticmethod
    def forward(ctx, x, levels, weight, left):  # type: ignore[override]
        ctx.levels, ctx.left = levels, left
        ctx.save_for_backward(weight)
        return _analysis(x, levels, weight, left)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        adj, adj_left = _adjoint(weight, ctx.left)
        return _SynthesisFn.apply(grad.contiguous(), ctx.levels, adj, adj_left), None, None, None


class _SynthesisFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, levels, weight, left):  # type: ignore[override]
        ctx.levels, ctx.left = levels, left
        ctx.save_for_backward(weight)
        return _synthesis(y, levels, weight, left)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        adj, adj_left = _adjoint(weight, ctx.left)
        return _AnalysisFn.apply(grad.contiguous(), ctx.levels, adj, adj_left), None, None, None


def wpt_filter_bank(x: Tensor, levels: int, wavelet: str = DEFAULT_WAVELET, kernel=None) -> Tensor:
    """Full wavelet packet transform by composed polyphase convolutions (any pywt wavelet).

    ``kernel`` optionally passes a precomputed ``(analysis_kernel, left_pad)`` (used by
    :class:`WPT` to keep its kernel on the right device). See the module docstring for the layout.

    >>> import torch
    >>> wpt_filter_bank(torch.randn(2, 3, 64, 64), 2, "db2").shape
    torch.Size([2, 48, 16, 16])
    """
    _check_input(x, levels, "wpt")
    _check_divisible(x.shape[2:], levels, "wpt")
    if kernel is None:
        kernel = _kernels(wavelet, levels, x.dtype, x.device)[:2]
    weight, left = kernel
    return _AnalysisFn.apply(x, levels, weight.to(dtype=x.dtype), left)


def iwpt_filter_bank(y: Tensor, levels: int, wavelet: str = DEFAULT_WAVELET, kernel=None) -> Tensor:
    """Inverse of :func:`wpt_filter_bank` (perfect reconstruction, any pywt wavelet).

    >>> import torch
    >>> x = torch.randn(1, 2, 32, dtype=torch.float64)
    >>> bool((iwpt_filter_bank(wpt_filter_bank(x, 3, "sym4"), 3, "sym4") - x).abs().max() < 1e-10)
    True
    """
    dims = _check_input(y, levels, "iwpt")
    bands = 2 ** (levels * dims)
    if y.shape[1] % bands:
        raise ValueError(
            f"iwpt: {y.shape[1]} channels is not a multiple of the {bands} bands of a "
            f"{dims}D, {levels}-level packet transform"
        )
    if kernel is None:
        kernel = _kernels(wavelet, levels, y.dtype, y.device)[2:]
    weight, left = kernel
    return _SynthesisFn.apply(y, levels, weight.to(dtype=y.dtype), left)


# ----------------------------------------------------------------------------------------------
# Public entry points (dispatch to the fastest exact path)
# ----------------------------------------------------------------------------------------------


def wpt(x: Tensor, levels: int, wavelet: str = DEFAULT_WAVELET) -> Tensor:
    """Full ``levels``-level wavelet packet transform of ``x`` with periodization.

    ``x`` is ``(B, C, T)``, ``(B, C, H, W)`` or ``(B, C, T, H, W)``; every spatial size must be
    divisible by ``2**levels`` (see :func:`pad_to_multiple`). Returns ``(B, C * bands, *S/2**J)``
    with channel ``c * bands + band`` in the order documented in this module's docstring.
    Differentiable (the gradient is the adjoint transform, as fast as the forward pass),
    batched, any device, float32/float64.

    All wavelets, ``bior4.4`` included, use the composed polyphase filter bank: on CPU it measured
    3-4x faster than the CDF 9/7 lifting path (:mod:`neuralcodec.transforms.lifting`, many small
    elementwise passes) and 4-12x faster than one level at a time
    (``benchmarks/bench_wavelets.py``).

    >>> import torch
    >>> x = torch.randn(8, 3, 64, 64)
    >>> y = wpt(x, 3)
    >>> y.shape
    torch.Size([8, 192, 8, 8])
    >>> bool((iwpt(y, 3) - x).abs().max() < 1e-4)
    True
    """
    return wpt_filter_bank(x, levels, wavelet)


def iwpt(y: Tensor, levels: int, wavelet: str = DEFAULT_WAVELET) -> Tensor:
    """Inverse of :func:`wpt`: ``(B, C * bands, *S/2**J)`` -> ``(B, C, *S)``.

    >>> import torch
    >>> iwpt(torch.zeros(1, 16, 4, 4), 2).shape
    torch.Size([1, 1, 16, 16])
    """
    return iwpt_filter_bank(y, levels, wavelet)


class _PacketBase(nn.Module):
    def __init__(self, levels: int, wavelet: str = DEFAULT_WAVELET, synthesis: bool = False):
        super().__init__()
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be a positive int, got {levels!r}")
        self.levels = levels
        self.wavelet = wavelet
        analysis, a_left, synth, s_left = _axis_kernels(wavelet, levels)
        self._kernel64, self._left = (synth, s_left) if synthesis else (analysis, a_left)
        # Non-persistent: follows .to(device) but stays out of state_dict (it is derived from
        # the wavelet name, not learned). Kept in float64; cast per call to the input's dtype.
        self.register_buffer("kernel", torch.as_tensor(self._kernel64), persistent=False)

    def _kernel_for(self, x: Tensor) -> tuple[Tensor, int]:
        if self.kernel.dtype == x.dtype:
            return self.kernel, self._left
        if torch.finfo(self.kernel.dtype).eps > torch.finfo(x.dtype).eps:
            # The module was cast down (e.g. .float()) but sees higher-precision input: rebuild
            # the kernel from the cached float64 values instead of using the rounded buffer.
            return torch.as_tensor(self._kernel64, dtype=x.dtype, device=self.kernel.device), self._left
        return self.kernel.to(x.dtype), self._left

    def extra_repr(self) -> str:
        return f"levels={self.levels}, wavelet={self.wavelet!r}"


class WPT(_PacketBase):
    """Module form of :func:`wpt` (1D/2D/3D chosen from the input's ndim).

    >>> import torch
    >>> WPT(2)(torch.randn(1, 3, 32, 32)).shape
    torch.Size([1, 48, 8, 8])
    """

    def __init__(self, levels: int, wavelet: str = DEFAULT_WAVELET):
        super().__init__(levels, wavelet, synthesis=False)

    def forward(self, x: Tensor) -> Tensor:
        return wpt_filter_bank(x, self.levels, self.wavelet, kernel=self._kernel_for(x))


class IWPT(_PacketBase):
    """Module form of :func:`iwpt`.

    >>> import torch
    >>> x = torch.randn(1, 3, 32, 32)
    >>> bool((IWPT(2)(WPT(2)(x)) - x).abs().max() < 1e-4)
    True
    """

    def __init__(self, levels: int, wavelet: str = DEFAULT_WAVELET):
        super().__init__(levels, wavelet, synthesis=True)

    def forward(self, y: Tensor) -> Tensor:
        return iwpt_filter_bank(y, self.levels, self.wavelet, kernel=self._kernel_for(y))


# ----------------------------------------------------------------------------------------------
# Padding helpers
# ----------------------------------------------------------------------------------------------


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "reflect") -> tuple[Tensor, tuple[int, ...]]:
    """Pad the spatial axes of ``x`` (all dims after ``(B, C)``) at their end up to a multiple.

    Returns ``(padded, original_size)``; undo with :func:`crop_to`. ``mode`` is any
    ``torch.nn.functional.pad`` mode (``"reflect"``, ``"replicate"``, ``"circular"``,
    ``"constant"``). Reflect padding avoids the artificial edge a zero pad would create, which
    keeps wavelet coefficients small near the border (better for compression). Reflect needs the
    pad to be smaller than the axis; for axes too short for that, ``"replicate"`` is used on
    that axis instead (documented fallback, applied per axis).

    >>> import torch
    >>> x = torch.randn(1, 3, 30, 45)
    >>> padded, size = pad_to_multiple(x, 8)
    >>> padded.shape, size
    (torch.Size([1, 3, 32, 48]), (30, 45))
    >>> torch.equal(crop_to(padded, size), x)
    True
    """
    if not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple must be a positive int, got {multiple!r}")
    if x.ndim < 3:
        raise ValueError(f"pad_to_multiple expects (B, C, *spatial), got shape {tuple(x.shape)}")
    sizes = tuple(int(s) for s in x.shape[2:])
    out = x
    # Pad one axis at a time so each axis can fall back to replicate on its own.
    for axis, size in enumerate(sizes):
        extra = (-size) % multiple
        if extra == 0:
            continue
        axis_mode = mode
        if mode == "reflect" and extra >= size:
            axis_mode = "replicate"
        out = _pad_axis(out, axis + 2, extra, axis_mode)
    return out, sizes


def _pad_axis(x: Tensor, dim: int, extra: int, mode: str) -> Tensor:
    """Pad one axis at its end; F.pad's non-constant modes want (N, C, L), so flatten the rest."""
    moved = x.movedim(dim, -1)
    flat = moved.reshape(1, -1, moved.shape[-1])
    if mode == "constant":
        padded = F.pad(flat, (0, extra))
    else:
        padded = F.pad(flat, (0, extra), mode=mode)
    return padded.reshape(*moved.shape[:-1], moved.shape[-1] + extra).movedim(-1, dim)


def crop_to(x: Tensor, original_size: tuple[int, ...]) -> Tensor:
    """Crop the spatial axes of ``x`` back to ``original_size`` (undoes :func:`pad_to_multiple`).

    >>> import torch
    >>> crop_to(torch.zeros(1, 1, 16), (13,)).shape
    torch.Size([1, 1, 13])
    """
    sizes = tuple(original_size)
    if len(sizes) != x.ndim - 2:
        raise ValueError(f"original_size {sizes} does not match the {x.ndim - 2} spatial axes of x")
    for axis, (have, want) in enumerate(zip(x.shape[2:], sizes)):
        if want > have:
            raise ValueError(f"cannot crop spatial axis {axis} of size {have} to larger size {want}")
    return x[(slice(None), slice(None)) + tuple(slice(0, s) for s in sizes)]
