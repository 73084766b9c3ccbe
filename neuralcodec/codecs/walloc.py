"""WaLLoC: wavelet learned lossy compression (Jacobellis & Yadwadkar, 2024), our version.

Pipeline (2D images here; the layers take any number of spatial axes so audio (1D) and
video (3D) reuse them)::

    x in [0, 1] ─ -0.5 ─ WPT (bior4.4, J levels) ─ 1×1 linear (PCA init) ─ × gain ─ compander
       ─ round ─▶ integer latent q  (C_lat channels at 1/2^J resolution, |q| <= 127)
    q ─▶ hierarchical context model (Gaussian, mean + scale) ─▶ rANS ─▶ .ncf sections
    q ─ inverse compander ─ / gain ─ linear inverse + residual conv net ─ IWPT ─ +0.5 ─▶ x̂

* **Encoder**: one linear map of the wavelet packet coefficients, so latents are cheap to
  compute and keep a meaning (the first channel is a colour low-pass image), which is what
  compressed-domain learning wants. It starts as the PCA of training coefficients
  (:meth:`WaLLoC.init_from_data`).
* **Gain and compander**: a learnable per-channel gain sets the quantization step (the rate
  term of the loss trades it against distortion); a soft clip ``L·tanh(v/L)`` with ``L=127``
  keeps every latent inside 8 bits while staying almost linear where the values are.
* **Entropy model** (:class:`HierarchicalContextModel`): a factorized per-channel Gaussian
  for a coarse lattice (every ``2**levels``-th latent along each axis), then each finer
  lattice is coded in two or more groups (the quincunx centres, then the edges in 2D), every
  group conditioned on everything decoded before it through a small dilated conv net that
  predicts a mean and a scale per latent. Within a group the channels are coded in chunks
  (the first, high-variance channels first), each chunk also conditioned on the earlier chunks
  at the same positions. Each (group, chunk) stage is one rANS stream, so decoding is a few
  tensor passes, not a raster scan. Symbols are ``q - round(mean)``, coded with a
  discretized Gaussian table chosen by scale and by the rounded-away fraction of the mean.
  :class:`ExactHierarchicalContextModel` (``entropy_model="hierarchical_exact"``, used by
  ``walloc-image-16x``) is the same model in exact fixed-point arithmetic: its table indexes
  do not depend on the batch, the thread count or the device, so batches are coded and
  decoded in one pass per stage. ``entropy_model="channel_checkerboard"`` selects a
  hyperprior + channel-group + checkerboard model (:mod:`.channel_context`, 9 streams).
* **Decoder**: the exact linear inverse of the encoder plus a residual convolutional net at
  latent resolution (zero-initialised last layer, so training starts from the linear
  codec); no attention, no normalization over the batch or the image, so any size and any
  tile decode the same way.

Bitstream (one ``.ncf`` container per image): sections ``g0``, ``g1``, ... (one rANS stream
per coding stage), ``alpha`` (zlib of the 8-bit alpha plane, RGBA only). The header metadata
holds the caller's metadata plus ``walloc``: mode (``L``/``RGB``/``RGBA``), latent size and a
hash of the table indexes the encoder used (the decoder checks it, so a platform difference
in the context net is reported, never decoded into garbage).

>>> import torch
>>> model = WaLLoC(latent_channels=4, levels=2, decoder_channels=16, decoder_blocks=1).eval()
>>> blob = model.compress(torch.rand(3, 20, 30))
>>> model.decompress(blob).shape
torch.Size([3, 20, 30])
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..entropy import Container
from ..entropy import rans
from ..entropy.gaussian import FloorSTE, RoundSTE, bin_likelihood, check_family, mean_scale_tables
from ..entropy.tables import tensor_hash
from ..errors import BitstreamError, ModelMismatchError
from ..transforms import IWPT, WPT, pad_to_multiple
from .base import Codec
from .channel_context import ChannelCheckerboardModel
from .exact import exact_conv_mode, exact_dtype
from .image_modes import (alpha_section, gray_content, image_header, open_image_container, restore_image_mode,
                          split_image_modes)
from .registry import register_architecture

__all__ = ["WaLLoC", "SoftClipCompander", "HierarchicalContextModel", "ExactHierarchicalContextModel", "LatentDecoder",
           "ENTROPY_MODELS", "exact_integer_conv"]

LATENT_LIMIT = 127.0  # latents stay in int8 range (and in an 8-bit mosaic for comparisons)
_MEAN_BINS = 4  # fractional-mean bins of the coding tables
# WaLLoC's ``entropy_model`` choices: the hierarchical context model (float nets: audio, earlier
# image weights), the same in exact fixed point (batches code in one pass per stage), or
# hyperprior + channel groups + checkerboard (channel_context.py, exact integers, 9 streams).
ENTROPY_MODELS = ("hierarchical", "hierarchical_exact", "channel_checkerboard")


def _conv(nd: int, *args: Any, **kwargs: Any) -> nn.Module:
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d)[nd - 1](*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Compander
# ----------------------------------------------------------------------------------------------


class SoftClipCompander(nn.Module):
    """``v -> L·tanh(v/L)``: near-linear for small values, bounded by ``±L`` (8-bit latents).

    >>> c = SoftClipCompander(127.0)
    >>> v = torch.tensor([-500.0, 0.0, 10.0])
    >>> bool(c(v).abs().max() < 127) and bool((c.inverse(c(v))[1:] - v[1:]).abs().max() < 1e-3)
    True
    """

    def __init__(self, limit: float = LATENT_LIMIT) -> None:
        super().__init__()
        self.limit = float(limit)

    def forward(self, v: Tensor) -> Tensor:
        return self.limit * torch.tanh(v / self.limit)

    def inverse(self, y: Tensor) -> Tensor:
        # Clamp inside the open interval so the extreme integers (±127) stay finite.
        return self.limit * torch.atanh((y / self.limit).clamp(-0.9999, 0.9999))


# ----------------------------------------------------------------------------------------------
# Decoder
# ----------------------------------------------------------------------------------------------


class _ResBlock(nn.Module):
    def __init__(self, nd: int, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(nd, channels, channels, 3, padding=1)
        self.conv2 = _conv(nd, channels, channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.conv2(F.gelu(self.conv1(F.gelu(h))))


class LatentDecoder(nn.Module):
    """Latent (orthonormal units) -> wavelet packet coefficients: linear inverse + residual CNN.

    The residual's last layer starts at zero, so an untrained decoder is the linear inverse.

    >>> d = LatentDecoder(2, 12, 192, channels=32, blocks=1)
    >>> d(torch.zeros(1, 12, 4, 4)).shape
    torch.Size([1, 192, 4, 4])
    """

    def __init__(self, nd: int, latent_channels: int, out_channels: int, channels: int = 128, blocks: int = 3) -> None:
        super().__init__()
        self.linear = _conv(nd, latent_channels, out_channels, 1, bias=False)
        self.head = _conv(nd, latent_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[_ResBlock(nd, channels) for _ in range(blocks)])
        self.tail = _conv(nd, channels, out_channels, 1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, z: Tensor) -> Tensor:
        return self.linear(z) + self.tail(F.gelu(self.blocks(self.head(z))))


# ----------------------------------------------------------------------------------------------
# Entropy model
# ----------------------------------------------------------------------------------------------


def coding_groups(shape: Sequence[int], levels: int, device: torch.device | str = "cpu") -> list[tuple[Tensor, int]]:
    """The coding order of a latent of spatial ``shape``: a list of ``(mask, dilation)``.

    Group 0 is the coarse lattice (every coordinate a multiple of ``2**levels``, dilation 0).
    Then, for each finer lattice of step ``d = 2**(s-1)``, ``s = levels..1``, the new points
    (every coordinate a multiple of ``d``, not all of ``2d``) are split by how many of their
    coordinates are odd multiples of ``d``, most first (2D: quincunx centres, then edges).

    >>> [int(m.sum()) for m, _ in coding_groups((4, 4), 2)]
    [1, 1, 2, 4, 8]
    """
    nd = len(shape)
    coords = torch.meshgrid(*[torch.arange(n, device=device) for n in shape], indexing="ij")
    step = 1 << levels
    groups = [(torch.stack([c % step == 0 for c in coords]).all(0), 0)]
    for s in range(levels, 0, -1):
        d = 1 << (s - 1)
        on_lattice = torch.stack([c % d == 0 for c in coords]).all(0)
        odd = torch.stack([(c % (2 * d)) == d for c in coords]).sum(0)
        for k in range(nd, 0, -1):
            groups.append((on_lattice & (odd == k), d))
    return groups


def channel_chunks(channels: int, splits: Sequence[int] | None = None) -> tuple[list[int], list[tuple[int, int]]]:
    """The channel chunks a context model codes one after another: ``(splits, [(start, end), ...])``.

    Default: three chunks, small first (the high-variance channels of a PCA-ordered latent).

    >>> channel_chunks(12)
    ([2, 6], [(0, 2), (2, 6), (6, 12)])
    """
    if splits is None:
        splits = sorted({c for c in (channels // 6, channels // 2) if 0 < c < channels})
    bounds = [0, *splits, channels]
    if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
        raise ValueError(f"bad channel splits {list(splits)} for {channels} channels")
    return list(splits), list(zip(bounds[:-1], bounds[1:]))


def _neighbour_average(values: Tensor, known: Tensor, dilation: int) -> Tensor:
    """Mean of the known neighbours (3^nd window, dilated, centre excluded) of every element.

    A fixed interpolation whatever the group geometry or the border; 0 where no neighbour is
    known. ``values`` is ``(B, C, *S)`` (already zero where unknown), ``known`` is ``(*S)``.
    """
    nd = values.dim() - 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    kernel = torch.ones((1, 1) + (3,) * nd, dtype=values.dtype, device=values.device)
    kernel[(0, 0) + (1,) * nd] = 0
    c = values.shape[1]
    num = conv(values, kernel.expand(c, *kernel.shape[1:]), padding=dilation, dilation=dilation, groups=c)
    den = conv(known.to(values.dtype)[None, None], kernel, padding=dilation, dilation=dilation)
    return num / den.clamp_min(1.0)


class _GroupNet(nn.Module):
    """Mean and scale of one channel chunk of one coding group from what is decoded before it.

    Inputs: the latents of the earlier groups (all channels) and, at the group's own
    positions, the chunks of this group decoded before this one. The mean is the average of
    the chunk's known neighbours plus a learned correction; the net sees the known
    neighbours relative to their average (dilated convs at the group's step).
    """

    def __init__(self, nd: int, channels: int, chunk: tuple[int, int], hidden: int, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.chunk = chunk
        prior = chunk[0]
        self.conv1 = _conv(nd, channels, hidden, 3, padding=dilation, dilation=dilation)
        self.conv_prior = _conv(nd, prior, hidden, 3, padding=dilation, dilation=dilation) if prior else None
        self.conv2 = _conv(nd, hidden, hidden, 3, padding=dilation, dilation=dilation)
        width = chunk[1] - chunk[0]
        self.out = _conv(nd, hidden, 2 * width, 1)
        with torch.no_grad():  # start: mean = neighbour average, scale = softplus(1) ~ 1.3
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
            self.out.bias[width:] = 1.0

    def forward(self, values: Tensor, known: Tensor, current: Tensor | None, positions: Tensor) -> tuple[Tensor, Tensor]:
        d = self.dilation
        if d > 1:
            # Everything this stage reads or writes lies on the lattice of step d, so the
            # dilated convs equal plain convs on that sub-lattice: same result, d^nd less work.
            sub = (slice(None), slice(None)) + (slice(None, None, d),) * (values.dim() - 2)
            mean_s, scale_s = self._run(values[sub], known[sub[2:]], None if current is None else current[sub],
                                        positions[sub[2:]], 1)
            mean = values.new_zeros((values.shape[0], mean_s.shape[1], *values.shape[2:]))
            scale = torch.zeros_like(mean)
            mean[sub], scale[sub] = mean_s, scale_s
            return mean, scale
        return self._run(values, known, current, positions, 1)

    def _run(self, values: Tensor, known: Tensor, current: Tensor | None, positions: Tensor, d: int
             ) -> tuple[Tensor, Tensor]:
        nd = values.dim() - 2
        conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]

        def apply(layer: nn.Module, x: Tensor) -> Tensor:
            pad = d * (layer.kernel_size[0] // 2)
            return conv(x, layer.weight, layer.bias, padding=pad, dilation=d)

        a, b = self.chunk
        base = _neighbour_average(values, known, d)
        detail = (values - base) * known
        h = apply(self.conv1, detail)
        if self.conv_prior is not None and current is not None:
            # earlier chunks at this group's positions, relative to their neighbour average
            h = h + apply(self.conv_prior, (current - base[:, :a]) * positions)
        h = apply(self.out, F.gelu(apply(self.conv2, F.gelu(h))))
        mean, scale = h.chunk(2, dim=1)
        return base[:, a:b] + mean, scale


class HierarchicalContextModel(nn.Module):
    """Entropy model of integer latents: coarse lattice, then finer lattices in groups.

    ``forward(y_noisy, y_context)`` gives the likelihood of every element of ``y_noisy``
    under the model when the context (the already-decoded latents) is ``y_context`` (the
    rounded latent during training, as at inference). ``compress``/``decompress`` code an
    integer latent group by group with :mod:`neuralcodec.entropy.rans`.

    >>> m = HierarchicalContextModel(2, 4, levels=2, hidden=8).eval()
    >>> q = torch.randint(-5, 6, (2, 4, 6, 7)).float()
    >>> streams, digest = m.compress(q)
    >>> torch.equal(m.decompress(streams, (6, 7), digest), q)
    True
    """

    def __init__(self, nd: int, channels: int, levels: int = 3, hidden: int = 64, splits: Sequence[int] | None = None,
                 scale_min: float = 0.11, scale_max: float = 64.0, num_scales: int = 48, family: str = "gaussian"
                 ) -> None:
        super().__init__()
        self.nd, self.channels, self.levels, self.hidden = nd, channels, levels, hidden
        self.family = check_family(family)  # the distribution of a latent given its mean and scale (standard deviation)
        self.splits, self.chunks = channel_chunks(channels, splits)
        self.base_mean = nn.Parameter(torch.zeros(channels))
        self.base_log_scale = nn.Parameter(torch.full((channels,), math.log(8.0)))
        dilations = [d if d else 1 << levels for _, d in coding_groups((1,) * nd, levels)]
        # One net per (group, chunk) stage, except the first chunk of the coarse lattice.
        self.nets = nn.ModuleList([
            _GroupNet(nd, channels, chunk, hidden, d)
            for g, d in enumerate(dilations) for c, chunk in enumerate(self.chunks) if (g, c) != (0, 0)
        ])
        self.scale_min = float(scale_min)
        self.register_buffer("scale_table", torch.exp(torch.linspace(math.log(scale_min), math.log(scale_max), num_scales)))
        # Integer tables: built by update(), saved with the weights (resized on load).
        self.register_buffer("_cdfs", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_cdf_lengths", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_offsets", torch.zeros(0, dtype=torch.int32))
        self._prepared: Any = None
        # The tables depend only on the fixed scale table, so a fresh model can code at once.
        self.update()

    # -- parameters of every element ----------------------------------------------------
    def _scale(self, raw: Tensor) -> Tensor:
        return F.softplus(raw).clamp_min(self.scale_min)

    def stages(self, shape: Sequence[int], device: torch.device | str = "cpu") -> list[tuple[Tensor, Tensor, tuple[int, int]]]:
        """Coding stages of a latent of spatial ``shape``: ``(positions, known_before, chunk)``.

        Stages run over the spatial groups of :func:`coding_groups`, and within each group
        over the channel chunks; ``known_before`` marks the positions of earlier groups.
        """
        groups = coding_groups(tuple(shape), self.levels, device)
        out = []
        known = torch.zeros(tuple(shape), dtype=torch.bool, device=device)
        for mask, _ in groups:
            for chunk in self.chunks:
                out.append((mask, known.clone(), chunk))
            known |= mask
        return out

    def params(self, context: Tensor, stage: int, stages: list[tuple[Tensor, Tensor, tuple[int, int]]]
               ) -> tuple[Tensor, Tensor]:
        """Mean and scale (``(B, chunk, *S)``) of stage ``stage`` given the latent ``context``.

        Only the elements decoded before the stage are read (earlier groups; earlier chunks
        of the same group at its positions).
        """
        mask, known, (a, b) = stages[stage]
        shape = (context.shape[0], b - a, *context.shape[2:])
        if stage == 0:
            view = (1, -1) + (1,) * self.nd
            mean = self.base_mean[a:b].view(view).expand(shape)
            scale = self._scale(self.base_log_scale[a:b].exp()).view(view).expand(shape)
            return mean, scale
        current = context[:, :a] if a else None
        mean, raw = self.nets[stage - 1](context * known, known, current, mask)
        return mean, self._scale(raw)

    def mean_scale(self, y_context: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and scale of every element (``y_context``'s shape), each from its own stage's context."""
        stages = self.stages(y_context.shape[2:], y_context.device)
        mean = torch.zeros_like(y_context)
        scale = torch.ones_like(y_context)
        for i, (mask, _, (a, b)) in enumerate(stages):
            if not bool(mask.any()):
                continue
            m, s = self.params(y_context, i, stages)
            mean[:, a:b] = torch.where(mask, m, mean[:, a:b])
            scale[:, a:b] = torch.where(mask, s, scale[:, a:b])
        return mean, scale

    def forward(self, y_noisy: Tensor, y_context: Tensor) -> Tensor:
        mean, scale = self.mean_scale(y_context)
        return bin_likelihood(y_noisy, mean, scale, self.family)

    # -- integer tables ------------------------------------------------------------------
    def update(self, force: bool = True) -> None:
        """Build the integer coding tables (float64): one per (scale, mean fraction) pair."""
        centres = (torch.arange(_MEAN_BINS, dtype=torch.float64) + 0.5) / _MEAN_BINS - 0.5
        cdfs, lengths, offs = mean_scale_tables(self.scale_table, centres, family=self.family)  # the rest escapes
        self._cdfs, self._cdf_lengths, self._offsets = cdfs, lengths, offs
        self._prepared = None

    def _load_from_state_dict(self, state_dict, prefix, *args: Any, **kwargs: Any) -> None:
        for name in ("_cdfs", "_cdf_lengths", "_offsets"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key]))
        self._prepared = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _tables(self) -> Any:
        if self._cdfs.numel() == 0:
            raise RuntimeError("entropy tables are not built: call update() (or load trained weights)")
        if self._prepared is None:
            self._prepared = rans.prepare_tables(self._cdfs, self._cdf_lengths, self._offsets, device="cpu")
        return self._prepared

    def _indexes(self, mean: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        """Table index and integer centre of every element (identical at both ends)."""
        centre = torch.round(mean)
        frac = mean - centre
        fbin = torch.clamp(torch.floor((frac + 0.5) * _MEAN_BINS), 0, _MEAN_BINS - 1).long()
        table = self.scale_table.to(scale.device)
        sidx = torch.searchsorted(table, scale.contiguous()).clamp_max(len(table) - 1)
        return sidx * _MEAN_BINS + fbin, centre.long()

    # -- coding --------------------------------------------------------------------------
    @torch.no_grad()
    def compress(self, q: Tensor) -> tuple[list[list[bytes]], list[str]]:
        """Code an integer-valued ``(B, C, *S)`` latent: per item, one stream per stage.

        Returns ``(streams, digests)``: ``streams[b][stage]`` and a hash per item of the table
        indexes used (the decoder recomputes them and compares).
        """
        tables = self._tables()
        stages = self.stages(q.shape[2:], q.device)
        streams: list[list[bytes]] = [[] for _ in range(q.shape[0])]
        digests: list[list[Tensor]] = [[] for _ in range(q.shape[0])]
        for i, (mask, _, (a, b)) in enumerate(stages):
            mean, scale = self.params(q, i, stages)
            sel = lambda t: t[(slice(None), slice(None)) + (mask,)]  # noqa: E731  (B, chunk, n)
            idx, centre = self._indexes(sel(mean), sel(scale))
            sym = (sel(q[:, a:b]).long() - centre).cpu()
            idx = idx.cpu()
            blobs = rans.encode_batch(list(sym.unbind(0)), list(idx.unbind(0)), tables)
            for n in range(q.shape[0]):
                streams[n].append(blobs[n])
                digests[n].append(idx[n])
        return streams, [tensor_hash(*d) for d in digests]

    def num_stages(self, size: Sequence[int]) -> int:
        """Number of streams a latent of spatial ``size`` is coded in."""
        return len(coding_groups(tuple(size), self.levels)) * len(self.chunks)

    def _decode_inputs(self, streams: list[list[bytes]] | list[bytes], size: Sequence[int], digests: list[str] | str,
                       device: torch.device | str) -> tuple[bool, list[list[bytes]], list[str], list]:
        """Batch form of :meth:`decompress`'s arguments (one item's streams and digest allowed) and the stages,
        checking each item has one stream per stage."""
        single = isinstance(digests, str)
        if single:
            streams, digests = [streams], [digests]  # type: ignore[list-item]
        stages = self.stages(tuple(size), device)
        if any(len(s) != len(stages) for s in streams):
            raise BitstreamError(f"expected {len(stages)} latent streams per item")
        return single, streams, digests, stages  # type: ignore[return-value]

    @torch.no_grad()
    def decompress(self, streams: list[list[bytes]] | list[bytes], size: Sequence[int], digests: list[str] | str,
                   device: torch.device | str = "cpu") -> Tensor:
        """Inverse of :meth:`compress` (a single item's streams and digest are accepted too)."""
        single, streams, digests, stages = self._decode_inputs(streams, size, digests, device)
        tables = self._tables()
        q = torch.zeros((len(streams), self.channels, *size), device=device)
        used: list[list[Tensor]] = [[] for _ in streams]
        for i, (mask, _, (a, b)) in enumerate(stages):
            mean, scale = self.params(q, i, stages)
            sel = lambda t: t[(slice(None), slice(None)) + (mask,)]  # noqa: E731
            idx_i, centre = self._indexes(sel(mean), sel(scale))
            idx_i = idx_i.cpu()
            sym = rans.decode_batch([s[i] for s in streams], list(idx_i.unbind(0)), tables)
            values = torch.stack(sym).long().to(device) + centre
            if bool((values.abs() > LATENT_LIMIT).any()):
                raise BitstreamError("latent value out of range: corrupted stream")
            view = q[:, a:b]
            view[(slice(None), slice(None)) + (mask,)] = values.to(q.dtype)
            for n in range(len(streams)):
                used[n].append(idx_i[n])
        for n, d in enumerate(digests):
            if tensor_hash(*used[n]) != d:
                raise BitstreamError(
                    "the entropy model's table indexes differ from the encoder's (a platform or weights "
                    "difference in the context network); cannot decode reliably"
                )
        return q[0] if single else q


# ----------------------------------------------------------------------------------------------
# Exact (fixed-point) version of the hierarchical context model
# ----------------------------------------------------------------------------------------------

_FX_ACT = 16.0  # activations: integers at scale 1/16
_FX_WEIGHT = 256.0  # weights: integers at scale 1/256 (biases at 1/4096, the accumulator's scale)
_FX_GELU_RANGE = 128  # GELU by table on [-8, 8] (in 1/16 units); identity above, 0 below
_FX_RAW_RANGE = 16 * 96  # raw scale values by table on [-96, 96]; the scale index saturates beyond


def exact_integer_conv(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int,
                       l1: Tensor | None = None, bias_abs: float | None = None) -> Tensor:
    """``conv(x, weight) + bias`` of integer-valued tensors, computed exactly (nD, any device).

    Every partial sum of an output is at most ``sum_i L1(weight[o, i]) * max|x_i| + |bias_o|``.
    Below ``2**24`` float32 holds all of them exactly, whatever the summation order (threads,
    batch size, GEMM blocking, device), so float32 is used; below ``2**52`` float64; beyond,
    ``OverflowError``. Both paths give the same integers. cuDNN and TF32 are switched off
    (FFT/Winograd algorithms and TF32 are not exact).

    >>> x = torch.randint(-100, 100, (2, 3, 5, 5)).float()
    >>> w = torch.randint(-50, 50, (4, 3, 3, 3)).float()
    >>> torch.equal(exact_integer_conv(x, w, None, 1).double(), F.conv2d(x.double(), w.double(), padding=1))
    True

    ``l1`` (the ``(out, in)`` L1 norms of ``weight``, on the CPU) and ``bias_abs`` (``max|bias|``)
    may be given precomputed.
    """
    nd = x.dim() - 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    x_max = x.detach().abs().amax(dim=[0] + list(range(2, x.dim()))).double().cpu() if x.numel() else None
    if l1 is None:
        l1 = weight.detach().abs().double().cpu().sum(dim=tuple(range(2, weight.dim())))
    if bias_abs is None:
        bias_abs = 0.0 if bias is None else float(bias.detach().abs().max())
    bound = 0.0 if x_max is None else float((l1 * x_max[None, :]).sum(1).max())
    bound += bias_abs
    dtype = exact_dtype(bound, "fixed-point context network")
    with exact_conv_mode():
        return conv(x.to(dtype), weight.to(x.device, dtype), None if bias is None else bias.to(x.device, dtype),
                    padding=padding)


class ExactHierarchicalContextModel(HierarchicalContextModel):
    """:class:`HierarchicalContextModel` evaluated in exact integer arithmetic.

    Same parameters (a trained hierarchical model's state dict loads as is) and the same
    coding order, but the context nets run in fixed point: weights are integers at scale
    ``1/256``, activations integers at ``1/16``, every conv ``floor((conv(A, W) + B) / 256)``
    computed exactly (:func:`exact_integer_conv`), GELU and the scale-to-table map by
    precomputed integer tables, the neighbour average by integer floor division. The table
    indexes therefore do not depend on the batch, the thread count or the device, so batches
    are coded and decoded in one pass per stage (``batch_exact``). Training runs the same
    arithmetic simulated in float with straight-through rounding. The encoder still hashes
    the indexes it used and the decoder compares (a mismatch is a ``ModelMismatchError``).

    >>> m = ExactHierarchicalContextModel(2, 4, levels=2, hidden=8).eval()
    >>> q = torch.randint(-5, 6, (3, 4, 6, 7)).float()
    >>> streams, digests = m.compress(q)
    >>> torch.equal(m.decompress(streams, (6, 7), digests), q)
    True
    """

    batch_exact = True
    mean_bins = 8  # fractional-mean bins of the tables (1/8 wide: two 1/16 steps each)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        x = torch.arange(-_FX_GELU_RANGE, _FX_GELU_RANGE + 1, dtype=torch.float64) / _FX_ACT
        gelu = 0.5 * x * (1 + torch.erf(x * 2.0**-0.5))
        self.register_buffer("_gelu_lut", torch.round(gelu * _FX_ACT).float(), persistent=False)
        r = torch.arange(-_FX_RAW_RANGE, _FX_RAW_RANGE + 1, dtype=torch.float64) / _FX_ACT
        scale = F.softplus(r).clamp_min(self.scale_min)
        sidx = torch.searchsorted(self.scale_table.double(), scale).clamp_max(len(self.scale_table) - 1)
        self.register_buffer("_sidx_lut", sidx.to(torch.int64), persistent=False)
        self._int_cache: dict[int, Any] = {}

    # -- integer tables ------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self._cdfs.shape[0] != len(self.scale_table) * self.mean_bins:
            self.update()  # a float hierarchical model's weights: its tables have 4 mean bins

    def update(self, force: bool = True) -> None:
        """Coding tables: one per (scale, mean-fraction bin); the bins follow the integer means.

        A mean at 1/16 steps has fraction ``f / 16``, ``f`` in ``[-8, 7]``; bin ``j`` holds
        ``f`` in ``[2j - 8, 2j - 7]`` and its table is centred on their average.
        """
        width = int(_FX_ACT) // self.mean_bins
        centres = (torch.arange(self.mean_bins, dtype=torch.float64) * width - _FX_ACT / 2 + (width - 1) / 2) / _FX_ACT
        self._cdfs, self._cdf_lengths, self._offsets = mean_scale_tables(self.scale_table, centres, family=self.family)
        self._prepared = None

    # -- fixed-point context nets ------------------------------------------------------------
    def _gelu(self, h16: Tensor, exact: bool) -> Tensor:
        if not exact:  # training: GELU rounded to the 1/16 grid
            return RoundSTE.apply(F.gelu(h16 / _FX_ACT) * _FX_ACT)
        lut = self._gelu_lut.to(h16.device)
        idx = (h16 + _FX_GELU_RANGE).clamp_(0, 2 * _FX_GELU_RANGE).int()
        g = lut.index_select(0, idx.reshape(-1)).view(h16.shape)
        return torch.where(h16 > _FX_GELU_RANGE, h16, g)

    def _integer_layer(self, layer: nn.Module) -> tuple[Tensor, Tensor, Tensor, float]:
        """Integer weight (1/256) and bias (1/4096) of a conv, its L1 norms and max |bias|, cached
        until the parameters change (a new tensor or an in-place update)."""
        key = (layer.weight.data_ptr(), layer.weight._version, layer.bias.data_ptr(), layer.bias._version,
               layer.weight.device)
        cached = self._int_cache.get(id(layer))
        if cached is None or cached[0] != key:
            w = torch.round(layer.weight.detach() * _FX_WEIGHT)
            b = torch.round(layer.bias.detach() * (_FX_WEIGHT * _FX_ACT))
            l1 = w.abs().double().cpu().sum(dim=tuple(range(2, w.dim())))
            cached = (key, (w, b, l1, float(b.abs().max())))
            self._int_cache[id(layer)] = cached
        return cached[1]

    def _layer(self, layer: nn.Module, a16: Tensor, exact: bool) -> Tensor:
        """One conv in fixed point: integers at 1/16 in, integers at 1/16 out (accumulator 1/4096)."""
        pad = layer.kernel_size[0] // 2
        if exact:
            w, b, l1, b_abs = self._integer_layer(layer)
            acc = exact_integer_conv(a16, w, b, pad, l1, b_abs)
            return acc.div_(_FX_WEIGHT).floor_().to(a16.dtype)  # exact: a power-of-two division
        conv = (F.conv1d, F.conv2d, F.conv3d)[a16.dim() - 3]
        w = RoundSTE.apply(layer.weight * _FX_WEIGHT)
        b = RoundSTE.apply(layer.bias * (_FX_WEIGHT * _FX_ACT))
        return FloorSTE.apply(conv(a16, w, b, padding=pad) / _FX_WEIGHT)

    def _net16(self, net: nn.Module, values: Tensor, known: Tensor, current: Tensor | None, positions: Tensor,
               exact: bool) -> tuple[Tensor, Tensor]:
        """Integer mean and raw scale (both at 1/16) of one stage, on the stage's sub-lattice."""
        d = net.dilation
        sub = (slice(None), slice(None)) + (slice(None, None, d),) * (values.dim() - 2)
        v, k, p = values[sub], known[sub[2:]], positions[sub[2:]]
        cur = None if current is None else current[sub]
        nd = v.dim() - 2
        conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        kernel = torch.ones((1, 1) + (3,) * nd, dtype=v.dtype, device=v.device)
        kernel[(0, 0) + (1,) * nd] = 0
        kf = k.to(v.dtype)
        # Neighbour sums and counts are small integers: exact in float whatever the order.
        num = conv(v * kf, kernel.expand(v.shape[1], *kernel.shape[1:]), padding=1, groups=v.shape[1])
        den = conv(kf[None, None], kernel, padding=1).clamp_min(1.0)
        base16 = torch.div(num * _FX_ACT, den, rounding_mode="floor")
        a, b = net.chunk
        h = self._layer(net.conv1, (v * _FX_ACT - base16) * kf, exact)
        if net.conv_prior is not None and cur is not None:
            h = h + self._layer(net.conv_prior, (cur * _FX_ACT - base16[:, :a]) * p.to(v.dtype), exact)
        h = self._layer(net.out, self._gelu(self._layer(net.conv2, self._gelu(h, exact), exact), exact), exact)
        mean16, raw16 = h.chunk(2, dim=1)
        return base16[:, a:b] + mean16, raw16

    def params(self, context: Tensor, stage: int, stages: list[tuple[Tensor, Tensor, tuple[int, int]]]
               ) -> tuple[Tensor, Tensor]:
        """Mean and scale of a stage for the likelihood (training): the fixed-point nets simulated."""
        if stage == 0:
            return super().params(context, stage, stages)
        mask, known, (a, b) = stages[stage]
        net = self.nets[stage - 1]
        mean_s, raw_s = self._net16(net, context * known, known, context[:, :a] if a else None, mask, exact=False)
        d = net.dilation
        sub = (slice(None), slice(None)) + (slice(None, None, d),) * (context.dim() - 2)
        mean = context.new_zeros((context.shape[0], b - a, *context.shape[2:]))
        scale = torch.ones_like(mean)
        mean[sub], scale[sub] = mean_s / _FX_ACT, self._scale(raw_s / _FX_ACT)
        return mean, scale

    def coding_params(self, q: Tensor, stage: int, stages: list[tuple[Tensor, Tensor, tuple[int, int]]]
                      ) -> tuple[Tensor, Tensor]:
        """Table index and integer centre (int64, ``(B, chunk, n)``) of the elements a stage codes."""
        mask, known, (a, b) = stages[stage]
        n = int(mask.sum())
        if stage == 0:
            # Per-channel constants, computed once in float64 on the CPU.
            mean16 = torch.round(self.base_mean[a:b].detach().double().cpu() * _FX_ACT)
            scale = self._scale(self.base_log_scale[a:b].detach().double().cpu().exp())
            sidx = torch.searchsorted(self.scale_table.double().cpu(), scale).clamp_max(len(self.scale_table) - 1)
            mean16 = mean16.to(q.device).float().view(1, -1, 1).expand(q.shape[0], -1, n)
            sidx = sidx.to(q.device).view(1, -1, 1).expand(q.shape[0], -1, n)
        else:
            net = self.nets[stage - 1]
            mean_s, raw_s = self._net16(net, q * known, known, q[:, :a] if a else None, mask, exact=True)
            d = net.dilation
            sub_mask = mask[(slice(None, None, d),) * mask.dim()]
            mean16, raw16 = mean_s[..., sub_mask], raw_s[..., sub_mask]
            r = (raw16.clamp(-_FX_RAW_RANGE, _FX_RAW_RANGE) + _FX_RAW_RANGE).long()
            sidx = self._sidx_lut.to(q.device)[r]
        centre = torch.floor((mean16 + _FX_ACT / 2) / _FX_ACT)
        frac16 = mean16 - centre * _FX_ACT  # in [-8, 7]
        fbin = torch.floor((frac16 + _FX_ACT / 2) * (self.mean_bins / _FX_ACT)).long()
        return sidx * self.mean_bins + fbin, centre.long()

    # -- coding --------------------------------------------------------------------------
    @torch.no_grad()
    def compress(self, q: Tensor) -> tuple[list[list[bytes]], list[str]]:
        """Code a batch ``(B, C, *S)`` in one pass per stage (see :meth:`HierarchicalContextModel.compress`)."""
        tables = self._tables()
        q = q.float()
        if q.numel() and float(q.abs().max()) > LATENT_LIMIT:
            raise ValueError(f"latent values must be integers in [-{LATENT_LIMIT:.0f}, {LATENT_LIMIT:.0f}]")
        stages = self.stages(q.shape[2:], q.device)
        batch = q.shape[0]
        streams: list[list[bytes]] = [[] for _ in range(batch)]
        used: list[Tensor] = []
        for i, (mask, _, (a, b)) in enumerate(stages):
            idx, centre = self.coding_params(q, i, stages)
            sym = (q[:, a:b][(slice(None), slice(None), mask)].long() - centre).reshape(batch, -1).cpu()
            idx = idx.reshape(batch, -1).cpu()
            blobs = rans.encode_batch(list(sym.unbind(0)), list(idx.unbind(0)), tables)
            for n in range(batch):
                streams[n].append(blobs[n])
            used += [idx.to(torch.int32), centre.reshape(batch, -1).cpu().to(torch.int32)]
        return streams, self._digests(used, batch)

    @staticmethod
    def _digests(used: list[Tensor], batch: int) -> list[str]:
        flat = torch.cat(used, 1) if used else torch.zeros(batch, 0, dtype=torch.int32)
        return [tensor_hash(flat[n]) for n in range(batch)]

    @torch.no_grad()
    def decompress(self, streams: list[list[bytes]] | list[bytes], size: Sequence[int], digests: list[str] | str,
                   device: torch.device | str = "cpu") -> Tensor:
        """Inverse of :meth:`compress` for a whole batch: one net pass and one rANS call per stage."""
        single, streams, digests, stages = self._decode_inputs(streams, size, digests, device)
        tables = self._tables()
        batch = len(streams)
        q = torch.zeros((batch, self.channels, *size), device=device)
        used: list[Tensor] = []
        for i, (mask, _, (a, b)) in enumerate(stages):
            try:
                idx, centre = self.coding_params(q, i, stages)
            except OverflowError as e:  # only decoded garbage can leave the trained range
                raise BitstreamError(f"corrupted stream: {e}") from None
            idx_rows = idx.reshape(batch, -1).cpu()
            sym = rans.decode_batch([s[i] for s in streams], list(idx_rows.unbind(0)), tables)
            values = torch.stack(sym).to(device).long().reshape(centre.shape) + centre
            if bool((values.abs() > LATENT_LIMIT).any()):
                raise BitstreamError("latent value out of range: corrupted stream")
            view = q[:, a:b]
            view[(slice(None), slice(None), mask)] = values.to(q.dtype)
            used += [idx_rows.to(torch.int32), centre.reshape(batch, -1).cpu().to(torch.int32)]
        for n, (got, want) in enumerate(zip(self._digests(used, batch), digests)):
            if got != want:
                raise ModelMismatchError(
                    f"the entropy model's table indexes recomputed here differ from the encoder's (item {n}): "
                    "a corrupted file, or a platform or weights difference; refusing to decode into garbage"
                )
        return q[0] if single else q


# ----------------------------------------------------------------------------------------------
# The codec
# ----------------------------------------------------------------------------------------------


@register_architecture
class WaLLoC(Codec):
    """WaLLoC image codec (see the module docstring for the design).

    Args:
        in_channels: colour channels the network codes (3: RGB; gray is replicated to RGB).
        latent_channels: latent channels (12 gives 16x dimensionality reduction at J=3).
        levels: wavelet packet levels ``J`` (latent resolution is ``1/2**J``).
        wavelet: PyWavelets name of the wavelet.
        decoder_channels, decoder_blocks: width and residual blocks of the decoder CNN.
        context_levels, context_hidden: the entropy model's lattice levels and width.
        context_splits: channel chunk boundaries of the entropy model (default: C/6, C/2).
        entropy_model: ``"hierarchical"`` (:class:`HierarchicalContextModel`, the default, which
            the ``context_*`` arguments configure), ``"hierarchical_exact"`` (the same in exact
            fixed point, :class:`ExactHierarchicalContextModel`: batches code and decode in one
            pass per stage) or ``"channel_checkerboard"``
            (:class:`~neuralcodec.codecs.channel_context.ChannelCheckerboardModel`: hyperprior,
            channel groups and checkerboard in exact integer arithmetic; 9 streams, batches
            decode in one pass per stage).
        entropy_config: keyword arguments of the entropy model (``channel_checkerboard``'s, or
            ``{"family": "laplace"}`` for a hierarchical model coding with Laplace instead of
            Gaussian tables).
        init_step: initial quantization step in orthonormal wavelet units.
        dims: spatial dimensions (2 for images).

    >>> m = WaLLoC(latent_channels=4, levels=2, decoder_channels=16, decoder_blocks=1)
    >>> out = m(torch.rand(2, 3, 16, 16))
    >>> out["x_hat"].shape, out["y"].shape
    (torch.Size([2, 3, 16, 16]), torch.Size([2, 4, 4, 4]))
    """

    architecture = "walloc"
    modality = "image"
    supported_dims: tuple[int, ...] = (2,)  # the media handling of this class (a subclass codes 1D audio)

    def __init__(self, in_channels: int = 3, latent_channels: int = 12, levels: int = 3, wavelet: str = "bior4.4",
                 decoder_channels: int = 128, decoder_blocks: int = 3, context_levels: int = 3,
                 context_hidden: int = 48, context_splits: list[int] | None = None, init_step: float = 0.1,
                 dims: int = 2, entropy_model: str = "hierarchical", entropy_config: dict[str, Any] | None = None
                 ) -> None:
        super().__init__(in_channels=in_channels, latent_channels=latent_channels, levels=levels, wavelet=wavelet,
                         decoder_channels=decoder_channels, decoder_blocks=decoder_blocks,
                         context_levels=context_levels, context_hidden=context_hidden,
                         context_splits=None if context_splits is None else list(context_splits), init_step=init_step,
                         dims=dims)
        if entropy_model not in ENTROPY_MODELS:
            raise ValueError(f"unknown entropy_model {entropy_model!r}; known: {', '.join(ENTROPY_MODELS)}")
        if entropy_model != "hierarchical" or entropy_config:
            # Only written when not the default, so the cards of earlier models stay as they were.
            self.config.update(entropy_model=entropy_model, entropy_config=dict(entropy_config or {}))
        if dims not in self.supported_dims:
            raise NotImplementedError(f"{type(self).__name__} handles dims in {self.supported_dims}; the layers are nD")
        self.nd = dims
        self.levels = levels
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        coeffs = in_channels * (1 << (levels * dims))
        if latent_channels > coeffs:
            raise ValueError(f"latent_channels ({latent_channels}) exceeds the {coeffs} wavelet coefficients")
        self.wpt = WPT(levels, wavelet)
        self.iwpt = IWPT(levels, wavelet)
        self.encoder = _conv(dims, coeffs, latent_channels, 1, bias=False)
        nn.init.orthogonal_(self.encoder.weight.view(latent_channels, coeffs))
        self.log_gain = nn.Parameter(torch.full((latent_channels,), -math.log(init_step)))
        self.compander = SoftClipCompander(LATENT_LIMIT)
        self.decoder = LatentDecoder(dims, latent_channels, coeffs, decoder_channels, decoder_blocks)
        with torch.no_grad():
            self.decoder.linear.weight.copy_(self.encoder.weight.transpose(0, 1))
        if entropy_model in ("hierarchical", "hierarchical_exact"):
            cls = HierarchicalContextModel if entropy_model == "hierarchical" else ExactHierarchicalContextModel
            self.entropy = cls(dims, latent_channels, context_levels, context_hidden, context_splits,
                               **(entropy_config or {}))
        else:
            self.entropy = ChannelCheckerboardModel(dims, latent_channels, **(entropy_config or {}))

    # -- helpers -------------------------------------------------------------------------
    def _gain(self) -> Tensor:
        return self.log_gain.exp().view(1, -1, *([1] * self.nd))

    @property
    def multiple(self) -> int:
        """Spatial sizes must be a multiple of this (inputs are padded to it)."""
        return 1 << self.levels

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> Tensor:
        """Set the encoder to the PCA of the wavelet packet coefficients of ``x`` (B, C, H, W).

        The decoder's linear part becomes the exact inverse (transpose) and its residual
        stays zero. Returns the eigenvalues (variances) of all coefficient directions.
        """
        coeffs = self.wpt(x - 0.5)
        flat = rearrange(coeffs, "b c ... -> (b ...) c").double()
        cov = flat.T @ flat / flat.shape[0]
        eigvals, eigvecs = torch.linalg.eigh(cov)
        order = torch.argsort(eigvals, descending=True)
        basis = eigvecs[:, order[: self.latent_channels]].T.float()  # (latent, coeffs)
        # Sign convention: positive sum, so the first channel is a positive low-pass image.
        basis = basis * torch.where(basis.sum(1, keepdim=True) < 0, -1.0, 1.0)
        self.encoder.weight.copy_(basis.view_as(self.encoder.weight))
        self.decoder.linear.weight.copy_(basis.T.reshape_as(self.decoder.linear.weight))
        return eigvals[order]

    # -- continuous path -----------------------------------------------------------------
    def analysis(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` in [0, 1] (sizes a multiple of ``2**levels``) -> continuous latent."""
        # WPT(x - 0.5) = WPT(x) - WPT(0.5): subtract the (tiny) transform of the constant
        # instead of shifting every pixel; saves a full-resolution pass.
        const = torch.full((1, x.shape[1]) + (self.multiple,) * self.nd, 0.5, dtype=x.dtype, device=x.device)
        return self.compander((self.encoder(self.wpt(x)) - self.encoder(self.wpt(const))) * self._gain())

    def synthesis(self, y: Tensor) -> Tensor:
        """Latent (rounded or not) -> ``(B, C, H, W)`` reconstruction (not clamped)."""
        z = self.compander.inverse(y) / self._gain()
        return self.iwpt(self.decoder(z)) + 0.5

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training pass: noisy latent for the rate, rounded (straight-through) for the decoder."""
        y = self.analysis(x)
        y_round = y + (torch.round(y) - y).detach()
        if self.training:
            y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        else:
            y_noisy = torch.round(y)
        likelihoods = self.entropy(y_noisy, y_round)
        if not isinstance(likelihoods, dict):  # the hierarchical model has no side information
            likelihoods = {"y": likelihoods}
        return {"x_hat": self.synthesis(y_round), "likelihoods": likelihoods, "y": y}

    def update(self) -> None:
        """Build the entropy coder's integer tables (after training)."""
        self.entropy.update()
        self._hash_cache = None

    # -- coding path ---------------------------------------------------------------------
    def _prepare(self, x: Tensor) -> tuple[Tensor, Tensor | None, str]:
        """(B, C, H, W) in [0,1] with C in {1, 3, 4} -> RGB for the network, alpha, mode."""
        return split_image_modes(x)

    @torch.no_grad()
    def quantized_latents(self, x: Tensor) -> Tensor:
        """Integer latents (as float) of ``(B, C, H, W)`` images in [0, 1], any size.

        Images are padded (reflect) to a multiple of ``2**levels``. NaN or infinite pixels are
        a ``ValueError`` (they would otherwise become out-of-range integers).
        """
        lo, hi = (float(v) for v in torch.aminmax(x))  # NaN propagates, infinities are the bounds
        if not (math.isfinite(lo) and math.isfinite(hi)):  # one pass for both checks (isfinite().all() is 4x slower)
            raise ValueError("image contains NaN or infinite values")
        rgb, _, _ = self._prepare(x)
        rgb = rgb.float()
        if lo < 0 or hi > 1:  # out-of-range input: clamp (a copy) only when needed
            rgb = rgb.clamp(0, 1)
        padded, _ = pad_to_multiple(rgb, self.multiple)
        return torch.round(self.analysis(padded))

    @torch.no_grad()
    def compress(self, x: Tensor, metadata: dict[str, Any] | None = None) -> bytes | list[bytes]:
        """Images ``(B, C, H, W)`` or ``(C, H, W)`` in [0, 1] -> ``.ncf`` bytes (a list for a batch).

        ``C`` is 1 (gray, coded as RGB and averaged back), 3 (RGB) or 4 (RGBA: RGB through
        the network, alpha losslessly as zlib of 8-bit values). ``metadata`` goes into the
        container's header.
        """
        if self.entropy._cdfs.numel() == 0:
            raise RuntimeError("call update() before compress (trained models ship with tables)")
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 4 or min(x.shape[2:]) < 1:
            raise ValueError(f"expected (B, C, H, W) or (C, H, W) images, got shape {tuple(x.shape)}")
        x = x.to(self.device)
        rgb, alpha, mode = self._prepare(x)
        gray = gray_content(rgb)
        q = self.quantized_latents(x)
        if getattr(self.entropy, "batch_exact", False):  # exact integer nets: the batch in one pass
            streams, digests = self.entropy.compress(q)
        else:
            # Context parameters item by item: the decoder sees one item at a time, and a batched
            # CPU convolution may round differently from a single-item one.
            streams, digests = [], []
            for b in range(q.shape[0]):
                s_b, d_b = self.entropy.compress(q[b : b + 1])
                streams += s_b
                digests += d_b
        meta_base = dict(metadata or {})
        blobs = []
        for b in range(x.shape[0]):
            sections = {f"g{g}": s for g, s in enumerate(streams[b])}
            if alpha is not None:
                sections["alpha"] = alpha_section(alpha[b])
            meta = dict(meta_base)
            meta["walloc"] = image_header(mode, list(q.shape[2:]), digests[b], gray[b])
            blobs.append(
                Container(self.name, self.weights_hash(), self.modality, tuple(x.shape[1:]), meta, sections).to_bytes()
            )
        return blobs[0] if single else blobs

    def _open(self, blob: bytes) -> tuple[Container, dict[str, Any]]:
        m = self.multiple
        return open_image_container(self, blob, "walloc", "WaLLoC", lambda h, w: [-(-h // m), -(-w // m)])

    def latent_streams(self, blob: bytes) -> tuple[list[bytes], tuple[int, ...], str, Container, dict[str, Any]]:
        """Open and check a file: its latent streams (in coding order), latent size, index digest."""
        c, info = self._open(blob)
        size = tuple(info["latent"])
        names = [f"g{g}" for g in range(self.entropy.num_stages(size))]
        allowed = set(names) | ({"alpha"} if info["mode"] == "RGBA" else set())
        if set(c.sections) != allowed:
            raise BitstreamError(f"unexpected sections {sorted(c.sections)}; expected {sorted(allowed)}")
        return [c.sections[n] for n in names], size, info["digest"], c, info

    @torch.no_grad()
    def _latents_one(self, blob: bytes) -> tuple[Tensor, Container, dict[str, Any]]:
        streams, size, digest, c, info = self.latent_streams(blob)
        q = self.entropy.decompress(streams, size, digest, device=self.device)
        return q, c, info

    @torch.no_grad()
    def latents(self, blob: bytes | list[bytes]) -> Tensor | list[Tensor]:
        """Quantized latent ``(C_lat, h, w)`` of a file, by entropy decoding only (no synthesis).

        A list of files gives a list; with an exact (``batch_exact``) entropy model, files
        of the same latent size are decoded together, one pass per coding stage.
        """
        if isinstance(blob, (list, tuple)):
            if not getattr(self.entropy, "batch_exact", False):
                return [self._latents_one(b)[0] for b in blob]
            out: list[Tensor | None] = [None] * len(blob)
            groups: dict[tuple[int, ...], list[tuple[int, list[bytes], str]]] = {}
            for i, b in enumerate(blob):
                streams, size, digest, _, _ = self.latent_streams(b)
                groups.setdefault(size, []).append((i, streams, digest))
            for size, members in groups.items():
                q = self.entropy.decompress([m[1] for m in members], size, [m[2] for m in members], device=self.device)
                for (i, _, _), latent in zip(members, q):
                    out[i] = latent
            return out  # type: ignore[return-value]
        return self._latents_one(blob)[0]

    @torch.no_grad()
    def decompress(self, blob: bytes | list[bytes]) -> Tensor | list[Tensor]:
        """``.ncf`` bytes -> image ``(C, H, W)`` in [0, 1] with the encoder input's C, H, W."""
        if isinstance(blob, (list, tuple)):
            return [self.decompress(b) for b in blob]  # type: ignore[misc]
        q, c, info = self._latents_one(blob)
        chans, h, w = c.shape
        rgb = self.synthesis(q.unsqueeze(0))[0].clamp(0, 1)
        rgb = rgb[:, :h, :w]
        return restore_image_mode(rgb, info["mode"], c, gray=info.get("gray", False))
