"""Entropy model of integer latents: hyperprior, channel groups and a checkerboard, in exact integers.

:class:`ChannelCheckerboardModel` codes a ``(B, C, h, w)`` integer latent (WaLLoC's 8-bit
latents) in a few tensor passes:

1. side information ``z = h_a(q)`` at 1/4 of the latent resolution, coded with a factorized
   prior (:class:`~neuralcodec.entropy.EntropyBottleneck`);
2. hyper features ``h_s(ẑ)`` at the latent resolution;
3. the channels in a few uneven groups (default ``[0], [1, 2], [3..5], [6..11]``: the
   high-variance channels first, as in He et al. 2022, "ELIC"), each group in two halves of
   a checkerboard (He et al. 2021): the *anchors* from the hyper features and the earlier
   groups, then the other half also from the anchors around it. Every stage predicts a mean
   and a scale per latent (a discretized Gaussian; the mean is a linear prediction plus the
   net's correction), so a 2D latent is coded in
   ``1 + 2 * groups`` rANS streams (9 by default) instead of one stream per position.

**Exact arithmetic, so batches decode like single items on any machine.** Every network
that the decoder re-runs (``h_s`` and the stage nets; ``h_a`` too, so batched and single
encodes give the same bytes) is a fixed-point integer network (Ballé et al. 2019):
weights are integers at scale ``2**-8``, activations integers at ``2**-4`` clamped to
``[0, 255]``, every layer ``floor((conv(A, W) + B) / 2**8)``. A convolution of integers is
exact in floating point whenever every partial sum stays below the format's exact-integer
limit, whatever the summation order (threads, batch size, GEMM blocking, device).
:class:`FixedPointNet` bounds each layer *before* computing it, from the weights' L1 norms
and the inputs' actual maxima: below ``2**24`` it runs in float32 (fast), else in float64,
else it refuses; the two paths give identical integers. Table indexes and centres then come
from integer comparisons. The encoder still stores a hash of the indexes and centres it
used, and the decoder compares (a mismatch is a :class:`~neuralcodec.ModelMismatchError`,
never garbage).

>>> import torch
>>> m = ChannelCheckerboardModel(channels=4, groups=[1, 2], hidden=8, hyper_channels=8, z_channels=2,
...                              features=4).eval()
>>> m.update()
>>> q = torch.randint(-5, 6, (2, 4, 6, 7)).float()
>>> streams, digests = m.compress(q)
>>> torch.equal(m.decompress(streams, (6, 7), digests), q)
True
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..entropy import rans
from ..entropy.models import EntropyBottleneck
from ..entropy.gaussian import FloorSTE, RoundSTE, gaussian_likelihood, mean_scale_tables
from ..entropy.tables import tensor_hash
from ..errors import BitstreamError, ModelMismatchError
from .exact import F32_EXACT, exact_conv_mode, exact_dtype

__all__ = ["ChannelCheckerboardModel", "FixedPointNet", "checkerboard"]

ACT_BITS = 4  # activations: integers at scale 2**-4
WEIGHT_BITS = 8  # weights: integers at scale 2**-8 (biases at 2**-12, the accumulator's scale)
ACT_MAX = 255  # hidden activations are clamped to [0, 255] (real [0, 15.94]): a bounded ReLU
MEAN_BINS = 8  # fractional-mean bins of the coding tables (a bin is 1/8 wide)
SCALE_STEP = 2  # the scale tables are exp(k * SCALE_STEP / 2**ACT_BITS) apart: 13 % steps
LATENT_LIMIT = 127


def checkerboard(size: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """Anchor positions of a 2D latent of ``size``: ``(i + j)`` even.

    >>> checkerboard((2, 3)).int().tolist()
    [[1, 0, 1], [0, 1, 0]]
    """
    h, w = size
    i = torch.arange(h, device=device)[:, None]
    j = torch.arange(w, device=device)[None, :]
    return (i + j) % 2 == 0


# ----------------------------------------------------------------------------------------------
# Fixed-point networks
# ----------------------------------------------------------------------------------------------


class FixedPointNet(nn.Module):
    """A stack of 2D (transposed) convolutions in fixed point, exact on integers.

    ``layers``: ``(kind, in, out, kernel, stride)`` with kind ``"conv"`` or ``"deconv"``
    (stride-2 upsampling). A bounded ReLU (``[0, 255]`` in integer units) follows every layer
    but the last (and the last too with ``final_relu``). :meth:`forward` simulates the
    arithmetic in float with straight-through rounding (training); :meth:`integer_forward`
    computes it exactly on integer-valued tensors (coding): values at scale ``2**-4``.

    >>> net = FixedPointNet([("conv", 3, 8, 3, 1), ("conv", 8, 2, 1, 1)])
    >>> x = torch.randint(-20, 20, (1, 3, 5, 5)).float()
    >>> exact = net.integer_forward(x * 16) / 16
    >>> bool((exact - net(x)).abs().max() < 0.07)
    True
    """

    def __init__(self, layers: Sequence[tuple[str, int, int, int, int]], final_relu: bool = False) -> None:
        super().__init__()
        self.kinds = [kind for kind, *_ in layers]
        convs = []
        for kind, cin, cout, k, stride in layers:
            if kind == "deconv":
                convs.append(nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2,
                                                output_padding=stride - 1))
            elif kind == "conv":
                convs.append(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2))
            else:
                raise ValueError(f"layer kind must be 'conv' or 'deconv', got {kind!r}")
        self.convs = nn.ModuleList(convs)
        self.final_relu = final_relu
        self._int_cache: tuple[Any, list[tuple[Tensor, Tensor, Tensor, Tensor]]] | None = None

    @staticmethod
    def _op(conv: nn.Module, a: Tensor, w: Tensor, b: Tensor) -> Tensor:
        if isinstance(conv, nn.ConvTranspose2d):
            return F.conv_transpose2d(a, w, b, conv.stride, conv.padding, conv.output_padding)
        return F.conv2d(a, w, b, conv.stride, conv.padding)

    def forward(self, x: Tensor) -> Tensor:
        """Training path: the fixed-point arithmetic simulated in float (straight-through)."""
        sa, sw = 2.0**ACT_BITS, 2.0**WEIGHT_BITS
        rnd, flo = RoundSTE.apply, FloorSTE.apply
        a = rnd(x * sa) / sa
        top = ACT_MAX / sa
        for i, conv in enumerate(self.convs):
            w = rnd(conv.weight * sw) / sw
            b = rnd(conv.bias * (sa * sw)) / (sa * sw)
            a = flo(self._op(conv, a, w, b) * sa) / sa
            if i < len(self.convs) - 1 or self.final_relu:
                a = a.clamp(0.0, top)
        return a

    def integer_weights(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """``(weight, bias, l1, |bias|)`` of every layer: integer-valued float64 weights (scale
        ``2**-8``) and biases (``2**-12``), and (on the CPU) the ``(out, in)`` L1 norms of the
        weights and the absolute biases."""
        key = tuple((p.data_ptr(), p._version, p.device) for p in self.parameters())
        if self._int_cache is not None and self._int_cache[0] == key:
            return self._int_cache[1]
        sw, sb = 2.0**WEIGHT_BITS, 2.0 ** (WEIGHT_BITS + ACT_BITS)
        out = []
        for conv in self.convs:
            w = torch.round(conv.weight.detach().double() * sw)
            b = torch.round(conv.bias.detach().double() * sb)
            l1 = w.abs().sum((2, 3))
            l1 = (l1.T if isinstance(conv, nn.ConvTranspose2d) else l1).contiguous().cpu()
            out.append((w, b, l1, b.abs().cpu()))
        self._int_cache = (key, out)
        return out

    @torch.no_grad()
    def integer_forward(self, a: Tensor, input_max: Sequence[float] | None = None) -> Tensor:
        """Exact evaluation on integer-valued float tensors (values at scale ``2**-4``).

        ``input_max``: a known bound on ``|a|`` per input channel (else measured). Returns
        integer-valued float32. Raises ``OverflowError`` when an input is so large that even
        float64 could not sum it exactly (only a corrupted input does that).
        """
        shift = 2.0**WEIGHT_BITS
        a = a.float()
        for i, (conv, (w, b, l1, b_abs)) in enumerate(zip(self.convs, self.integer_weights())):
            # Bound on every partial sum of every output: sum_i L1[o, i] * max|A_i| + |B_o|.
            if i > 0:  # hidden activations are clamped to [0, ACT_MAX]
                a_max = torch.full((l1.shape[1],), float(ACT_MAX), dtype=torch.float64)
            elif input_max is not None:
                a_max = torch.as_tensor(input_max, dtype=torch.float64).reshape(-1).expand(l1.shape[1])
            elif a.numel():
                a_max = a.abs().amax(dim=(0, 2, 3)).double().cpu()
            else:
                a_max = torch.zeros(l1.shape[1], dtype=torch.float64)
            bound = float(((l1 * a_max[None, :]).sum(1) + b_abs).max())
            if bound >= F32_EXACT and i == 0 and input_max is not None and a.numel():
                # The a-priori bound is too loose for float32: try the inputs' actual maxima.
                a_max = a.abs().amax(dim=(0, 2, 3)).double().cpu()
                bound = float(((l1 * a_max[None, :]).sum(1) + b_abs).max())
            dtype = exact_dtype(bound, "fixed-point network")
            with exact_conv_mode():
                acc = self._op(conv, a.to(dtype), w.to(a.device, dtype), b.to(a.device, dtype))
            a = torch.floor(acc / shift)
            if i < len(self.convs) - 1 or self.final_relu:
                a = a.clamp(0.0, float(ACT_MAX))
            if dtype is torch.float64:
                if a.numel() and float(a.abs().max()) >= F32_EXACT:
                    raise OverflowError("fixed-point network output out of range")
                a = a.float()
        return a


# ----------------------------------------------------------------------------------------------
# The entropy model
# ----------------------------------------------------------------------------------------------


class ChannelCheckerboardModel(nn.Module):
    """Hyperprior + uneven channel groups + checkerboard entropy model of integer 2D latents.

    Args:
        nd: spatial dimensions (only 2: the checkerboard is 2D).
        channels: latent channels.
        groups: channel boundaries of the groups (default ``[1, 3, 6]`` for 12 channels:
            groups of 1, 2, 3 and 6 channels).
        hidden: width of the stage nets (a 3×3 conv, a ``stage_kernel2`` conv, a 1×1 output).
        hyper_channels, z_channels: width of ``h_a``/``h_s`` and channels of ``z``.
        features: channels of the hyper features the stages read.
        scale_min, scale_max: range of the coding scales.

    ``forward(y_noisy, y_context)`` returns ``{"y": likelihoods of y_noisy, "z": likelihoods
    of the side information}`` (training); ``compress``/``decompress`` code a batch
    (see the module docstring).
    """

    batch_exact = True  # batched coding equals item-by-item coding, bit for bit

    def __init__(self, nd: int = 2, channels: int = 12, groups: Sequence[int] | None = None, hidden: int = 48,
                 hyper_channels: int = 32, z_channels: int = 12, features: int = 24, stage_kernel2: int = 1,
                 scale_min: float = 0.11, scale_max: float = 64.0) -> None:
        super().__init__()
        if nd != 2:
            raise ValueError("ChannelCheckerboardModel codes 2D latents (nd=2)")
        if groups is None:
            groups = [g for g in (1, 3, 6) if g < channels]
        groups = [int(g) for g in groups]
        bounds = [0, *groups, channels]
        if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
            raise ValueError(f"bad channel groups {list(groups)} for {channels} channels")
        # Every constructor argument, so a model card pins them (not the defaults of a later version).
        self.config = {"groups": list(groups) if groups is not None else None, "hidden": hidden,
                       "hyper_channels": hyper_channels, "z_channels": z_channels, "features": features,
                       "stage_kernel2": stage_kernel2, "scale_min": scale_min, "scale_max": scale_max}
        if stage_kernel2 not in (1, 3):
            raise ValueError("stage_kernel2 must be 1 or 3")
        self.nd, self.channels, self.groups, self.hidden = nd, channels, list(groups), hidden
        self.chunks = list(zip(bounds[:-1], bounds[1:]))
        self.z_channels, self.features = z_channels, features
        hc = hyper_channels
        self.h_a = FixedPointNet([("conv", channels, hc, 3, 1), ("conv", hc, hc, 5, 2), ("conv", hc, z_channels, 5, 2)])
        self.h_s = FixedPointNet([("deconv", z_channels, hc, 5, 2), ("deconv", hc, hc, 5, 2),
                                  ("conv", hc, features, 3, 1)], final_relu=True)
        self.z_model = EntropyBottleneck(z_channels)
        # One net per (group, half): input = hyper features, earlier groups, (anchors of this group).
        nets = []
        for a, b in self.chunks:
            for anchor in (True, False):
                cin = features + a + (0 if anchor else b - a)
                nets.append(FixedPointNet([("conv", cin, hidden, 3, 1), ("conv", hidden, hidden, stage_kernel2, 1),
                                           ("conv", hidden, 2 * (b - a), 1, 1)]))
        self.nets = nn.ModuleList(nets)
        # A linear path for the means (one 3×3 conv, no activation): bounded, coarse hidden
        # activations cannot carry a precise mean of values up to ±127, a linear map can.
        self.linear = nn.ModuleList([
            FixedPointNet([("conv", net.convs[0].in_channels, net.convs[-1].out_channels // 2, 3, 1)])
            for net in nets
        ])
        with torch.no_grad():
            for lin in self.linear:
                lin.convs[0].weight.zero_()
                lin.convs[0].bias.zero_()
        with torch.no_grad():  # start near: mean 0, scale e^1.5
            for net in self.nets:
                last = net.convs[-1]
                last.weight.mul_(0.1)
                last.bias.zero_()
                last.bias[last.out_channels // 2:] = 1.5
        # Scale grid: exp((r0 + k * SCALE_STEP) / 16), k = 0..n-1, r0 = floor(16 log scale_min).
        self.scale_min, self.scale_max = float(scale_min), float(scale_max)
        self.r0 = math.floor(math.log(scale_min) * 2**ACT_BITS)
        self.num_scales = math.ceil((math.log(scale_max) * 2**ACT_BITS - self.r0) / SCALE_STEP) + 1
        # The Gaussian tables depend only on these constants: built here, in float64, not saved.
        self.register_buffer("_cdfs", torch.zeros(0, dtype=torch.int32), persistent=False)
        self.register_buffer("_cdf_lengths", torch.zeros(0, dtype=torch.int32), persistent=False)
        self.register_buffer("_offsets", torch.zeros(0, dtype=torch.int32), persistent=False)
        self._prepared: dict[str, Any] = {}
        self._build_gaussian_tables()

    # -- shapes --------------------------------------------------------------------------
    def num_stages(self, size: Sequence[int]) -> int:
        """Number of streams a latent is coded in: ``z``, then two per channel group."""
        return 1 + 2 * len(self.chunks)

    def _z_size(self, size: Sequence[int]) -> tuple[int, int]:
        return (-(-size[0] // 4), -(-size[1] // 4))

    def _pad4(self, q: Tensor) -> Tensor:
        h, w = q.shape[2:]
        ph, pw = (-h) % 4, (-w) % 4
        return F.pad(q, (0, pw, 0, ph), mode="replicate") if (ph or pw) else q

    # -- training ------------------------------------------------------------------------
    def _scale(self, raw: Tensor) -> Tensor:
        lo = self.r0 / 2**ACT_BITS
        hi = (self.r0 + (self.num_scales - 1) * SCALE_STEP) / 2**ACT_BITS
        return torch.exp(raw.clamp(lo, hi))

    def _stage_input(self, feats: Tensor, q: Tensor, stage: int, anchors: Tensor) -> Tensor:
        a, b = self.chunks[stage // 2]
        parts = [feats, q[:, :a]]
        if stage % 2:  # second half: this group's anchors (zero elsewhere)
            parts.append(q[:, a:b] * anchors)
        return torch.cat(parts, 1)

    def forward(self, y_noisy: Tensor, y_context: Tensor) -> dict[str, Tensor]:
        """Likelihoods of ``y_noisy`` (context: the rounded latent ``y_context``) and of ``z``."""
        h, w = y_context.shape[2:]
        z = self.h_a(self._pad4(y_context))
        z_hat, z_lik = self.z_model(z)
        feats = self.h_s(z_hat)[:, :, :h, :w]
        anchors = checkerboard((h, w), y_context.device)
        mean = torch.zeros_like(y_noisy)
        raw = torch.zeros_like(y_noisy)
        for s, net in enumerate(self.nets):
            a, b = self.chunks[s // 2]
            x = self._stage_input(feats, y_context, s, anchors)
            out = net(x)
            where = anchors if s % 2 == 0 else ~anchors
            m, r = out.chunk(2, dim=1)
            m = m + self.linear[s](x)
            mean[:, a:b] = torch.where(where, m, mean[:, a:b])
            raw[:, a:b] = torch.where(where, r, raw[:, a:b])
        return {"y": gaussian_likelihood(y_noisy, mean, self._scale(raw)), "z": z_lik}

    def aux_loss(self) -> Tensor:
        """The side-information prior's quantile loss (CompressAI's ``aux_loss``)."""
        return self.z_model.loss()

    # -- integer tables ------------------------------------------------------------------
    def _build_gaussian_tables(self) -> None:
        k = torch.arange(self.num_scales, dtype=torch.float64)
        scales = torch.exp((self.r0 + k * SCALE_STEP) / 2**ACT_BITS)
        # Centre of the fractional means of bin j: fractions f in {2j-8, 2j-7} / 16.
        step = 2**ACT_BITS // MEAN_BINS
        centres = (torch.arange(MEAN_BINS, dtype=torch.float64) * step - 2 ** (ACT_BITS - 1) + (step - 1) / 2) / 2**ACT_BITS
        self._cdfs, self._cdf_lengths, self._offsets = mean_scale_tables(scales, centres)  # +-6.5 sigma
        self._prepared = {}

    def update(self, force: bool = True) -> None:
        """Build the side-information prior's integer tables (after training)."""
        self.z_model.update(force=force)
        self._prepared = {}

    def _tables(self, device: torch.device) -> Any:
        key = str(device)
        if key not in self._prepared:
            self._prepared[key] = rans.prepare_tables(self._cdfs, self._cdf_lengths, self._offsets, device=device)
        return self._prepared[key]

    # -- exact coding parameters -----------------------------------------------------------
    def hyper_features(self, z_hat: Tensor, size: Sequence[int]) -> Tensor:
        """Integer hyper features (scale ``2**-4``) at the latent ``size`` from the decoded ``ẑ``."""
        ints = self.h_s.integer_forward(torch.round(z_hat.float() * 2**ACT_BITS))
        return ints[:, :, : size[0], : size[1]]

    def stage_params(self, feats: Tensor, q: Tensor, stage: int, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """Integer mean and raw log-scale (both at scale ``2**-4``) of stage ``stage``, every position."""
        x = self._stage_input(feats, q * 2**ACT_BITS, stage, anchors)
        # Known input bounds (features <= ACT_MAX, |latents| <= 127): no pass over the data.
        limit = [float(ACT_MAX)] * self.features + [float(LATENT_LIMIT * 2**ACT_BITS)] * (x.shape[1] - self.features)
        mean, raw = self.nets[stage].integer_forward(x, limit).chunk(2, dim=1)
        return mean + self.linear[stage].integer_forward(x, limit), raw

    def _indexes(self, mean: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        """Table index and integer centre of every element, by integer arithmetic only."""
        unit = 2**ACT_BITS
        centre = torch.floor((mean + unit // 2) / unit)
        frac = mean - centre * unit  # in [-8, 7]
        mbin = torch.floor((frac + unit // 2) / (unit // MEAN_BINS))
        sidx = torch.floor((raw - self.r0 + SCALE_STEP // 2) / SCALE_STEP).clamp(0, self.num_scales - 1)
        return (sidx * MEAN_BINS + mbin).to(torch.int32), centre.to(torch.int32)

    # -- coding --------------------------------------------------------------------------
    @torch.no_grad()
    def compress(self, q: Tensor) -> tuple[list[list[bytes]], list[str]]:
        """Code an integer-valued ``(B, C, h, w)`` latent: per item, ``1 + 2 * groups`` streams.

        Returns ``(streams, digests)``: ``streams[b][s]`` and per item a hash of the table
        indexes and centres used (the decoder recomputes and compares them).
        """
        if self.z_model._quantized_cdf.numel() == 0:
            raise RuntimeError("call update() before compress (trained models ship with tables)")
        q = q.float()
        size = tuple(q.shape[2:])
        batch = q.shape[0]
        if q.numel() and float(q.abs().max()) > LATENT_LIMIT:
            raise ValueError(f"latent values must be integers in [-{LATENT_LIMIT}, {LATENT_LIMIT}]")
        z = self.h_a.integer_forward(self._pad4(q) * 2**ACT_BITS, [float(LATENT_LIMIT * 2**ACT_BITS)]) / 2**ACT_BITS
        z_sym = self.z_model.symbols(z)
        streams: list[list[bytes]] = [[s] for s in self.z_model._encode_batch(
            z_sym, self.z_model.build_indexes(z_sym.shape, z_sym.device))]
        feats = self.hyper_features(self.z_model.dequantize_symbols(z_sym), size)
        anchors = checkerboard(size, q.device)
        tables = self._tables(q.device)
        used_idx, used_centre = [], []
        for s in range(len(self.nets)):
            a, b = self.chunks[s // 2]
            where = anchors if s % 2 == 0 else ~anchors
            mean, raw = self.stage_params(feats, q, s, anchors)
            idx, centre = self._indexes(mean[..., where], raw[..., where])
            sym = q[:, a:b][..., where].to(torch.int32) - centre
            blobs = rans.encode_batch(list(sym.reshape(batch, -1).unbind(0)), list(idx.reshape(batch, -1).unbind(0)),
                                      tables)
            for n in range(batch):
                streams[n].append(blobs[n])
            used_idx.append(idx.reshape(batch, -1))
            used_centre.append(centre.reshape(batch, -1))
        return streams, self._digests(used_idx, used_centre)

    @staticmethod
    def _digests(used_idx: list[Tensor], used_centre: list[Tensor]) -> list[str]:
        idx = torch.cat(used_idx, 1).cpu()
        centre = torch.cat(used_centre, 1).cpu()
        return [tensor_hash(idx[n], centre[n]) for n in range(idx.shape[0])]

    @torch.no_grad()
    def decompress(self, streams: list[list[bytes]] | list[bytes], size: Sequence[int], digests: list[str] | str,
                   device: torch.device | str = "cpu") -> Tensor:
        """Inverse of :meth:`compress`, for a whole batch at once (or a single item's streams).

        Each stage is one pass of its net over the batch and one batched rANS call over the
        streams of all items.
        """
        single = isinstance(digests, str)
        if single:
            streams, digests = [streams], [digests]  # type: ignore[list-item]
        device = torch.device(device)
        size = tuple(int(s) for s in size)
        n_streams = self.num_stages(size)
        if any(len(s) != n_streams for s in streams):
            raise BitstreamError(f"expected {n_streams} latent streams per item")
        batch = len(streams)
        z_shape = (batch, self.z_channels, *self._z_size(size))
        z_sym = self.z_model._decode_batch([s[0] for s in streams], self.z_model.build_indexes(z_shape, device))
        try:
            feats = self.hyper_features(self.z_model.dequantize_symbols(z_sym.to(device)), size)
        except OverflowError as e:
            raise BitstreamError(f"corrupted side information: {e}") from None
        q = torch.zeros((batch, self.channels, *size), device=device)
        anchors = checkerboard(size, device)
        tables = self._tables(device)
        used_idx, used_centre = [], []
        for s in range(len(self.nets)):
            a, b = self.chunks[s // 2]
            where = anchors if s % 2 == 0 else ~anchors
            mean, raw = self.stage_params(feats, q, s, anchors)
            idx, centre = self._indexes(mean[..., where], raw[..., where])
            idx_rows = idx.reshape(batch, -1)
            sym = rans.decode_batch([st[s + 1] for st in streams], list(idx_rows.unbind(0)), tables)
            values = torch.stack(sym).to(device).reshape(centre.shape) + centre
            if bool((values.abs() > LATENT_LIMIT).any()):
                raise BitstreamError("latent value out of range: corrupted stream")
            view = q[:, a:b]
            view[..., where] = values.to(q.dtype)
            used_idx.append(idx_rows)
            used_centre.append(centre.reshape(batch, -1))
        for n, (got, want) in enumerate(zip(self._digests(used_idx, used_centre), digests)):
            if got != want:
                raise ModelMismatchError(
                    "the entropy model's table indexes recomputed here differ from the encoder's (item "
                    f"{n}); refusing to decode into garbage"
                )
        return q[0] if single else q
