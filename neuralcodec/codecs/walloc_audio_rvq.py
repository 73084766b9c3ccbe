"""WaLLoC-audio RVQ: a token codec for stereo music on the frozen WaLLoC-audio analysis.

Pipeline (one stereo pair; mono is coded as a pair of identical channels, more channels as
consecutive pairs, as in :class:`~neuralcodec.codecs.walloc_audio.WaLLoCAudio`)::

    x ─ / gain ─ WPT (J=7) ─ linear encoder ─ × channel gain ─ compander ─▶ y  (108 ch, 344.5 frames/s)
    y ─ interleave channels into G groups ─ GroupedResidualVQ (G groups × Q residual codebooks of K codes)
      ─▶ tokens (G, Q, n)  ─ categorical prior per (quantizer, group) ─ rANS ─▶ one stream per quantizer
    tokens ─ codebooks ─ ŷ ─ WaLLoC-audio decoder ─ IWPT ─ × gain ─▶ x̂

* **Analysis and synthesis** start as WaLLoC-audio's (copied into this model's weights, so the
  model is self-contained). The analysis stays frozen (the tokens are codes of WaLLoC-audio
  latents); the recipe may fine-tune the decoder on quantized latents (the model card says).
* **Groups**: channel ``c`` goes to group ``c % G``. The latent channels are PCA-ordered
  (variance falls with the index), so interleaving gives every group the same mix of strong
  and weak channels and an equal share of the bits.
* **Bitrate scalability**: the residual quantizers were trained with per-example quantizer
  dropout (DAC), so the first ``k`` quantizers alone are a usable codec.
  ``compress(x, num_quantizers=k)`` picks ``k`` at encode time; every quantizer is its own
  rANS stream (section ``q<i>``), so :meth:`WaLLoCAudioRVQ.truncate` lowers the bitrate of an
  existing file without decoding it, giving the same bytes as encoding with ``k``.
* **Gain**: one level per file and stereo pair (an int16 code, ``2**(e/16)``, 0.38 dB steps,
  section ``gain``) scales the input to ``target_rms`` before the network and back after it,
  so the tokens describe level-normalized music. A pair of exact zeros decodes to exact zeros.
* **Blocks**: analysis and synthesis run on blocks of ``block_frames`` latent frames with
  ``margin_frames`` of context on each side (zeros outside the signal), so memory does not
  grow with the length of the track and every block decodes like the whole signal would.
* **Tokens for language models**: :meth:`tokens` returns int64 tokens ``(G, q, n)`` for mono or
  stereo (``(pairs, G, q, n)`` for more channels): ``tokens[g, i, t]`` is the code of
  quantizer ``i`` of group ``g`` at frame ``t`` (``t`` covers samples ``128 t .. 128 t + 127``).
  :meth:`from_tokens` decodes tokens to audio (at ``target_rms`` unless given the gain);
  ``from_tokens(*tokens(blob, side_info=True))``-style decoding equals :meth:`decompress`
  bit for bit (see :meth:`tokens`).

Bitstream: sections ``gain`` (int16 per pair), ``q0`` ... ``q<k-1>`` (one rANS stream per active
quantizer, the tokens of all groups and pairs). Header metadata ``walloc_audio_rvq``: active
quantizers, latent frames, coded rate and length, pairs.

>>> import torch
>>> m = WaLLoCAudioRVQ(latent_channels=8, levels=3, decoder_channels=8, decoder_blocks=1, groups=2,
...                    num_quantizers=3, codebook_size=16, block_frames=64, margin_frames=4).eval()
>>> m.update()
>>> x = 0.1 * torch.randn(2, 1000)
>>> blob = m.compress(x, sample_rate=44100, num_quantizers=2)
>>> m.decompress(blob).shape, m.tokens(blob).shape
(torch.Size([2, 1000]), torch.Size([2, 2, 125]))
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from ..entropy import Categorical, Container
from ..errors import BitstreamError
from ..transforms import IWPT, WPT
from .base import Codec
from .quantizers import GroupedResidualVQ
from .registry import register_architecture
from .walloc import LATENT_LIMIT, LatentDecoder, SoftClipCompander
from .walloc_audio import GAIN_STEPS, SILENT, WaLLoCAudio, restore_rate

__all__ = ["WaLLoCAudioRVQ", "FROZEN_PREFIXES"]

# State-dict prefixes that come from WaLLoC-audio (copied, frozen while the quantizer trains).
FROZEN_PREFIXES = ("encoder.", "log_gain", "decoder.")

_GAIN_MIN, _GAIN_MAX = -16 * 40, 16 * 20  # 2**-40 .. 2**20 times target_rms (as WaLLoC-audio)
_MAX_FRAMES = 1 << 36
_MAX_CHANNELS = 256
_RATE_TOLERANCE = 0.1  # code natively within ±10% of the model's sample rate
_META = "walloc_audio_rvq"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@register_architecture
class WaLLoCAudioRVQ(Codec):
    """Token codec: WaLLoC-audio analysis, grouped residual VQ, categorical priors, rANS.

    Args:
        in_channels, latent_channels, levels, wavelet, decoder_channels, decoder_blocks: the
            WaLLoC-audio network (must match the weights copied in).
        groups: channel groups ``G`` (one residual VQ each).
        num_quantizers: residual quantizers ``Q`` per group.
        codebook_size: codes ``K`` per codebook (``G * log2(K)`` raw bits per frame per quantizer).
        quantize_dropout: per-example quantizer dropout while training (DAC).
        decay, kmeans_init, kmeans_iters, dead_code_patience: passed to every
            :class:`~neuralcodec.codecs.quantizers.VectorQuantizer`.
        sample_rate: the model's rate; inputs more than 10% away are resampled to it and back.
        target_rms: the level every pair is coded at.
        block_frames, margin_frames: latent frames per processing block and context on each side.

    >>> m = WaLLoCAudioRVQ(latent_channels=8, levels=3, decoder_channels=8, decoder_blocks=1,
    ...                    groups=2, num_quantizers=3, codebook_size=16)
    >>> out = m(torch.randn(2, 2, 64))
    >>> out["x_hat"].shape, out["y"].shape, out["indices"].shape
    (torch.Size([2, 2, 64]), torch.Size([2, 8, 8]), torch.Size([2, 2, 3, 8]))
    """

    architecture = "walloc-audio-rvq"
    modality = "audio"

    def __init__(self, in_channels: int = 2, latent_channels: int = 108, levels: int = 7, wavelet: str = "bior4.4",
                 decoder_channels: int = 128, decoder_blocks: int = 3, groups: int = 2, num_quantizers: int = 8,
                 codebook_size: int = 512, quantize_dropout: bool | float = True, decay: float = 0.99,
                 kmeans_init: bool = True, kmeans_iters: int = 10, dead_code_patience: float | None = 8.0,
                 sample_rate: int = 44100, target_rms: float = 0.1, block_frames: int = 4096,
                 margin_frames: int = 16) -> None:
        super().__init__(in_channels=in_channels, latent_channels=latent_channels, levels=levels, wavelet=wavelet,
                         decoder_channels=decoder_channels, decoder_blocks=decoder_blocks, groups=groups,
                         num_quantizers=num_quantizers, codebook_size=codebook_size,
                         quantize_dropout=quantize_dropout, decay=decay, kmeans_init=kmeans_init,
                         kmeans_iters=kmeans_iters, dead_code_patience=dead_code_patience, sample_rate=sample_rate,
                         target_rms=target_rms, block_frames=block_frames, margin_frames=margin_frames)
        if in_channels != 2:
            raise ValueError("the network codes stereo pairs (in_channels=2)")
        if latent_channels % groups:
            raise ValueError(f"latent_channels ({latent_channels}) must be divisible by groups ({groups})")
        if block_frames < 1 or margin_frames < 0:
            raise ValueError("block_frames must be >= 1 and margin_frames >= 0")
        coeffs = in_channels << levels
        self.levels, self.latent_channels, self.groups = levels, latent_channels, groups
        self.num_quantizers, self.codebook_size = num_quantizers, codebook_size
        self.sample_rate, self.target_rms = int(sample_rate), float(target_rms)
        self.block_frames, self.margin_frames = block_frames, margin_frames
        # WaLLoC-audio's layers under the same names, so its state dict copies in directly.
        self.wpt = WPT(levels, wavelet)
        self.iwpt = IWPT(levels, wavelet)
        self.encoder = nn.Conv1d(coeffs, latent_channels, 1, bias=False)
        self.log_gain = nn.Parameter(torch.zeros(latent_channels))
        self.compander = SoftClipCompander(LATENT_LIMIT)
        self.decoder = LatentDecoder(1, latent_channels, coeffs, decoder_channels, decoder_blocks)
        self.quantizer = GroupedResidualVQ(
            dim=latent_channels, groups=groups, num_quantizers=num_quantizers, codebook_size=codebook_size,
            quantize_dropout=quantize_dropout, decay=decay, kmeans_init=kmeans_init, kmeans_iters=kmeans_iters,
            dead_code_patience=dead_code_patience, channel_last=False,
        )
        # One categorical prior per quantizer (its G tables: one per group's codebook).
        self.priors = nn.ModuleList(Categorical(groups, codebook_size) for _ in range(num_quantizers))

    # -- helpers -------------------------------------------------------------------------------
    @property
    def multiple(self) -> int:
        """Samples per latent frame (``2**levels``)."""
        return 1 << self.levels

    @property
    def frame_rate(self) -> float:
        """Latent frames (tokens per codebook) per second at the model's rate."""
        return self.sample_rate / self.multiple

    def raw_kbps(self, num_quantizers: int | None = None) -> float:
        """Bitrate of the tokens at ``log2(K)`` bits each (no entropy coding, no side info).

        >>> WaLLoCAudioRVQ(latent_channels=8, levels=3, groups=2, num_quantizers=3, codebook_size=16,
        ...                decoder_channels=8, decoder_blocks=1).raw_kbps(1)
        44.1
        """
        k = self.num_quantizers if num_quantizers is None else num_quantizers
        return k * self.groups * math.log2(self.codebook_size) * self.frame_rate / 1000.0

    def _gain(self) -> Tensor:
        return self.log_gain.exp().view(1, -1, 1)

    def _interleave(self, y: Tensor) -> Tensor:
        """``(b, C, n)`` -> channels ordered group by group (group ``g`` holds channels ``g, g+G, ...``)."""
        return rearrange(y, "b (c g) n -> b (g c) n", g=self.groups)

    def _deinterleave(self, y: Tensor) -> Tensor:
        return rearrange(y, "b (g c) n -> b (c g) n", g=self.groups)

    def _gain_codes(self, pairs: Tensor) -> Tensor:
        """int gain code per pair: ``round(16 log2(rms / target_rms))``; ``SILENT`` for exact zeros."""
        rms = pairs.double().pow(2).mean(dim=(1, 2)).sqrt()
        e = torch.round(GAIN_STEPS * torch.log2(rms.clamp_min(1e-300) / self.target_rms)).clamp(_GAIN_MIN, _GAIN_MAX)
        return torch.where(rms > 0, e, torch.full_like(e, SILENT)).long()

    def _rate_for(self, sample_rate: int) -> int:
        if abs(sample_rate - self.sample_rate) <= _RATE_TOLERANCE * self.sample_rate:
            return sample_rate
        return self.sample_rate

    def _check_count(self, num_quantizers: int | None) -> int:
        k = self.num_quantizers if num_quantizers is None else num_quantizers
        if not _is_int(k) or not 1 <= k <= self.num_quantizers:
            raise ValueError(f"num_quantizers must be an int in [1, {self.num_quantizers}], got {num_quantizers!r}")
        return k

    # -- continuous path -----------------------------------------------------------------------
    def analysis(self, x: Tensor) -> Tensor:
        """``(B, 2, T)`` (T a multiple of ``2**levels``) -> continuous latent ``(B, C_lat, T / 2**levels)``."""
        return self.compander(self.encoder(self.wpt(x)) * self._gain())

    def synthesis(self, y: Tensor) -> Tensor:
        """Latent ``(B, C_lat, n)`` -> ``(B, 2, 128 n)`` waveform (at the coded level)."""
        return self.iwpt(self.decoder(self.compander.inverse(y) / self._gain()))

    def quantize(self, y: Tensor, num_quantizers: int | Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Latent ``(B, C_lat, n)`` -> ``(ŷ, tokens (B, G, q, n), commitment loss)``.

        In training mode (and ``num_quantizers=None``) every example draws its own number of
        quantizers (dropout); dropped positions hold ``-1``. In eval mode ``ŷ`` equals
        :meth:`dequantize` of the tokens bit for bit.
        """
        q, idx, loss = self.quantizer(self._interleave(y), num_quantizers)
        return self._deinterleave(q), rearrange(idx, "g b n q -> b g q n"), loss

    def dequantize(self, tokens: Tensor) -> Tensor:
        """Tokens ``(B, G, q, n)`` (``q <= Q``) -> latent ``ŷ (B, C_lat, n)``."""
        return self._deinterleave(self.quantizer.decode_indices(rearrange(tokens.long(), "b g q n -> g b n q")))

    def forward(self, x: Tensor, num_quantizers: int | Tensor | None = None) -> dict[str, Any]:
        """Training pass on ``(B, 2, T)`` crops at ``target_rms``: reconstruction, the token
        likelihoods under the priors, the continuous latent, tokens and the VQ loss."""
        y = self.analysis(x)
        y_hat, tokens, loss = self.quantize(y, num_quantizers)
        likelihoods = {}
        for i, prior in enumerate(self.priors[: tokens.shape[2]]):
            level = tokens[:, :, i]
            if bool((level >= 0).all()):
                likelihoods[f"q{i}"] = prior(level)
        return {"x_hat": self.synthesis(y_hat), "likelihoods": likelihoods, "y": y, "y_hat": y_hat,
                "indices": tokens, "loss": loss}

    @torch.no_grad()
    def update(self) -> None:
        """Build the integer tables of every prior (from its logits; float64 on the CPU)."""
        for prior in self.priors:
            prior.update(force=True)
        self._hash_cache = None

    # -- blocks --------------------------------------------------------------------------------
    def _blocks(self, n: int) -> list[tuple[int, int]]:
        return [(a, min(a + self.block_frames, n)) for a in range(0, n, self.block_frames)]

    def _analysis_blocks(self, x: Tensor) -> Tensor:
        """``(P, 2, n * 128)`` -> ``(P, C_lat, n)`` block by block (zeros as context outside)."""
        m, s = self.margin_frames, self.multiple
        n = x.shape[-1] // s
        out = []
        for a, b in self._blocks(n):
            lo, hi = max(a - m, 0), min(b + m, n)
            piece = nn.functional.pad(x[..., lo * s:hi * s], ((lo - (a - m)) * s, ((b + m) - hi) * s))
            out.append(self.analysis(piece)[..., m:m + b - a])
        return torch.cat(out, -1)

    def _synthesis_blocks(self, y: Tensor) -> Tensor:
        """``(P, C_lat, n)`` -> ``(P, 2, n * 128)`` block by block (silent latents as context outside)."""
        m, s = self.margin_frames, self.multiple
        n = y.shape[-1]
        out = []
        for a, b in self._blocks(n):
            lo, hi = max(a - m, 0), min(b + m, n)
            # Zero latents are the analysis of silence (linear encoder, odd compander).
            piece = nn.functional.pad(y[..., lo:hi], (lo - (a - m), (b + m) - hi))
            out.append(self.synthesis(piece)[..., m * s:(m + b - a) * s])
        return torch.cat(out, -1)

    def _prepare(self, x: Tensor, sample_rate: int) -> tuple[Tensor, Tensor, int]:
        """``(C, T)`` -> normalized pairs ``(P, 2, n * 128)``, gain codes ``(P,)``, coded length."""
        if x.dim() != 2 or x.shape[1] < 1 or not 1 <= x.shape[0] <= _MAX_CHANNELS:
            raise ValueError(f"expected (C, T) or (B, C, T) audio with 1..{_MAX_CHANNELS} channels, "
                             f"got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("audio contains NaN or infinite samples")
        x = x.float().to(self.device)
        coded_rate = self._rate_for(sample_rate)
        if coded_rate != sample_rate:
            import torchaudio.functional as AF

            x = AF.resample(x, sample_rate, coded_rate)
            if x.shape[1] == 0:
                x = x.new_zeros((x.shape[0], 1))
        coded_frames = x.shape[1]
        pairs = WaLLoCAudio._pairs(x)
        codes = self._gain_codes(pairs)
        gains = WaLLoCAudio._gains(codes, self.target_rms).to(pairs.device)
        pairs = pairs / torch.where(gains > 0, gains, torch.ones_like(gains))[:, None, None]
        n = -(-pairs.shape[-1] // self.multiple)
        pairs = nn.functional.pad(pairs, (0, n * self.multiple - pairs.shape[-1]))
        return pairs, codes, coded_frames

    # -- coding path ---------------------------------------------------------------------------
    def _check_tables(self) -> None:
        if not all(p.has_tables() for p in self.priors):
            raise RuntimeError("call update() before compress (trained models ship with tables)")

    def _encode(self, x: Tensor, sample_rate: int, num_quantizers: int) -> tuple[Tensor, Tensor, int]:
        """``(C, T)`` -> tokens ``(P, G, q, n)``, gain codes ``(P,)``, coded length (samples)."""
        if self.training:
            raise RuntimeError("encode in eval mode (call .eval()): training mode updates the codebooks")
        pairs, codes, coded_frames = self._prepare(x, sample_rate)
        _, tokens, _ = self.quantize(self._analysis_blocks(pairs), num_quantizers)
        return tokens, codes, coded_frames

    @torch.no_grad()
    def encode_tokens(self, x: Tensor, sample_rate: int | None = None,
                      num_quantizers: int | None = None) -> tuple[Tensor, Tensor]:
        """Audio ``(C, T)`` -> (tokens ``(P, G, q, n)``, gain codes ``(P,)``), without entropy coding.

        >>> m = WaLLoCAudioRVQ(latent_channels=8, levels=3, decoder_channels=8, decoder_blocks=1,
        ...                    groups=2, num_quantizers=3, codebook_size=16).eval()
        >>> tokens, gains = m.encode_tokens(torch.zeros(1, 100), num_quantizers=2)
        >>> tokens.shape, gains.tolist()
        (torch.Size([1, 2, 2, 13]), [-32768])
        """
        tokens, codes, _ = self._encode(x, int(sample_rate or self.sample_rate), self._check_count(num_quantizers))
        return tokens, codes

    @torch.no_grad()
    def compress(self, x: Tensor, metadata: dict[str, Any] | None = None, sample_rate: int | None = None,
                 num_quantizers: int | None = None) -> bytes | list[bytes]:
        """Audio ``(C, T)`` (or a batch ``(B, C, T)``) in [-1, 1] -> ``.ncf`` bytes.

        ``num_quantizers`` (default: all) sets the bitrate: about ``raw_kbps(k)`` minus the
        entropy coding saving. The sample rate is ``sample_rate`` or ``metadata["sample_rate"]``
        (default: the model's); it is stored in the file.
        """
        if x.dim() == 3:
            return [self.compress(item, metadata, sample_rate, num_quantizers) for item in x]  # type: ignore[misc]
        self._check_tables()
        k = self._check_count(num_quantizers)
        rate = int(sample_rate or (metadata or {}).get("sample_rate") or self.sample_rate)
        if rate < 1:
            raise ValueError(f"invalid sample rate {rate}")
        tokens, codes, coded_frames = self._encode(x, rate, k)
        pairs, _, _, n = tokens.shape
        meta = dict(metadata or {})
        meta["sample_rate"] = rate
        meta[_META] = {"quantizers": k, "frames": n, "coded_rate": self._rate_for(rate), "pairs": pairs,
                       "coded_frames": coded_frames}
        sections = {"gain": np.asarray(codes.cpu().numpy(), dtype="<i2").tobytes()}
        for i in range(k):
            sections[f"q{i}"] = self.priors[i].compress(tokens[:, :, i].contiguous())
        return Container(self.name, self.weights_hash(), self.modality, (x.shape[0], x.shape[1]), meta,
                         sections).to_bytes()

    def _open(self, blob: bytes) -> tuple[Container, dict[str, Any]]:
        c = Container.from_bytes(blob)
        self.check_origin(c)
        info = c.metadata.get(_META) if isinstance(c.metadata, dict) else None
        shape = tuple(c.shape)
        if c.modality != "audio" or not isinstance(info, dict) or len(shape) != 2:
            raise BitstreamError(f"not a {self.architecture} audio file (missing or malformed '{_META}' metadata)")
        channels, frames = shape
        rate = c.metadata.get("sample_rate")
        k, n, coded_rate, pairs, coded_frames = (info.get(key) for key in
                                                 ("quantizers", "frames", "coded_rate", "pairs", "coded_frames"))
        if not all(_is_int(v) for v in (channels, frames, rate, k, n, coded_rate, pairs, coded_frames)):
            raise BitstreamError("malformed audio header")
        if not (1 <= channels <= _MAX_CHANNELS and 1 <= frames <= _MAX_FRAMES and 1 <= rate <= 10_000_000
                and coded_rate == self._rate_for(rate) and pairs == -(-channels // 2)
                and 1 <= k <= self.num_quantizers and 1 <= coded_frames <= _MAX_FRAMES
                and n == -(-coded_frames // self.multiple)):
            raise BitstreamError(f"invalid audio header (shape {shape}, rate {rate!r}, {_META} {info})")
        if coded_rate == rate and coded_frames != frames:
            raise BitstreamError("coded length does not match the audio length")
        if coded_rate != rate and abs(coded_frames - frames * coded_rate / rate) > 2:
            raise BitstreamError("coded length does not match the resampled audio length")
        expected = ["gain"] + [f"q{i}" for i in range(k)]
        if list(c.sections) != expected:
            raise BitstreamError(f"unexpected sections {list(c.sections)} (expected {expected})")
        if len(c.sections["gain"]) != 2 * pairs:
            raise BitstreamError("gain section has the wrong size")
        codes = np.frombuffer(c.sections["gain"], dtype="<i2").astype(np.int64)
        if not bool(np.all((codes == SILENT) | ((codes >= _GAIN_MIN) & (codes <= _GAIN_MAX)))):
            raise BitstreamError("gain out of range")
        # Before decoding allocates pairs * G * n symbols: no table codes a symbol in fewer than
        # -log2(max probability) bits, so a stream far too short for its symbol count is corrupt.
        symbols = pairs * self.groups * n
        for i in range(k):
            cdf = self.priors[i]._quantized_cdf.to("cpu", torch.int64)
            max_prob = float((cdf[:, 1:] - cdf[:, :-1]).max()) / (1 << Categorical.precision)
            min_bits = -math.log2(min(max_prob, 1 - 2.0**-16))
            if symbols * min_bits > 16 * len(c.sections[f"q{i}"]) + 4096:
                raise BitstreamError(f"stream q{i} is too short for {symbols} tokens: truncated or corrupt file")
        return c, dict(info, gain_codes=codes)

    def _decode_tokens(self, c: Container, info: dict[str, Any]) -> Tensor:
        pairs, k, n = info["pairs"], info["quantizers"], info["frames"]
        levels = [self.priors[i].decompress(c.sections[f"q{i}"], (pairs, self.groups, n), device=self.device)
                  for i in range(k)]
        return torch.stack(levels, dim=2)

    def _gains_of(self, info: dict[str, Any]) -> Tensor:
        return WaLLoCAudio._gains(torch.from_numpy(info["gain_codes"].copy()), self.target_rms)

    @torch.no_grad()
    def tokens(self, blob: bytes | list[bytes], side_info: bool = False) -> Any:
        """Integer tokens of a file, by entropy decoding only.

        Layout: ``(G, q, n)`` int64 for mono or stereo, ``(pairs, G, q, n)`` for more channels;
        ``tokens[g, i, t]`` is the code (in ``[0, K)``) of residual quantizer ``i`` of channel
        group ``g`` at latent frame ``t`` (344.5 frames/s at 44.1 kHz), ``q`` the file's active
        quantizers. With ``side_info=True`` returns ``(tokens, info)`` where ``info`` holds
        ``gain`` (float multiplier per pair), ``frames`` and ``channels`` (at the coded rate), so
        ``from_tokens(tokens, **info)`` equals :meth:`decompress` bit for bit (for files at the
        model's rate; other rates are resampled by ``decompress`` after that).
        """
        if isinstance(blob, (list, tuple)):
            return [self.tokens(b, side_info) for b in blob]
        c, info = self._open(blob)
        tokens = self._decode_tokens(c, info)
        tokens = tokens[0] if tokens.shape[0] == 1 else tokens
        if side_info:
            return tokens, {"gain": self._gains_of(info), "frames": info["coded_frames"], "channels": c.shape[0]}
        return tokens

    @torch.no_grad()
    def from_tokens(self, tokens: Tensor, gain: Tensor | float | None = None, frames: int | None = None,
                    channels: int | None = None) -> Tensor:
        """Tokens ``(G, q, n)`` or ``(P, G, q, n)`` -> audio ``(channels, frames)`` at the model's rate.

        ``gain``: multiplier per pair (default 1: the level the network codes at, ``target_rms``);
        ``frames``: samples to keep (default ``128 n``); ``channels``: default ``2 P``.

        >>> m = WaLLoCAudioRVQ(latent_channels=8, levels=3, decoder_channels=8, decoder_blocks=1,
        ...                    groups=2, num_quantizers=3, codebook_size=16).eval()
        >>> m.from_tokens(torch.zeros(2, 3, 10, dtype=torch.long)).shape
        torch.Size([2, 80])
        """
        if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise ValueError("tokens must be an integer tensor")
        if tokens.dim() == 3:
            tokens = tokens[None]
        if tokens.dim() != 4 or tokens.shape[1] != self.groups or not 1 <= tokens.shape[2] <= self.num_quantizers \
                or tokens.shape[3] < 1:
            raise ValueError(f"tokens must be (G={self.groups}, q<={self.num_quantizers}, n) or (P, G, q, n), "
                             f"got {tuple(tokens.shape)}")
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook_size:
            raise ValueError(f"tokens must be in [0, {self.codebook_size})")
        pairs, n = tokens.shape[0], tokens.shape[3]
        channels = 2 * pairs if channels is None else channels
        frames = n * self.multiple if frames is None else frames
        if not (2 * pairs - 1 <= channels <= 2 * pairs) or not 1 <= frames <= n * self.multiple:
            raise ValueError(f"{pairs} pairs of {n} frames cannot give {channels} channels of {frames} samples")
        y = self._synthesis_blocks(self.dequantize(tokens.to(self.device)))
        if gain is not None:
            g = torch.as_tensor(gain, dtype=torch.float32, device=y.device).reshape(-1)
            g = g.expand(pairs) if g.numel() == 1 else g
            if g.numel() != pairs:
                raise ValueError(f"gain needs one value per pair ({pairs}), got {g.numel()}")
            y = torch.where(g[:, None, None] > 0, y * g[:, None, None], torch.zeros_like(y))  # exact silence
        return WaLLoCAudio._unpairs(y, channels)[:, :frames]

    @torch.no_grad()
    def latents(self, blob: bytes | list[bytes]) -> Tensor | list[Tensor]:
        """Dequantized latents ``ŷ`` (codebook sums) of a file, without the synthesis network:
        ``(C_lat, n)`` for mono/stereo, ``(pairs, C_lat, n)`` for more (level-normalized)."""
        if isinstance(blob, (list, tuple)):
            return [self.latents(b) for b in blob]  # type: ignore[misc]
        c, info = self._open(blob)
        y = self.dequantize(self._decode_tokens(c, info))
        return y[0] if y.shape[0] == 1 else y

    @torch.no_grad()
    def decompress(self, blob: bytes | list[bytes]) -> Tensor | list[Tensor]:
        """``.ncf`` bytes -> audio ``(C, T)`` with the input's channels, length and sample rate."""
        if isinstance(blob, (list, tuple)):
            return [self.decompress(b) for b in blob]  # type: ignore[misc]
        c, info = self._open(blob)
        y = self.from_tokens(self._decode_tokens(c, info), self._gains_of(info), info["coded_frames"], c.shape[0])
        return restore_rate(y, info["coded_rate"], c.metadata["sample_rate"], c.shape[1])

    def truncate(self, blob: bytes, num_quantizers: int) -> bytes:
        """The same file with only its first ``num_quantizers`` quantizers (a lower bitrate), by
        dropping streams: no decoding, and the same bytes as ``compress(x, num_quantizers=k)``.

        >>> m = WaLLoCAudioRVQ(latent_channels=8, levels=3, decoder_channels=8, decoder_blocks=1,
        ...                    groups=2, num_quantizers=3, codebook_size=16).eval(); m.update()
        >>> x = 0.1 * torch.randn(2, 500)
        >>> m.truncate(m.compress(x), 1) == m.compress(x, num_quantizers=1)
        True
        """
        c, info = self._open(blob)
        k = self._check_count(num_quantizers)
        if k > info["quantizers"]:
            raise ValueError(f"the file has {info['quantizers']} quantizers; cannot raise it to {k}")
        meta = dict(c.metadata)
        meta[_META] = dict(meta[_META], quantizers=k)
        sections = {name: data for name, data in c.sections.items() if name == "gain" or int(name[1:]) < k}
        return Container(c.codec, c.weights_hash, c.modality, c.shape, meta, sections).to_bytes()

    # -- weights ---------------------------------------------------------------------------------
    @torch.no_grad()
    def load_analysis_synthesis(self, base: nn.Module) -> None:
        """Copy WaLLoC-audio's encoder, channel gains and decoder (``base``'s state dict) into this model.

        >>> from neuralcodec.codecs.walloc_audio import WaLLoCAudio
        >>> base = WaLLoCAudio(latent_channels=8, levels=3, decoder_channels=8, decoder_blocks=1, context_hidden=8)
        >>> m = WaLLoCAudioRVQ(latent_channels=8, levels=3, decoder_channels=8, decoder_blocks=1, groups=2,
        ...                    num_quantizers=2, codebook_size=16)
        >>> m.load_analysis_synthesis(base); torch.equal(m.encoder.weight, base.encoder.weight)
        True
        """
        state = {k: v for k, v in base.state_dict().items() if k.startswith(FROZEN_PREFIXES)}
        missing = {k for k in self.state_dict() if k.startswith(FROZEN_PREFIXES)} - set(state)
        if missing:
            raise ValueError(f"the base model lacks {sorted(missing)[:3]}")
        self.load_state_dict(state, strict=False)
        self._hash_cache = None

    def frozen_parameters(self) -> Sequence[nn.Parameter]:
        """The parameters copied from WaLLoC-audio (analysis and synthesis)."""
        return [p for name, p in self.named_parameters() if name.startswith(FROZEN_PREFIXES)]
