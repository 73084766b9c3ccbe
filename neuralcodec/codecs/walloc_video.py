"""WaLLoC for video: frame-wise WaLLoC latents, coded with a temporal (conditional) entropy model.

Design (chosen by measurement, see the model card and ``benchmarks/bench_walloc_video.py``)::

    frame x_t ─ WPT (bior4.4, J=3) ─ 1×1 linear ─ × gain ─ compander ─ round ─▶ q_t  (12, H/8, W/8), |q| <= 127
    q_t (first frame of a group of pictures, GOP) ─ intra context model ─────────────▶ rANS
    q_t (other frames) ─ inter context model, conditioned on q_{t-1} (decoded) ───────▶ rANS
    q_t ─ inverse compander ─ / gain ─ CNN decoder ─ IWPT ─▶ x̂_t

* **Analysis and synthesis** are the image codec's (``walloc-image-16x``: frozen wavelet
  packet transform, linear PCA-initialised encoder, gain, soft-clip compander, residual CNN
  decoder), copied into this model's own weights so it does not change when the image model
  does. A decoded frame is exactly the image decoder's output of that frame's latent.
* **Temporal redundancy is removed losslessly in the entropy model**: the integer latent of
  every frame but a GOP's first is coded given the previous frame's integer latent (a
  predictive "P-frame" model: the mean starts at the co-located previous value, a small conv
  net corrects it and predicts the scale from the previous frame's neighbourhood and from the
  current frame's already-decoded neighbours, in the coarse-to-fine lattice order of the image
  model). Measured by ``benchmarks/bench_walloc_video.py`` on the first 64 frames of the two lab
  clips, the zeroth-order entropy (bits per latent) of the latents is 2.58 / 2.54 (bigbuckbunny /
  vtest); of one intra frame per GOP of 8 plus frame-to-frame differences 1.42 / 0.76; of 3-level
  integer Haar lifting bands over the same GOPs 1.60 / 0.79. So prediction from the previous
  frame beats a temporal lifting transform, and it keeps one latent per frame (what
  compressed-domain learning wants). The learned inter model then codes the clips at 1.05 /
  0.49 bits per latent (GOP 16), 1.7x / 3.9x less than coding every frame intra.
* **Chunked along time**: GOPs of ``gop`` frames (stored in the file) are independent, so
  :meth:`compress_stream` / :meth:`decompress_stream` hold one GOP of frames at a time and a
  decoder can start at any GOP.

``latents(blob)`` returns the integer latent ``(C, T', H', W')`` with ``T' = T`` (one latent
frame per video frame), ``H' = ceil(H/8)``, ``W' = ceil(W/8)``, ``C = 12``: 16× fewer values
than the RGB video.

Bitstream (one ``.ncf`` container, modality ``video``, shape ``(3, T, H, W)``): sections
``index`` (LEB128 byte length of every rANS stream, frame by frame, stage by stage),
``digest`` (8 bytes per GOP: a hash of the coding-table indexes the encoder used, checked by
the decoder) and ``data`` (the streams). Header metadata: ``fps`` (``"num/den"``) and
``walloc_video``: ``{"gop": G, "latent": [H', W']}``.

>>> import torch
>>> m = WaLLoCVideo(latent_channels=4, decoder_channels=8, decoder_blocks=1, context_hidden=8,
...                 temporal_hidden=8, gop=4).eval()
>>> blob = m.compress(torch.rand(3, 5, 20, 30), metadata={"fps": "25/1"})
>>> m.decompress(blob).shape, m.latents(blob).shape
(torch.Size([3, 5, 20, 30]), torch.Size([4, 5, 3, 4]))
"""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..entropy import Container, rans
from ..entropy.gaussian import gaussian_likelihood, mean_scale_tables
from ..errors import BitstreamError
from ..transforms import IWPT, WPT, pad_to_multiple
from .base import Codec
from .registry import register_architecture
from .walloc import LATENT_LIMIT, LatentDecoder, SoftClipCompander, channel_chunks

__all__ = ["WaLLoCVideo", "FrameContextModel"]

_MEAN_BINS = 4  # fractional-mean bins of the coding tables
_DIGEST_BYTES = 8
MAX_FRAMES = 1 << 24
MAX_FRAME_PIXELS = 1 << 26  # 64 MP per frame
MAX_GOP = 1024


# ----------------------------------------------------------------------------------------------
# Entropy model: intra (spatial context) and inter (spatial context + previous frame)
# ----------------------------------------------------------------------------------------------


def coding_groups(shape: Sequence[int], levels: int) -> list[tuple[Tensor, int]]:
    """Coarse-to-fine coding order of a 2D latent: ``(mask, step)`` per group.

    Group 0 is every ``2**levels``-th latent along both axes; each finer lattice of step
    ``d`` adds its quincunx centres, then its edges (as the image model does).

    >>> [int(m.sum()) for m, _ in coding_groups((4, 4), 2)]
    [1, 1, 2, 4, 8]
    """
    coords = torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij")
    step = 1 << levels
    groups = [(torch.stack([c % step == 0 for c in coords]).all(0), step)]
    for s in range(levels, 0, -1):
        d = 1 << (s - 1)
        on = torch.stack([c % d == 0 for c in coords]).all(0)
        odd = torch.stack([(c % (2 * d)) == d for c in coords]).sum(0)
        for k in range(len(shape), 0, -1):
            groups.append((on & (odd == k), d))
    return groups


def _neighbour_average(values: Tensor, known: Tensor) -> Tensor:
    """Mean of the known 8-neighbours of every element (0 where none is known)."""
    kernel = torch.ones((1, 1, 3, 3), dtype=values.dtype, device=values.device)
    kernel[0, 0, 1, 1] = 0
    c = values.shape[1]
    num = F.conv2d(values, kernel.expand(c, 1, 3, 3), padding=1, groups=c)
    den = F.conv2d(known.to(values.dtype)[None, None], kernel, padding=1)
    return num / den.clamp_min(1.0)


class _StageNet(nn.Module):
    """Mean and raw scale of one channel chunk of one coding group.

    Without a reference (intra) the mean is the average of the known spatial neighbours plus
    a learned correction (the image model's design; its weights load into this one). With a
    reference (inter) the mean is the co-located previous-frame value plus a correction, and
    the net also sees the previous frame relative to the spatial average and the residuals
    of the already-decoded neighbours against the previous frame (where the scene moved).
    """

    def __init__(self, channels: int, chunk: tuple[int, int], hidden: int, reference: bool) -> None:
        super().__init__()
        self.chunk, self.reference = chunk, reference
        prior, width = chunk[0], chunk[1] - chunk[0]
        self.conv1 = nn.Conv2d(channels * (3 if reference else 1), hidden, 3, padding=1)
        self.conv_prior = nn.Conv2d(prior, hidden, 3, padding=1) if prior else None
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, 2 * width, 1)
        with torch.no_grad():  # start: mean = neighbour average / previous value, scale ~ softplus(1)
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
            self.out.bias[width:] = 1.0

    def forward(self, values: Tensor, known: Tensor, current: Tensor | None, positions: Tensor,
                ref: Tensor | None) -> tuple[Tensor, Tensor]:
        a, b = self.chunk
        base = _neighbour_average(values, known)
        detail = (values - base) * known
        if self.reference:
            assert ref is not None
            centre = ref
            x = torch.cat([detail, ref - base, (values - ref) * known], 1)
        else:
            centre = base
            x = detail
        h = self.conv1(x)
        if self.conv_prior is not None and current is not None:
            h = h + self.conv_prior((current - centre[:, :a]) * positions)
        h = self.out(F.gelu(self.conv2(F.gelu(h))))
        mean, raw = h.chunk(2, dim=1)
        return centre[:, a:b] + mean, raw


class FrameContextModel(nn.Module):
    """Entropy model of one frame's integer latent ``(B, C, h, w)``, optionally given the previous one.

    Coarse-to-fine lattice groups (``levels``), channel chunks within a group; every stage is
    one rANS stream. Every element's mean and scale depend only on what the decoder has at
    that point (earlier stages; the reference frame, all of it). Each stage's nets run on the
    sub-lattice of the group's step, so coarse stages cost little.

    >>> m = FrameContextModel(4, levels=2, hidden=8, reference=True).eval()
    >>> ref = torch.randint(-5, 6, (1, 4, 6, 7)).float()
    >>> q = ref + torch.randint(-1, 2, ref.shape).float()
    >>> streams, idx = m.compress(q, ref)
    >>> torch.equal(m.decompress(streams, (6, 7), ref)[0], q)
    True
    """

    def __init__(self, channels: int, levels: int = 3, hidden: int = 48, splits: Sequence[int] | None = None,
                 reference: bool = False, scale_min: float = 0.11, scale_max: float = 64.0,
                 num_scales: int = 48) -> None:
        super().__init__()
        self.channels, self.levels, self.hidden, self.reference = channels, levels, hidden, reference
        self.splits, self.chunks = channel_chunks(channels, splits)
        self.base_mean = nn.Parameter(torch.zeros(channels))
        self.base_log_scale = nn.Parameter(torch.full((channels,), math.log(8.0)))
        n_groups = 1 + 2 * levels
        # Intra: the first chunk of the coarse lattice is factorized (no context at all);
        # inter: every stage has a net (the previous frame is always there).
        self.nets = nn.ModuleList([
            _StageNet(channels, chunk, hidden, reference)
            for g in range(n_groups) for c, chunk in enumerate(self.chunks) if reference or (g, c) != (0, 0)
        ])
        self.scale_min = float(scale_min)
        self.register_buffer("scale_table", torch.exp(torch.linspace(math.log(scale_min), math.log(scale_max),
                                                                     num_scales)))
        self.register_buffer("_cdfs", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_cdf_lengths", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_offsets", torch.zeros(0, dtype=torch.int32))
        self._prepared: Any = None
        self._stage_cache: dict[tuple[int, int], list[tuple[Tensor, Tensor, tuple[int, int], int]]] = {}
        self.update()

    def num_stages(self) -> int:
        return (1 + 2 * self.levels) * len(self.chunks)

    def stages(self, shape: Sequence[int]) -> list[tuple[Tensor, Tensor, tuple[int, int], int]]:
        """``(positions, known_before, chunk, step)`` of every coding stage of an ``(h, w)`` latent."""
        key = (int(shape[0]), int(shape[1]))
        if key not in self._stage_cache:
            out = []
            known = torch.zeros(key, dtype=torch.bool)
            for mask, step in coding_groups(key, self.levels):
                for chunk in self.chunks:
                    out.append((mask, known.clone(), chunk, step))
                known |= mask
            if len(self._stage_cache) > 16:
                self._stage_cache.clear()
            self._stage_cache[key] = out
        return self._stage_cache[key]

    def _scale(self, raw: Tensor) -> Tensor:
        return F.softplus(raw).clamp_min(self.scale_min)

    def params(self, context: Tensor, stage: int, stages: list, ref: Tensor | None) -> tuple[Tensor, Tensor]:
        """Mean and scale ``(B, chunk, h, w)`` of a stage (valid on the stage's lattice) from ``context``."""
        mask, known, (a, b), step = stages[stage]
        if self.reference != (ref is not None):
            raise ValueError("the inter model needs a reference frame; the intra model takes none")
        if not self.reference and stage == 0:
            shape = (context.shape[0], b - a, *context.shape[2:])
            mean = self.base_mean[a:b].view(1, -1, 1, 1).expand(shape)
            scale = self._scale(self.base_log_scale[a:b].exp()).view(1, -1, 1, 1).expand(shape)
            return mean, scale
        net = self.nets[stage if self.reference else stage - 1]
        known = known.to(context.device)
        mask = mask.to(context.device)
        # Everything this stage reads or writes lies on the lattice of its step: run there.
        sub = (slice(None), slice(None), slice(None, None, step), slice(None, None, step))
        k_s = known[sub[2:]]
        ctx = (context * known)[sub]
        cur = context[:, :a][sub] if a else None
        mean_s, raw_s = net(ctx, k_s, cur, mask[sub[2:]], None if ref is None else ref[sub])
        mean = context.new_zeros((context.shape[0], b - a, *context.shape[2:]))
        raw = torch.zeros_like(mean)
        mean[sub], raw[sub] = mean_s, raw_s
        return mean, self._scale(raw)

    def forward(self, q: Tensor, ref: Tensor | None = None) -> Tensor:
        """Likelihood of every element of the integer latent ``q`` (its exact code length is ``-log2``)."""
        stages = self.stages(q.shape[2:])
        mean = torch.zeros_like(q)
        scale = torch.ones_like(q)
        for i, (mask, _, (a, b), _) in enumerate(stages):
            if not bool(mask.any()):
                continue
            m, s = self.params(q, i, stages, ref)
            mk = mask.to(q.device)
            mean[:, a:b] = torch.where(mk, m, mean[:, a:b])
            scale[:, a:b] = torch.where(mk, s, scale[:, a:b])
        return gaussian_likelihood(q, mean, scale)

    # -- integer tables ------------------------------------------------------------------
    def update(self) -> None:
        """Build the integer coding tables (float64): one per (scale, mean fraction) pair."""
        centres = (torch.arange(_MEAN_BINS, dtype=torch.float64) + 0.5) / _MEAN_BINS - 0.5
        self._cdfs, self._cdf_lengths, self._offsets = mean_scale_tables(self.scale_table, centres)
        self._prepared = None

    def _load_from_state_dict(self, state_dict, prefix, *args: Any, **kwargs: Any) -> None:
        for name in ("_cdfs", "_cdf_lengths", "_offsets"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        self._prepared = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _tables(self) -> Any:
        if self._prepared is None:
            self._prepared = rans.prepare_tables(self._cdfs, self._cdf_lengths, self._offsets, device="cpu")
        return self._prepared

    def _indexes(self, mean: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        centre = torch.round(mean)
        fbin = torch.clamp(torch.floor((mean - centre + 0.5) * _MEAN_BINS), 0, _MEAN_BINS - 1).long()
        table = self.scale_table.to(scale.device)
        sidx = torch.searchsorted(table, scale.contiguous()).clamp_max(len(table) - 1)
        return sidx * _MEAN_BINS + fbin, centre.long()

    # -- coding (one frame: batch of one, so both ends run the same convolutions) ----------
    @torch.no_grad()
    def compress(self, q: Tensor, ref: Tensor | None = None) -> tuple[list[bytes], list[Tensor]]:
        """Code an integer ``(1, C, h, w)`` latent: one stream per stage, and the table indexes used."""
        if q.shape[0] != 1:
            raise ValueError("code one frame at a time")
        tables = self._tables()
        stages = self.stages(q.shape[2:])
        streams, used = [], []
        for i, (mask, _, (a, b), _) in enumerate(stages):
            mean, scale = self.params(q, i, stages, ref)
            mk = mask.to(q.device)
            idx, centre = self._indexes(mean[0][:, mk], scale[0][:, mk])
            sym = (q[0, a:b][:, mk].long() - centre).cpu().reshape(-1)
            idx = idx.cpu().reshape(-1)
            streams.append(rans.encode_with_indexes(sym, idx, tables))
            used.append(idx)
        return streams, used

    @torch.no_grad()
    def decompress(self, streams: Sequence[bytes], size: Sequence[int], ref: Tensor | None = None,
                   device: torch.device | str = "cpu") -> tuple[Tensor, list[Tensor]]:
        """Inverse of :meth:`compress`: ``(q (1, C, h, w), table indexes used)``."""
        tables = self._tables()
        stages = self.stages(tuple(size))
        if len(streams) != len(stages):
            raise BitstreamError(f"expected {len(stages)} latent streams per frame, got {len(streams)}")
        q = torch.zeros((1, self.channels, *size), device=device)
        used = []
        for i, (mask, _, (a, b), _) in enumerate(stages):
            mean, scale = self.params(q, i, stages, ref)
            mk = mask.to(device)
            idx, centre = self._indexes(mean[0][:, mk], scale[0][:, mk])
            idx_cpu = idx.cpu().reshape(-1)
            sym = rans.decode_with_indexes(streams[i], idx_cpu, tables)
            values = sym.long().to(device).view_as(centre) + centre
            if bool((values.abs() > LATENT_LIMIT).any()):
                raise BitstreamError("latent value out of range: corrupted stream")
            view = q[0, a:b]
            view[:, mk] = values.to(q.dtype)
            used.append(idx_cpu)
        return q, used


def _digest(indexes: list[Tensor]) -> bytes:
    h = hashlib.sha256()
    for t in indexes:
        h.update(t.to(torch.int64).contiguous().numpy().tobytes())
        h.update(b";")
    return h.digest()[:_DIGEST_BYTES]


def _varints(values: Iterable[int]) -> bytes:
    out = bytearray()
    for v in values:
        while True:
            byte = v & 0x7F
            v >>= 7
            out.append(byte | (0x80 if v else 0))
            if not v:
                break
    return bytes(out)


def _read_varints(blob: bytes, count: int) -> list[int]:
    values, pos = [], 0
    for _ in range(count):
        v = shift = 0
        while True:
            if pos >= len(blob) or shift > 35:
                raise BitstreamError("index section is truncated or malformed")
            byte = blob[pos]
            pos += 1
            v |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        values.append(v)
    if pos != len(blob):
        raise BitstreamError("index section has trailing bytes")
    return values


# ----------------------------------------------------------------------------------------------
# The codec
# ----------------------------------------------------------------------------------------------


@register_architecture
class WaLLoCVideo(Codec):
    """WaLLoC video codec (see the module docstring).

    Args:
        in_channels, latent_channels, levels, wavelet, decoder_channels, decoder_blocks,
        init_step: the frame codec (as :class:`~neuralcodec.codecs.walloc.WaLLoC`; 12 latent
            channels at ``levels=3`` give 16× fewer values).
        context_levels, context_hidden, context_splits: the intra (first frame of a GOP) model.
        temporal_levels, temporal_hidden: the inter model (frames given the previous one).
        gop: default frames per group of pictures (a GOP starts with an intra frame).

    >>> m = WaLLoCVideo(latent_channels=4, decoder_channels=8, decoder_blocks=1, context_hidden=8, temporal_hidden=8)
    >>> out = m(torch.rand(2, 3, 3, 16, 16))
    >>> out["x_hat"].shape, out["y"].shape
    (torch.Size([2, 3, 3, 16, 16]), torch.Size([2, 4, 3, 2, 2]))
    """

    architecture = "walloc-video"
    modality = "video"

    def __init__(self, in_channels: int = 3, latent_channels: int = 12, levels: int = 3, wavelet: str = "bior4.4",
                 decoder_channels: int = 128, decoder_blocks: int = 3, init_step: float = 0.1,
                 context_levels: int = 3, context_hidden: int = 48, context_splits: list[int] | None = None,
                 temporal_levels: int = 2, temporal_hidden: int = 32, gop: int = 16) -> None:
        super().__init__(in_channels=in_channels, latent_channels=latent_channels, levels=levels, wavelet=wavelet,
                         decoder_channels=decoder_channels, decoder_blocks=decoder_blocks, init_step=init_step,
                         context_levels=context_levels, context_hidden=context_hidden,
                         context_splits=None if context_splits is None else list(context_splits),
                         temporal_levels=temporal_levels, temporal_hidden=temporal_hidden, gop=gop)
        if in_channels != 3:
            raise ValueError("the video codec codes RGB frames (in_channels=3)")
        if not 1 <= gop <= MAX_GOP:
            raise ValueError(f"gop must be in [1, {MAX_GOP}]")
        self.levels, self.in_channels, self.latent_channels, self.gop = levels, in_channels, latent_channels, gop
        coeffs = in_channels * (1 << (2 * levels))
        if latent_channels > coeffs:
            raise ValueError(f"latent_channels ({latent_channels}) exceeds the {coeffs} wavelet coefficients")
        self.wpt = WPT(levels, wavelet)
        self.iwpt = IWPT(levels, wavelet)
        self.encoder = nn.Conv2d(coeffs, latent_channels, 1, bias=False)
        nn.init.orthogonal_(self.encoder.weight.view(latent_channels, coeffs))
        self.log_gain = nn.Parameter(torch.full((latent_channels,), -math.log(init_step)))
        self.compander = SoftClipCompander(LATENT_LIMIT)
        self.decoder = LatentDecoder(2, latent_channels, coeffs, decoder_channels, decoder_blocks)
        with torch.no_grad():
            self.decoder.linear.weight.copy_(self.encoder.weight.transpose(0, 1))
        self.intra = FrameContextModel(latent_channels, context_levels, context_hidden, context_splits)
        self.inter = FrameContextModel(latent_channels, temporal_levels, temporal_hidden, context_splits,
                                       reference=True)

    @property
    def multiple(self) -> int:
        """Frame sides are padded (reflect) to a multiple of this."""
        return 1 << self.levels

    def _gain(self) -> Tensor:
        return self.log_gain.exp().view(1, -1, 1, 1)

    @torch.no_grad()
    def init_from_image_model(self, image: nn.Module) -> None:
        """Copy the analysis/synthesis (and the intra entropy model when shapes agree) of a
        :class:`~neuralcodec.codecs.walloc.WaLLoC` image model into this model."""
        own = self.state_dict()
        copied = 0
        for k, v in image.state_dict().items():
            target = k.replace("entropy.", "intra.", 1) if k.startswith("entropy.") else k
            if target in own and own[target].shape == v.shape:
                own[target].copy_(v)
                copied += 1
        self.intra._prepared = None
        self._hash_cache = None
        if not all(k in image.state_dict() for k in ("encoder.weight", "log_gain")):
            raise ValueError("not a WaLLoC image model")
        return None

    # -- continuous path -----------------------------------------------------------------
    def _frames(self, x: Tensor) -> tuple[Tensor, int, int]:
        """(B, 3, T, H, W) -> (B*T, 3, H, W)."""
        b, c, t, h, w = x.shape
        return x.transpose(1, 2).reshape(b * t, c, h, w), b, t

    def analysis_frames(self, x: Tensor) -> Tensor:
        """Frames ``(N, 3, H, W)`` in [0, 1] (sides a multiple of 8) -> continuous latents ``(N, C, H/8, W/8)``."""
        const = torch.full((1, 3, self.multiple, self.multiple), 0.5, dtype=x.dtype, device=x.device)
        return self.compander((self.encoder(self.wpt(x)) - self.encoder(self.wpt(const))) * self._gain())

    def synthesis_frames(self, y: Tensor) -> Tensor:
        """Latents ``(N, C, h, w)`` -> frames ``(N, 3, 8h, 8w)`` (not clamped)."""
        return self.iwpt(self.decoder(self.compander.inverse(y) / self._gain())) + 0.5

    def analysis(self, x: Tensor) -> Tensor:
        """Video ``(B, 3, T, H, W)`` -> continuous latent ``(B, C, T, H/8, W/8)``."""
        f, b, t = self._frames(x)
        y = self.analysis_frames(f)
        return y.view(b, t, *y.shape[1:]).transpose(1, 2)

    def synthesis(self, y: Tensor) -> Tensor:
        """Latent ``(B, C, T, h, w)`` -> video ``(B, 3, T, 8h, 8w)``."""
        f, b, t = self._frames(y)
        x = self.synthesis_frames(f)
        return x.view(b, t, *x.shape[1:]).transpose(1, 2)

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training pass on ``(B, 3, T, H, W)``: reconstruction, likelihoods of the rounded latents
        (frame 0 intra, the others given the previous frame), and the continuous latent."""
        y = self.analysis(x)
        q = y + (torch.round(y) - y).detach()
        qd = torch.round(y.detach())
        lik_intra = self.intra(qd[:, :, 0])
        lik_inter = [self.inter(qd[:, :, t], qd[:, :, t - 1]) for t in range(1, qd.shape[2])]
        lik = {"intra": lik_intra}
        if lik_inter:
            lik["inter"] = torch.stack(lik_inter, 2)
        return {"x_hat": self.synthesis(q), "likelihoods": lik, "y": y}

    def update(self) -> None:
        """Rebuild the integer coding tables (after training)."""
        self.intra.update()
        self.inter.update()
        self._hash_cache = None

    # -- coding path ---------------------------------------------------------------------
    @torch.no_grad()
    def quantized_latents(self, x: Tensor) -> Tensor:
        """Integer latents (as float) ``(C, T, H', W')`` of a video ``(3, T, H, W)`` in [0, 1]
        (``(B, C, T, H', W')`` for a batch); sides padded (reflect) to a multiple of 8."""
        if x.dim() == 5:
            return torch.stack([self.quantized_latents(v) for v in x])
        if x.dim() != 4 or x.shape[0] != 3:
            raise ValueError(f"expected a (3, T, H, W) video, got shape {tuple(x.shape)}")
        frames = x.transpose(0, 1).float().clamp(0, 1)
        out = []
        for start in range(0, frames.shape[0], 8):  # bounded memory for long inputs
            padded, _ = pad_to_multiple(frames[start:start + 8].to(self.device), self.multiple)
            out.append(torch.round(self.analysis_frames(padded)))
        return torch.cat(out).transpose(0, 1)

    def _encode_frames(self, chunks: Iterable[Tensor], gop: int
                       ) -> Iterator[tuple[list[bytes], bytes | None, tuple[int, int, int]]]:
        """Yield ``(streams of a frame, GOP digest or None, (T so far, H, W))`` frame by frame."""
        ref: Tensor | None = None
        size: tuple[int, int] | None = None
        t = 0
        used: list[Tensor] = []
        for chunk in chunks:
            if chunk.dim() != 4 or chunk.shape[0] != 3:
                raise ValueError(f"expected (3, t, H, W) video chunks, got shape {tuple(chunk.shape)}")
            if chunk.shape[1] == 0:
                continue
            if size is None:
                size = (int(chunk.shape[2]), int(chunk.shape[3]))
                if min(size) < 1 or size[0] * size[1] > MAX_FRAME_PIXELS:
                    raise ValueError(f"unsupported frame size {size}")
            elif tuple(chunk.shape[2:]) != size:
                raise ValueError("every chunk must have the same frame size")
            if not bool(torch.isfinite(chunk).all()):
                raise ValueError("video contains NaN or infinite values")
            q_chunk = self.quantized_latents(chunk)
            for k in range(q_chunk.shape[1]):
                q = q_chunk[:, k][None]
                intra = t % gop == 0
                streams, idx = self.intra.compress(q) if intra else self.inter.compress(q, ref)
                used += idx
                t += 1
                done = t % gop == 0
                yield streams, (_digest(used) if done else None), (t, *size)
                if done:
                    used = []
                ref = q
        if size is None:
            raise ValueError("no video frames")
        if used:
            yield [], _digest(used), (t, *size)

    @torch.no_grad()
    def compress_stream(self, chunks: Iterable[Tensor], fps: Any, metadata: dict[str, Any] | None = None,
                        gop: int | None = None) -> bytes:
        """Code a video given as ``(3, t, H, W)`` chunks in [0, 1] (e.g. :func:`~neuralcodec.datasets.media.iter_video`).

        Holds one chunk of frames and the previous frame's latent; only the compressed
        streams grow. ``fps`` (a number, Fraction or ``"num/den"``) is stored exactly.
        """
        gop = int(gop or self.gop)
        if not 1 <= gop <= MAX_GOP:
            raise ValueError(f"gop must be in [1, {MAX_GOP}]")
        rate = _fps(fps)
        if rate is None:
            raise ValueError(f"invalid frame rate {fps!r}")
        lengths: list[int] = []
        data: list[bytes] = []
        digests: list[bytes] = []
        shape = (0, 0, 0)
        for streams, digest, shape in self._encode_frames(chunks, gop):
            for s in streams:
                lengths.append(len(s))
                data.append(s)
            if digest is not None:
                digests.append(digest)
        t, h, w = shape
        meta = dict(metadata or {})
        meta["fps"] = f"{rate.numerator}/{rate.denominator}"
        meta["frames"] = t
        m = self.multiple
        meta["walloc_video"] = {"gop": gop, "latent": [-(-h // m), -(-w // m)]}
        sections = {"index": _varints(lengths), "digest": b"".join(digests), "data": b"".join(data)}
        return Container(self.name, self.weights_hash(), self.modality, (3, t, h, w), meta, sections).to_bytes()

    @torch.no_grad()
    def compress(self, x: Tensor, metadata: dict[str, Any] | None = None, fps: Any = None,
                 gop: int | None = None) -> bytes | list[bytes]:
        """Video ``(3, T, H, W)`` (or a batch ``(B, 3, T, H, W)``) in [0, 1] -> ``.ncf`` bytes.

        The frame rate is ``fps`` or ``metadata["fps"]`` (default 25); it is stored exactly.
        """
        if x.dim() == 5:
            return [self.compress(v, metadata, fps, gop) for v in x]  # type: ignore[misc]
        if x.dim() != 4 or x.shape[0] != 3 or min(x.shape) < 1:
            raise ValueError(f"expected a (3, T, H, W) video with T, H, W >= 1, got shape {tuple(x.shape)}")
        rate = fps if fps is not None else (metadata or {}).get("fps", 25)
        g = int(gop or self.gop)
        return self.compress_stream((x[:, s:s + g] for s in range(0, x.shape[1], g)), rate, metadata, g)

    # -- decoding ------------------------------------------------------------------------
    def _open(self, blob: bytes) -> tuple[Container, dict[str, Any]]:
        c = Container.from_bytes(blob)
        self.check_origin(c)
        meta = c.metadata if isinstance(c.metadata, dict) else {}
        info = meta.get("walloc_video")
        shape = tuple(c.shape)
        if c.modality != "video" or not isinstance(info, dict) or len(shape) != 4 or shape[0] != 3:
            raise BitstreamError("not a WaLLoC video file (missing or malformed 'walloc_video' metadata)")
        _, t, h, w = shape
        gop, latent = info.get("gop"), info.get("latent")
        if not (isinstance(gop, int) and not isinstance(gop, bool) and 1 <= gop <= MAX_GOP):
            raise BitstreamError(f"invalid GOP size {gop!r}")
        if not (1 <= t <= MAX_FRAMES and h * w <= MAX_FRAME_PIXELS):
            raise BitstreamError(f"video of {t} frames of {h}x{w} is larger than this decoder accepts")
        m = self.multiple
        if latent != [-(-h // m), -(-w // m)]:
            raise BitstreamError(f"latent size {latent!r} does not match the frame size {h}x{w}")
        if _fps(meta.get("fps")) is None:
            raise BitstreamError(f"invalid frame rate {meta.get('fps')!r}")
        if set(c.sections) != {"index", "digest", "data"}:
            raise BitstreamError(f"unexpected sections {sorted(c.sections)}")
        gops = -(-t // gop)
        if len(c.sections["digest"]) != _DIGEST_BYTES * gops:
            raise BitstreamError("digest section has the wrong size")
        intra_n = gops
        count = intra_n * self.intra.num_stages() + (t - intra_n) * self.inter.num_stages()
        if len(c.sections["index"]) > 5 * count:
            raise BitstreamError("index section is too long")
        lengths = _read_varints(c.sections["index"], count)
        if sum(lengths) != len(c.sections["data"]):
            raise BitstreamError("stream lengths do not add up to the data section")
        return c, dict(info, lengths=lengths, frames=t, size=(h, w), gops=gops)

    def _decode_latents(self, blob: bytes) -> Iterator[tuple[int, Tensor, Container]]:
        """Yield ``(frame index, q (1, C, h, w), container)`` by entropy decoding, frame by frame."""
        c, info = self._open(blob)
        data, lengths = c.sections["data"], info["lengths"]
        digests = c.sections["digest"]
        size = tuple(info["latent"])
        gop, frames = info["gop"], info["frames"]
        pos = li = 0
        ref: Tensor | None = None
        used: list[Tensor] = []
        for t in range(frames):
            intra = t % gop == 0
            model = self.intra if intra else self.inter
            streams = []
            for _ in range(model.num_stages()):
                streams.append(data[pos:pos + lengths[li]])
                pos += lengths[li]
                li += 1
            q, idx = model.decompress(streams, size, None if intra else ref, device=self.device)
            used += idx
            if (t + 1) % gop == 0 or t + 1 == frames:
                g = t // gop
                if _digest(used) != digests[g * _DIGEST_BYTES:(g + 1) * _DIGEST_BYTES]:
                    raise BitstreamError(
                        "the entropy model's table indexes differ from the encoder's (corrupted file, or a "
                        "platform or weights difference in the context network); cannot decode reliably")
                used = []
            ref = q
            yield t, q, c

    @torch.no_grad()
    def latents(self, blob: bytes | list[bytes]) -> Tensor | list[Tensor]:
        """Integer latent ``(C, T, H/8, W/8)`` of a file (one latent frame per video frame), by
        entropy decoding only (no synthesis)."""
        if isinstance(blob, (list, tuple)):
            return [self.latents(b) for b in blob]  # type: ignore[misc]
        return torch.stack([q[0] for _, q, _ in self._decode_latents(blob)], 1)

    @torch.no_grad()
    def decompress_stream(self, blob: bytes, frames_per_chunk: int | None = None) -> Iterator[Tensor]:
        """Decode a file piece by piece: yields ``(3, t, H, W)`` chunks (a GOP each by default)
        that concatenate to the video. Holds one chunk of frames at a time."""
        c, info = self._open(blob)
        h, w = info["size"]
        n = int(frames_per_chunk or info["gop"])
        batch: list[Tensor] = []
        for t, q, _ in self._decode_latents(blob):
            batch.append(q)
            if len(batch) == n or t + 1 == info["frames"]:
                # a few frames per decoder pass: bounded activation memory for large frames
                x = torch.cat([self.synthesis_frames(torch.cat(batch[i:i + 4])).clamp(0, 1)[:, :, :h, :w]
                               for i in range(0, len(batch), 4)])
                batch = []
                yield x.transpose(0, 1).contiguous()

    @torch.no_grad()
    def decompress(self, blob: bytes | list[bytes]) -> Tensor | list[Tensor]:
        """``.ncf`` bytes -> video ``(3, T, H, W)`` in [0, 1] with the input's frame count and size."""
        if isinstance(blob, (list, tuple)):
            return [self.decompress(b) for b in blob]  # type: ignore[misc]
        return torch.cat(list(self.decompress_stream(blob)), 1)


def _fps(value: Any) -> Fraction | None:
    """A positive frame rate from a number, Fraction or ``"num/den"`` string; None if invalid."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        rate = Fraction(value).limit_denominator(1001) if isinstance(value, float) else Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not 0 < rate <= 10_000 or rate.denominator > 1_000_000:
        return None
    return rate
