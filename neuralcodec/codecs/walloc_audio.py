"""WaLLoC for audio: the image codec's layers in 1D, plus what audio files need.

The network is :class:`~neuralcodec.codecs.walloc.WaLLoC` with ``dims=1`` (same WPT,
linear PCA-initialised encoder, learned gain, soft-clip compander, hierarchical context
entropy model coded with our rANS, residual CNN decoder). This subclass adds only the
media handling:

* **Channels**: the network codes stereo pairs. Mono is coded as a pair of identical
  channels (the side signal is ~0 and costs almost nothing) and averaged back; more
  channels are coded as consecutive pairs (an odd last channel as mono).
* **Gain**: every chunk of every pair is scaled to a fixed RMS (``target_rms``) before the
  network, and the quantized gain (``2**(e/16)``, an int16 ``e`` per chunk and pair) is
  stored in the file, so the decoded loudness is the input's (the reference package
  normalizes and never stores the gain). A chunk of exact zeros decodes to exact zeros.
* **Chunks** (streaming, bounded memory): the signal (with ``2**J`` zeros in front) is cut
  into chunks of ``chunk`` samples that overlap by ``2*margin + crossfade``; each chunk is
  coded alone (periodization WPT, so its two ends wrap around), and the decoder
  overlap-adds them with windows that are 0 on the ``margin`` samples next to a chunk's
  ends (where the wrap-around and the decoder's receptive field disturb the output),
  a raised-cosine crossfade, then 1. The windows sum to 1, so a clip shorter than one
  chunk and the same clip inside a long file decode alike away from the crossfades.
  :meth:`compress_stream` / :meth:`decompress_stream` hold at most two chunks.
* **Sample rate**: stored in the file; inputs more than 10% away from the model's rate are
  resampled (torchaudio) to it for coding and back after decoding (not streamed).

Bitstream sections: ``gain`` (int16 per chunk and pair), ``index`` (uint32 byte length of
every rANS stream: chunk, pair, coding stage), ``data`` (the streams). Header metadata
``walloc_audio``: coded rate and frames, chunk count, pairs, and one table-index digest per
chunk and pair (checked by the decoder, as for images).

>>> import torch
>>> m = WaLLoCAudio(latent_channels=4, levels=3, decoder_channels=8, decoder_blocks=1, context_hidden=8,
...                 chunk=512, margin=16, crossfade=16).eval()
>>> x = 0.1 * torch.randn(2, 1000)
>>> blob = m.compress(x, metadata={"sample_rate": 44100})
>>> m.decompress(blob).shape
torch.Size([2, 1000])
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from ..entropy import Container
from ..errors import BitstreamError
from .registry import register_architecture
from .walloc import WaLLoC

__all__ = ["WaLLoCAudio", "chunk_plan"]

GAIN_STEPS = 16  # gain code e means a gain of 2**(e/16) (0.38 dB steps)
SILENT = -32768  # gain code of a chunk of exact zeros
_GAIN_MIN, _GAIN_MAX = -16 * 40, 16 * 20  # 2**-40 .. 2**20 times target_rms
_MAX_FRAMES = 1 << 36
_MAX_CHANNELS = 256
_RATE_TOLERANCE = 0.1  # code natively within ±10% of the model's sample rate


def restore_rate(y: Tensor, coded_rate: int, rate: int, frames: int) -> Tensor:
    """Decoded audio ``(C, T)`` at ``coded_rate`` back to the file's ``rate`` and exactly ``frames`` samples.

    Audio coded at its own rate is returned unchanged (it already has its length).

    >>> restore_rate(torch.ones(2, 100), 44100, 22050, 51).shape
    torch.Size([2, 51])
    """
    if coded_rate == rate:
        return y
    import torchaudio.functional as AF

    y = AF.resample(y, coded_rate, rate)
    if y.shape[1] >= frames:
        return y[:, :frames]
    return torch.cat([y, y.new_zeros((y.shape[0], frames - y.shape[1]))], 1)


def chunk_plan(frames: int, chunk: int, overlap: int, multiple: int, min_length: int = 0) -> list[tuple[int, int]]:
    """``(start, length)`` of every chunk over the padded signal (``multiple`` zeros + ``frames``).

    Every chunk but the last has ``chunk`` samples and starts ``chunk - overlap`` after the
    previous one; the last covers the rest (plus ``multiple`` zeros), rounded up to ``multiple``
    and to at least ``min_length``.

    >>> chunk_plan(10, 64, 16, 8)
    [(0, 32)]
    >>> chunk_plan(100, 64, 16, 8)
    [(0, 64), (48, 72)]
    """
    hop = chunk - overlap
    need = 2 * multiple + frames  # lead zeros + signal + tail zeros
    k = 1 if need <= chunk else 1 + -(-(need - chunk) // hop)
    plan = [(i * hop, chunk) for i in range(k - 1)]
    start = (k - 1) * hop
    plan.append((start, max(-(-(need - start) // multiple) * multiple, min_length)))
    return plan


@register_architecture
class WaLLoCAudio(WaLLoC):
    """WaLLoC audio codec (see the module docstring).

    Args (beyond :class:`WaLLoC`'s, ``entropy_model`` included): ``sample_rate`` (the training
    rate), ``chunk`` (samples per coded chunk, a multiple of ``2**levels``), ``margin`` and
    ``crossfade`` (the chunk overlap is ``2*margin + crossfade``), ``target_rms`` (the level
    every chunk is coded at). ``entropy_model="hierarchical_exact"`` (the shipped model) codes
    with integer context nets, so many files decode in one pass per stage
    (:func:`neuralcodec.datasets.decode_latents`).

    >>> m = WaLLoCAudio(latent_channels=4, levels=3, decoder_channels=8, decoder_blocks=1, context_hidden=8)
    >>> out = m(torch.randn(2, 2, 64))
    >>> out["x_hat"].shape, out["y"].shape
    (torch.Size([2, 2, 64]), torch.Size([2, 4, 8]))
    """

    architecture = "walloc-audio"
    modality = "audio"
    supported_dims = (1,)

    def __init__(self, in_channels: int = 2, latent_channels: int = 27, levels: int = 8, wavelet: str = "bior4.4",
                 decoder_channels: int = 128, decoder_blocks: int = 3, context_levels: int = 3,
                 context_hidden: int = 48, context_splits: list[int] | None = None, init_step: float = 0.05,
                 sample_rate: int = 44100, chunk: int = 1 << 19, margin: int = 4096, crossfade: int = 4096,
                 target_rms: float = 0.1, dims: int = 1, entropy_model: str = "hierarchical",
                 entropy_config: dict[str, Any] | None = None) -> None:
        if dims != 1:
            raise ValueError("the audio codec is one-dimensional (dims=1)")
        if in_channels != 2:
            raise ValueError("the audio network codes stereo pairs (in_channels=2)")
        super().__init__(in_channels, latent_channels, levels, wavelet, decoder_channels, decoder_blocks,
                         context_levels, context_hidden, context_splits, init_step, dims=1,
                         entropy_model=entropy_model, entropy_config=entropy_config)
        self.config.update(sample_rate=sample_rate, chunk=chunk, margin=margin, crossfade=crossfade,
                           target_rms=target_rms)
        m = self.multiple
        if chunk % m or margin % m or crossfade % (2 * m) or margin < 0 or crossfade < 2 * m:
            raise ValueError(f"chunk, margin must be multiples of {m} and crossfade of {2 * m}")
        if chunk < 2 * (2 * margin + crossfade) + m:
            raise ValueError("chunk too short for its overlap")
        self.sample_rate, self.chunk, self.margin, self.crossfade = sample_rate, chunk, margin, crossfade
        self.overlap = 2 * margin + crossfade
        self.target_rms = float(target_rms)

    # -- continuous path (audio in [-1, 1]: no offset) ---------------------------------------
    def analysis(self, x: Tensor) -> Tensor:
        """``(B, 2, T)`` (T a multiple of ``2**levels``) -> continuous latent ``(B, C_lat, T/2**levels)``."""
        return self.compander(self.encoder(self.wpt(x)) * self._gain())

    def synthesis(self, y: Tensor) -> Tensor:
        """Latent -> ``(B, 2, T)`` waveform."""
        return self.iwpt(self.decoder(self.compander.inverse(y) / self._gain()))

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> Tensor:
        """PCA initialisation from ``(B, 2, T)`` crops (the image version subtracts 0.5)."""
        return super().init_from_data(x + 0.5)

    # -- chunking helpers --------------------------------------------------------------------
    def _plan(self, frames: int) -> list[tuple[int, int]]:
        # A latent shorter than the coarsest context lattice would leave coding stages empty.
        min_length = self.multiple * ((1 << max(self.entropy.levels - 1, 0)) + 1)
        return chunk_plan(frames, self.chunk, self.overlap, self.multiple, min_length)

    def _window(self, length: int, first: bool, last: bool, device: torch.device) -> Tensor:
        w = torch.ones(length, device=device)
        m, c = self.margin, self.crossfade
        ramp = torch.sin(0.5 * math.pi * (torch.arange(c, device=device) + 0.5) / c) ** 2
        if not first:
            w[:m] = 0
            w[m:m + c] = ramp
        if not last:
            w[length - m - c:length - m] = 1 - ramp  # the next chunk rises by ramp: they sum to 1
            w[length - m:] = 0
        return w

    def _owned(self, index: int, count: int, length: int) -> tuple[int, int]:
        """Latent slice of chunk ``index`` that :meth:`latents` keeps (its part of the timeline)."""
        lead = self.margin + self.crossfade // 2
        a = 0 if index == 0 else lead
        b = length if index == count - 1 else self.chunk - self.overlap + lead
        return a // self.multiple, b // self.multiple

    @staticmethod
    def _pairs(x: Tensor) -> Tensor:
        """``(C, t)`` -> ``(ceil(C/2), 2, t)``: consecutive pairs, an odd last channel doubled."""
        if x.shape[0] % 2:
            x = torch.cat([x, x[-1:]], 0)
        return x.view(-1, 2, x.shape[1])

    @staticmethod
    def _unpairs(y: Tensor, channels: int) -> Tensor:
        flat = y.reshape(-1, y.shape[-1])
        if channels % 2:
            flat = torch.cat([flat[:channels - 1], flat[channels - 1:].mean(0, keepdim=True)], 0)
        return flat

    def _gain_codes(self, pairs: Tensor) -> Tensor:
        rms = pairs.double().pow(2).mean(dim=(1, 2)).sqrt()
        e = torch.round(GAIN_STEPS * torch.log2(rms.clamp_min(1e-300) / self.target_rms)).clamp(_GAIN_MIN, _GAIN_MAX)
        return torch.where(rms > 0, e, torch.full_like(e, SILENT)).long()

    @staticmethod
    def _gains(codes: Tensor, target: float) -> Tensor:
        """Scale factors (chunk RMS / ``target``): the network codes ``chunk / gain`` at ``target`` RMS."""
        g = torch.exp2(codes.double() / GAIN_STEPS)
        return torch.where(codes == SILENT, torch.zeros_like(g), g).float()

    def can_stream(self, sample_rate: int) -> bool:
        """Whether audio at ``sample_rate`` is coded without resampling, so chunk by chunk
        (:meth:`compress_stream` / :meth:`decompress_stream`) with bounded memory."""
        return self._rate_for(int(sample_rate)) == int(sample_rate)

    def _rate_for(self, sample_rate: int) -> int:
        if abs(sample_rate - self.sample_rate) <= _RATE_TOLERANCE * self.sample_rate:
            return sample_rate
        return self.sample_rate

    # -- encoding ----------------------------------------------------------------------------
    def _encode_chunks(self, blocks: Iterable[Tensor]) -> Iterator[tuple[Tensor, Tensor, int, int]]:
        """Yield ``(q (pairs, C_lat, n), gain codes (pairs,), frames so far, channels)`` per chunk.

        ``blocks`` are ``(C, t)`` pieces of the signal in order; at most one chunk plus one
        block is buffered.
        """
        mult = self.multiple
        hop = self.chunk - self.overlap
        buf: Tensor | None = None  # padded-signal samples from buf_start on
        buf_start, frames, channels, index = 0, 0, None, 0

        def encode(piece: Tensor) -> tuple[Tensor, Tensor]:
            pairs = self._pairs(piece.float())
            codes = self._gain_codes(pairs)
            gains = self._gains(codes, self.target_rms).to(pairs.device)
            normed = pairs / torch.where(gains > 0, gains, torch.ones_like(gains))[:, None, None]
            return torch.round(self.analysis(normed)), codes

        for block in blocks:
            if block.dim() != 2 or block.shape[1] == 0:
                if block.dim() == 2:
                    continue
                raise ValueError(f"expected (C, t) blocks, got {tuple(block.shape)}")
            block = block.to(self.device)
            if channels is None:
                channels = block.shape[0]
                buf = block.new_zeros((channels, mult))  # the lead zeros
            elif block.shape[0] != channels:
                raise ValueError("every block must have the same channel count")
            if not bool(torch.isfinite(block).all()):
                raise ValueError("audio contains NaN or infinite samples")
            frames += block.shape[1]
            buf = torch.cat([buf, block], 1)
            # Chunk `index` is surely not the last once the signal reaches its end (the tail
            # zeros then extend past it): code it now and keep only what later chunks need.
            while buf_start + buf.shape[1] >= index * hop + self.chunk:
                off = index * hop - buf_start
                q, codes = encode(buf[:, off:off + self.chunk])
                yield q, codes, frames, channels
                index += 1
                drop = index * hop - buf_start
                buf, buf_start = buf[:, drop:], buf_start + drop
        if channels is None:
            raise ValueError("no audio samples")
        plan = self._plan(frames)
        for start, length in plan[index:]:
            piece = buf[:, start - buf_start:start - buf_start + length]
            if piece.shape[1] < length:
                piece = torch.cat([piece, piece.new_zeros((channels, length - piece.shape[1]))], 1)
            q, codes = encode(piece)
            yield q, codes, frames, channels

    @torch.no_grad()
    def compress_stream(self, blocks: Iterable[Tensor], sample_rate: int,
                        metadata: dict[str, Any] | None = None) -> bytes:
        """Code a signal given as ``(C, t)`` blocks (e.g. :func:`~neuralcodec.datasets.media.iter_audio`).

        Holds about one chunk of audio at a time; only the (small) compressed streams grow.
        ``sample_rate`` must be within 10% of the model's (use :meth:`compress` otherwise).
        """
        if self._rate_for(int(sample_rate)) != int(sample_rate):
            raise ValueError(f"streaming needs a sample rate within 10% of {self.sample_rate} Hz; "
                             f"use compress() (which resamples) for {sample_rate} Hz")
        return self._compress(blocks, int(sample_rate), int(sample_rate), None, metadata)

    def _compress(self, blocks: Iterable[Tensor], sample_rate: int, coded_rate: int, frames_original: int | None,
                  metadata: dict[str, Any] | None) -> bytes:
        if self.entropy._cdfs.numel() == 0:
            raise RuntimeError("call update() before compress (trained models ship with tables)")
        gains: list[int] = []
        lengths: list[int] = []
        data: list[bytes] = []
        digests: list[str] = []
        frames = channels = 0
        for q, codes, frames, channels in self._encode_chunks(blocks):
            streams, dig = self.entropy.compress(q)
            for p in range(q.shape[0]):
                gains.append(int(codes[p]))
                digests.append(dig[p])
                for s in streams[p]:
                    lengths.append(len(s))
                    data.append(s)
        chunks = len(self._plan(frames))
        meta = dict(metadata or {})
        meta["sample_rate"] = int(sample_rate)
        meta["walloc_audio"] = {"coded_rate": coded_rate, "coded_frames": frames, "chunks": chunks,
                                "pairs": -(-channels // 2), "digests": digests}
        shape = (channels, frames if frames_original is None else frames_original)
        sections = {
            "gain": np.asarray(gains, dtype="<i2").tobytes(),
            "index": np.asarray(lengths, dtype="<u4").tobytes(),
            "data": b"".join(data),
        }
        return Container(self.name, self.weights_hash(), self.modality, shape, meta, sections).to_bytes()

    @torch.no_grad()
    def compress(self, x: Tensor, metadata: dict[str, Any] | None = None,
                 sample_rate: int | None = None) -> bytes | list[bytes]:
        """Audio ``(C, T)`` (or a batch ``(B, C, T)``) in [-1, 1] -> ``.ncf`` bytes.

        The sample rate is ``sample_rate`` or ``metadata["sample_rate"]`` (default: the
        model's); it is stored in the file.
        """
        if x.dim() == 3:
            return [self.compress(item, metadata, sample_rate) for item in x]  # type: ignore[misc]
        if x.dim() != 2 or x.shape[1] < 1 or not 1 <= x.shape[0] <= _MAX_CHANNELS:
            raise ValueError(f"expected (C, T) or (B, C, T) audio, got shape {tuple(x.shape)}")
        rate = int(sample_rate or (metadata or {}).get("sample_rate") or self.sample_rate)
        coded_rate = self._rate_for(rate)
        frames = x.shape[1]
        if coded_rate != rate:
            import torchaudio.functional as AF

            x = AF.resample(x.float(), rate, coded_rate)
            if x.shape[1] == 0:
                x = x.new_zeros((x.shape[0], 1))
        return self._compress([x], rate, coded_rate, frames, metadata)

    @torch.no_grad()
    def quantized_latents(self, x: Tensor) -> Tensor:
        """Integer latents (as float) of ``(C, T)`` or ``(B, C, T)`` audio at the model's rate.

        The chunks' latents joined along time (each chunk's own part), as :meth:`latents`
        returns them: ``(C_lat, n)`` for mono/stereo, ``(pairs, C_lat, n)`` for more channels.
        """
        if x.dim() == 3:
            return torch.stack([self.quantized_latents(item) for item in x])
        return self._stitch([q for q, _, _, _ in self._encode_chunks([x])], x.shape[1])

    def _stitch(self, qs: list[Tensor], frames: int) -> Tensor:
        plan = self._plan(frames)
        parts = []
        for k, (q, (_, length)) in enumerate(zip(qs, plan)):
            a, b = self._owned(k, len(plan), length)
            parts.append(q[..., a:b])
        out = torch.cat(parts, -1)
        return out[0] if out.shape[0] == 1 else out

    # -- decoding ----------------------------------------------------------------------------
    def _open(self, blob: bytes) -> tuple[Container, dict[str, Any]]:  # type: ignore[override]
        c = Container.from_bytes(blob)
        self.check_origin(c)
        info = c.metadata.get("walloc_audio") if isinstance(c.metadata, dict) else None
        shape = tuple(c.shape)
        if c.modality != "audio" or not isinstance(info, dict) or len(shape) != 2:
            raise BitstreamError("not a WaLLoC audio file (missing or malformed 'walloc_audio' metadata)")
        channels, frames = shape
        rate, coded_rate = c.metadata.get("sample_rate"), info.get("coded_rate")
        coded_frames, chunks, pairs = info.get("coded_frames"), info.get("chunks"), info.get("pairs")
        ints = (channels, frames, rate, coded_rate, coded_frames, chunks, pairs)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
            raise BitstreamError("malformed audio header")
        if not (1 <= channels <= _MAX_CHANNELS and 1 <= frames <= _MAX_FRAMES and 1 <= coded_frames <= _MAX_FRAMES
                and 1 <= rate <= 10_000_000 and coded_rate == self._rate_for(rate)):
            raise BitstreamError(f"invalid audio header (shape {shape}, rates {rate!r}/{coded_rate!r})")
        if coded_rate == rate and coded_frames != frames:
            raise BitstreamError("coded length does not match the audio length")
        if coded_rate != rate and abs(coded_frames - frames * coded_rate / rate) > 2:
            raise BitstreamError("coded length does not match the resampled audio length")
        plan = self._plan(coded_frames)
        stages = self.entropy.num_stages((plan[0][1] // self.multiple,))
        if chunks != len(plan) or pairs != -(-channels // 2):
            raise BitstreamError("chunk or pair count does not match the audio length")
        digests = info.get("digests")
        if not isinstance(digests, list) or len(digests) != chunks * pairs or not all(isinstance(d, str) for d in digests):
            raise BitstreamError("malformed table-index digests")
        if set(c.sections) != {"gain", "index", "data"}:
            raise BitstreamError(f"unexpected sections {sorted(c.sections)}")
        if len(c.sections["gain"]) != 2 * chunks * pairs or len(c.sections["index"]) != 4 * chunks * pairs * stages:
            raise BitstreamError("gain or index section has the wrong size")
        lengths = np.frombuffer(c.sections["index"], dtype="<u4").astype(np.int64)
        if int(lengths.sum()) != len(c.sections["data"]):
            raise BitstreamError("stream lengths do not add up to the data section")
        codes = np.frombuffer(c.sections["gain"], dtype="<i2").astype(np.int64)
        if not bool(np.all((codes == SILENT) | ((codes >= _GAIN_MIN) & (codes <= _GAIN_MAX)))):
            raise BitstreamError("gain out of range")
        info = dict(info, plan=plan, stages=stages, lengths=lengths, codes=codes)
        return c, info

    def _decode_latents(self, c: Container, info: dict[str, Any]) -> Iterator[tuple[int, Tensor, Tensor]]:
        """Yield ``(chunk index, q (pairs, C_lat, n), gain codes)`` by entropy decoding."""
        pairs, stages, plan = info["pairs"], info["stages"], info["plan"]
        offsets = np.concatenate([[0], np.cumsum(info["lengths"])])
        data = c.sections["data"]
        for k, (_, length) in enumerate(plan):
            streams, digests = [], []
            for p in range(pairs):
                base = (k * pairs + p) * stages
                streams.append([data[offsets[i]:offsets[i + 1]] for i in range(base, base + stages)])
                digests.append(info["digests"][k * pairs + p])
            q = self.entropy.decompress(streams, (length // self.multiple,), digests, device=self.device)
            codes = torch.from_numpy(info["codes"][k * pairs:(k + 1) * pairs].copy())
            yield k, q, codes

    @torch.no_grad()
    def latents(self, blob: bytes | list[bytes]) -> Tensor | list[Tensor]:
        """Quantized latents of a file by entropy decoding only: ``(C_lat, n)`` at ``rate/2**J``
        (``(pairs, C_lat, n)`` for more than two channels); the chunks' own parts joined.

        The latents are of the gain-normalized signal (every chunk at ``target_rms``).
        """
        if isinstance(blob, (list, tuple)):
            return [self.latents(b) for b in blob]  # type: ignore[misc]
        c, info = self._open(blob)
        qs = [q for _, q, _ in self._decode_latents(c, info)]
        return self._stitch(qs, info["coded_frames"])

    @torch.no_grad()
    def decompress_stream(self, blob: bytes) -> Iterator[Tensor]:
        """Decode a file chunk by chunk: yields ``(C, t)`` pieces that concatenate to the signal
        (at the coded rate; see :meth:`decompress` for other rates). Holds about two chunks."""
        c, info = self._open(blob)
        channels = c.shape[0]
        plan, frames = info["plan"], info["coded_frames"]
        mult = self.multiple
        acc: Tensor | None = None
        acc_start = 0
        emitted = mult  # padded position of the first signal sample
        end = mult + frames
        for k, q, codes in self._decode_latents(c, info):
            start, length = plan[k]
            last = k == len(plan) - 1
            gains = self._gains(codes, self.target_rms).to(q.device)
            y = self.synthesis(q) * gains[:, None, None] * self._window(length, k == 0, last, q.device)
            y = torch.where(gains[:, None, None] > 0, y, torch.zeros_like(y))  # exact silence
            y = self._unpairs(y, channels)
            if acc is None:
                acc, acc_start = y, start
            else:
                off = start - acc_start
                grown = y.new_zeros((channels, max(acc.shape[1], off + length)))
                grown[:, :acc.shape[1]] = acc
                grown[:, off:off + length] += y
                acc = grown
            # Before the next chunk's window opens everything is final.
            final = acc_start + acc.shape[1] if last else plan[k + 1][0] + self.margin
            a, b = max(emitted, acc_start), min(final, end)
            if b > a:
                yield acc[:, a - acc_start:b - acc_start]
                emitted = b
            if not last:
                acc, acc_start = acc[:, plan[k + 1][0] - acc_start:], plan[k + 1][0]

    @torch.no_grad()
    def decompress(self, blob: bytes | list[bytes]) -> Tensor | list[Tensor]:
        """``.ncf`` bytes -> audio ``(C, T)`` with the input's channels, length and sample rate."""
        if isinstance(blob, (list, tuple)):
            return [self.decompress(b) for b in blob]  # type: ignore[misc]
        c = Container.from_bytes(blob)
        y = torch.cat(list(self.decompress_stream(blob)), 1)
        info = c.metadata["walloc_audio"]
        return restore_rate(y, info["coded_rate"], c.metadata["sample_rate"], c.shape[1])
