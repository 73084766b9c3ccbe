"""Classical codecs as benchmark baselines: thin wrappers with a default quality sweep.

Images (Pillow; ``uint8`` RGB arrays ``(H, W, 3)`` in and out, or ``(H, W)`` grayscale):

========== ============================================================================
``jpeg``     libjpeg via Pillow, ``quality`` 1..95, Pillow's default 4:2:0 chroma
             subsampling and standard (non-optimised) Huffman tables, baseline JPEG.
``webp``     libwebp lossy, ``quality`` 0..100, ``method=6`` (slowest, best).
``jpeg2000`` OpenJPEG via Pillow, 9/7 wavelet (``irreversible=True``), colour transform
             (``mct=1``), one quality layer at a target compression ratio
             (``quality_mode="rates"``); the "quality" of this baseline is that
             compression ratio (24 / bpp for RGB), so a *larger* value means a *lower* rate.
``avif``     libavif (AV1 intra) via Pillow, ``quality`` 0..100, 4:2:0, ``speed=6``
             (Pillow's default), ``max_threads=1`` so that parallel runs do not oversubscribe.
``jxl``      JPEG XL through the optional ``pillow-jxl-plugin`` package (``quality``);
             reported as unavailable when that package is not installed.
========== ============================================================================

Audio (:class:`Audio` in and out: ``(C, T)`` float32 in [-1, 1] plus its sample rate):

========== ============================================================================
``opus``     libopus via PyAV in Ogg, target bitrate in kbps (VBR, libopus defaults).
             Opus runs at 48 kHz: other rates are resampled to 48 kHz and back with
             ``torchaudio.functional.resample`` (windowed sinc, its defaults).
``mp3``      LAME via PyAV, CBR at the given kbps.
``vorbis``   libvorbis via libsndfile (``soundfile``) in Ogg, VBR quality in [0, 1]
             (``compression_level = 1 - quality``); PyAV here has only FFmpeg's
             experimental native Vorbis encoder, which is not representative.
========== ============================================================================

Video (:class:`Video` in and out: ``(T, H, W, 3)`` uint8 RGB frames plus the frame rate),
encoded with PyAV into Matroska in memory, 8-bit 4:2:0 (``yuv420p``, FFmpeg's default
BT.601 RGB<->YUV conversion, which is part of every result), one encoder thread:

========== ============================================================================
``x264``     libx264, ``crf`` (lower = more bits), ``preset=medium``.
``x265``     libx265, ``crf``, ``preset=medium``, ``pools=1``.
``svtav1``   SVT-AV1 (libsvtav1), ``crf`` 1..63, ``preset=8``, ``lp=1``.
========== ============================================================================

Decoded audio is aligned to the input by the container's own delay information (Ogg
pre-skip and granule positions, the LAME/Xing gapless header): the decoders drop the
priming samples, and the output is cut to the input length (the tail padding is
dropped; a shorter output is an error). The tests check the alignment by
cross-correlation and SNR.

The rate counted by :meth:`Baseline.payload_size` is the whole file for images
(headers included, as usual for bpp), and the sum of the raw codec packets for audio and
video (container pages and codec header packets excluded).

>>> import numpy as np
>>> jpeg = get_baseline("jpeg")
>>> img = np.zeros((16, 16, 3), np.uint8)
>>> data = jpeg.encode(img, 75)
>>> jpeg.decode(data, like=img).shape
(16, 16, 3)
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import MediaError, NeuralCodecError


class BaselineUnavailableError(NeuralCodecError):
    """The baseline's library or plugin is not installed in this environment."""


@dataclass
class Audio:
    """A waveform ``(C, T)`` float32 in [-1, 1] and its sample rate (Hz)."""

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        s = np.asarray(self.samples, dtype=np.float32)
        if s.ndim == 1:
            s = s[None]
        if s.ndim != 2 or s.shape[1] == 0:
            raise MediaError(f"audio must be (C, T) with T > 0, got shape {s.shape}")
        self.samples = s
        self.sample_rate = int(self.sample_rate)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def seconds(self) -> float:
        return self.samples.shape[1] / self.sample_rate


@dataclass
class Video:
    """Frames ``(T, H, W, 3)`` uint8 RGB and the frame rate (frames per second)."""

    frames: np.ndarray
    fps: float

    def __post_init__(self) -> None:
        f = np.asarray(self.frames)
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] == 0:
            raise MediaError(f"video must be (T, H, W, 3) uint8 with T > 0, got {f.dtype} {f.shape}")
        if f.shape[1] % 2 or f.shape[2] % 2:
            raise MediaError(f"4:2:0 video needs even width and height, got {f.shape[2]}x{f.shape[1]}")
        self.frames = np.ascontiguousarray(f)
        self.fps = float(self.fps)
        if not self.fps > 0:
            raise MediaError("video frame rate must be positive")

    @property
    def seconds(self) -> float:
        return self.frames.shape[0] / self.fps


class Baseline:
    """A classical codec with a quality knob.

    Attributes:
        name: registry name (``"jpeg"``).
        modality: ``"image"`` or ``"audio"``.
        qualities: default quality sweep, from low rate to high rate.
        quality_name: what the knob is (``"quality"``, ``"compression ratio"``, ``"kbps"``).
        quality_range: (min, max) of the knob, for :func:`encode_at_bpp`.
        integer_quality: whether the knob takes integers only.
        rate_increases_with_quality: False where a larger knob means fewer bits (JPEG 2000).
        description: one line for the results JSON.
    """

    name: str = ""
    modality: str = ""
    qualities: tuple = ()
    quality_name: str = "quality"
    quality_range: tuple[float, float] = (1, 100)
    integer_quality: bool = True
    rate_increases_with_quality: bool = True
    description: str = ""

    def unavailable_reason(self) -> str | None:
        """None when usable here, else a sentence saying what is missing."""
        return None

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    def _require(self) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise BaselineUnavailableError(f"{self.name} is unavailable: {reason}")

    def encode(self, media: Any, quality: float) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, like: Any = None) -> Any:
        raise NotImplementedError

    def payload_size(self, data: bytes) -> int:
        """Bytes counted for the rate (see the module docstring)."""
        return len(data)

    def __repr__(self) -> str:
        return f"<Baseline {self.name} ({self.modality})>"


# ------------------------------------------------------------------------------ images
def _check_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise MediaError(f"image baselines take uint8 arrays, got {a.dtype}")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3))):
        raise MediaError(f"expected (H, W) or (H, W, 3) uint8, got shape {a.shape}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return np.ascontiguousarray(a)


class PillowImageBaseline(Baseline):
    """An image codec that Pillow writes and reads."""

    modality = "image"

    def __init__(
        self,
        name: str,
        pil_format: str,
        qualities: Sequence[float],
        options: Callable[[float], dict],
        description: str,
        quality_range: tuple[float, float] = (1, 100),
        integer_quality: bool = True,
        rate_increases_with_quality: bool = True,
        quality_name: str = "quality",
        feature: str | None = None,
        plugin_module: str | None = None,
    ) -> None:
        self.name = name
        self.pil_format = pil_format
        self.qualities = tuple(qualities)
        self._options = options
        self.description = description
        self.quality_range = quality_range
        self.integer_quality = integer_quality
        self.rate_increases_with_quality = rate_increases_with_quality
        self.quality_name = quality_name
        self._feature = feature
        self._plugin_module = plugin_module

    def unavailable_reason(self) -> str | None:
        if self._plugin_module:
            try:
                __import__(self._plugin_module)
            except ImportError:
                return f"the optional Pillow plugin module {self._plugin_module!r} is not installed"
        if self._feature:
            from PIL import features

            if not features.check(self._feature):
                return f"this Pillow build lacks {self._feature!r} support"
        return None

    def encode(self, media: np.ndarray, quality: float) -> bytes:
        self._require()
        from PIL import Image

        lo, hi = self.quality_range
        if not lo <= quality <= hi:
            raise ValueError(f"{self.name}: {self.quality_name} {quality} outside [{lo}, {hi}]")
        image = Image.fromarray(_check_image(media))
        buf = io.BytesIO()
        image.save(buf, format=self.pil_format, **self._options(quality))
        return buf.getvalue()

    def decode(self, data: bytes, like: np.ndarray | None = None) -> np.ndarray:
        self._require()
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                mode = "L" if like is not None and np.asarray(like).ndim == 2 else "RGB"
                out = np.asarray(im.convert(mode))
        except Exception as e:  # Pillow raises many types on bad data
            raise MediaError(f"{self.name}: cannot decode: {e}") from e
        if like is not None and out.shape[:2] != np.asarray(like).shape[:2]:
            raise MediaError(f"{self.name}: decoded size {out.shape} differs from the input {np.asarray(like).shape}")
        return out


# ------------------------------------------------------------------------------- audio
def _layout(channels: int) -> str:
    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    raise MediaError(f"audio baselines take mono or stereo, got {channels} channels")


def _resample(samples: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return samples
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(samples)), src, dst).numpy()


def _fit_length(samples: np.ndarray, length: int, name: str) -> np.ndarray:
    if samples.shape[1] < length:
        raise MediaError(f"{name}: decoded {samples.shape[1]} samples, fewer than the {length} encoded")
    return np.ascontiguousarray(samples[:, :length])


def _pyav_decode(data: bytes, name: str) -> tuple[np.ndarray, int]:
    import av

    chunks = []
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            for packet in container.demux(stream):
                for frame in packet.decode():
                    arr = frame.to_ndarray()
                    channels = len(frame.layout.channels)
                    # Planar formats give (C, n); packed formats give (1, n * C) interleaved.
                    arr = arr if frame.format.is_planar else arr.reshape(-1, channels).T
                    chunks.append(arr.astype(np.float32, copy=False))
    except av.error.FFmpegError as e:
        raise MediaError(f"{name}: cannot decode: {e}") from e
    if not chunks:
        raise MediaError(f"{name}: no audio decoded")
    return np.concatenate(chunks, axis=1), rate


def _pyav_packet_bytes(data: bytes) -> int:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return sum(p.size for p in container.demux(stream) if p.size)


class PyAVAudioBaseline(Baseline):
    """An audio codec encoded with PyAV into an in-memory container, at a target bitrate."""

    modality = "audio"
    quality_name = "kbps"
    integer_quality = False

    def __init__(
        self,
        name: str,
        codec: str,
        container: str,
        qualities: Sequence[float],
        quality_range: tuple[float, float],
        description: str,
        sample_rates: Sequence[int] | None = None,
        resample_to: int | None = None,
    ) -> None:
        self.name = name
        self.codec = codec
        self.container = container
        self.qualities = tuple(qualities)
        self.quality_range = quality_range
        self.description = description
        self.sample_rates = tuple(sample_rates) if sample_rates else None
        self.resample_to = resample_to

    def unavailable_reason(self) -> str | None:
        try:
            import av

            av.codec.Codec(self.codec, "w")
        except Exception:
            return f"PyAV/FFmpeg here has no {self.codec!r} encoder"
        return None

    def _codec_rate(self, rate: int) -> int:
        if self.sample_rates is None or rate in self.sample_rates:
            return rate
        if self.resample_to is None:
            raise MediaError(f"{self.name} does not support {rate} Hz")
        return self.resample_to

    def encode(self, media: Audio, quality: float) -> bytes:
        self._require()
        import av

        if not isinstance(media, Audio):
            raise TypeError("audio baselines take an Audio(samples, sample_rate)")
        lo, hi = self.quality_range
        if not lo <= quality <= hi:
            raise ValueError(f"{self.name}: {quality} kbps outside [{lo}, {hi}]")
        rate = self._codec_rate(media.sample_rate)
        samples = _resample(media.samples, media.sample_rate, rate).astype(np.float32)
        layout = _layout(media.channels)
        buf = io.BytesIO()
        with av.open(buf, "w", format=self.container) as out:
            stream = out.add_stream(self.codec, rate=rate, layout=layout)
            stream.bit_rate = int(round(quality * 1000))
            step = 4096  # PyAV re-frames to the encoder's frame size internally
            for start in range(0, samples.shape[1], step):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[:, start : start + step]), format="fltp", layout=layout
                )
                frame.sample_rate = rate
                frame.pts = start
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        return buf.getvalue()

    def decode(self, data: bytes, like: Audio | None = None) -> Audio:
        self._require()
        samples, rate = _pyav_decode(data, self.name)
        target_rate = like.sample_rate if like is not None else rate
        samples = _resample(samples, rate, target_rate)
        if like is not None:
            samples = _fit_length(samples, like.samples.shape[1], self.name)
        return Audio(samples, target_rate)

    def payload_size(self, data: bytes) -> int:
        return _pyav_packet_bytes(data)


class SoundfileVorbisBaseline(Baseline):
    """Ogg Vorbis through libsndfile (libvorbis), VBR quality in [0, 1]."""

    name = "vorbis"
    modality = "audio"
    quality_name = "vorbis quality"
    quality_range = (0.0, 1.0)
    integer_quality = False
    qualities = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8)
    description = "libvorbis via libsndfile/soundfile, Ogg, VBR quality (1 - compression_level)"

    def unavailable_reason(self) -> str | None:
        try:
            import soundfile as sf
        except ImportError:
            return "soundfile is not installed"
        if "OGG" not in sf.available_formats() or "VORBIS" not in sf.available_subtypes("OGG"):
            return "this libsndfile has no Ogg Vorbis support"
        return None

    def encode(self, media: Audio, quality: float) -> bytes:
        self._require()
        import soundfile as sf

        if not isinstance(media, Audio):
            raise TypeError("audio baselines take an Audio(samples, sample_rate)")
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"vorbis quality {quality} outside [0, 1]")
        _layout(media.channels)
        buf = io.BytesIO()
        sf.write(
            buf,
            np.clip(media.samples, -1.0, 1.0).T,
            media.sample_rate,
            format="OGG",
            subtype="VORBIS",
            compression_level=1.0 - float(quality),
        )
        return buf.getvalue()

    def decode(self, data: bytes, like: Audio | None = None) -> Audio:
        self._require()
        import soundfile as sf

        try:
            samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception as e:
            raise MediaError(f"vorbis: cannot decode: {e}") from e
        samples = samples.T
        if like is not None:
            samples = _fit_length(_resample(samples, rate, like.sample_rate), like.samples.shape[1], "vorbis")
            rate = like.sample_rate
        return Audio(samples, rate)

    def payload_size(self, data: bytes) -> int:
        return _pyav_packet_bytes(data)


# ------------------------------------------------------------------------------- video
class PyAVVideoBaseline(Baseline):
    """A video encoder driven through PyAV at a constant rate factor (CRF)."""

    modality = "video"
    quality_name = "crf"
    rate_increases_with_quality = False

    def __init__(
        self,
        name: str,
        codec: str,
        qualities: Sequence[int],
        quality_range: tuple[int, int],
        options: dict[str, str],
        description: str,
    ) -> None:
        self.name = name
        self.codec = codec
        self.qualities = tuple(qualities)
        self.quality_range = quality_range
        self._options = dict(options)
        self.description = description

    def unavailable_reason(self) -> str | None:
        try:
            import av

            av.codec.Codec(self.codec, "w")
        except Exception:
            return f"PyAV/FFmpeg here has no {self.codec!r} encoder"
        return None

    def encode(self, media: Video, quality: float) -> bytes:
        self._require()
        import os
        from fractions import Fraction

        import av

        if not isinstance(media, Video):
            raise TypeError("video baselines take a Video(frames, fps)")
        lo, hi = self.quality_range
        if not lo <= quality <= hi:
            raise ValueError(f"{self.name}: crf {quality} outside [{lo}, {hi}]")
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr otherwise
        buf = io.BytesIO()
        with av.open(buf, "w", format="matroska") as out:
            stream = out.add_stream(self.codec, rate=Fraction(media.fps).limit_denominator(1001))
            stream.width, stream.height = media.frames.shape[2], media.frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1
            stream.options = {**self._options, "crf": str(int(quality))}
            for i, rgb in enumerate(media.frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        return buf.getvalue()

    def decode(self, data: bytes, like: Video | None = None) -> Video:
        self._require()
        import av

        frames = []
        try:
            with av.open(io.BytesIO(data)) as container:
                stream = container.streams.video[0]
                fps = float(stream.average_rate or (like.fps if like is not None else 0)) or 1.0
                for packet in container.demux(stream):
                    frames.extend(f.to_ndarray(format="rgb24") for f in packet.decode())
        except av.error.FFmpegError as e:
            raise MediaError(f"{self.name}: cannot decode: {e}") from e
        if not frames:
            raise MediaError(f"{self.name}: no frames decoded")
        video = np.stack(frames)
        if like is not None:
            if video.shape != like.frames.shape:
                raise MediaError(f"{self.name}: decoded {video.shape}, encoded {like.frames.shape}")
            fps = like.fps
        return Video(video, fps)

    def payload_size(self, data: bytes) -> int:
        import av

        with av.open(io.BytesIO(data)) as container:
            return sum(p.size for p in container.demux(container.streams.video[0]) if p.size)


# ---------------------------------------------------------------------------- registry
def _jpeg() -> Baseline:
    return PillowImageBaseline(
        "jpeg",
        "JPEG",
        (10, 20, 35, 50, 70, 90),
        lambda q: {"quality": int(q), "subsampling": "4:2:0"},
        "libjpeg via Pillow, 4:2:0, standard Huffman tables",
        quality_range=(1, 95),
    )


def _webp() -> Baseline:
    return PillowImageBaseline(
        "webp",
        "WEBP",
        (5, 20, 40, 60, 80, 95),
        lambda q: {"quality": int(q), "method": 6, "lossless": False},
        "libwebp lossy via Pillow, method 6",
        quality_range=(0, 100),
        feature="webp",
    )


def _jpeg2000() -> Baseline:
    return PillowImageBaseline(
        "jpeg2000",
        "JPEG2000",
        # compression ratios: 24 bits per RGB pixel / ratio = bpp (0.1 .. 2.4 bpp)
        (240, 120, 64, 32, 16, 10),
        lambda r: {"quality_mode": "rates", "quality_layers": [float(r)], "irreversible": True, "mct": 1},
        "OpenJPEG via Pillow, 9/7 irreversible wavelet, mct=1, one layer at a compression ratio",
        quality_range=(1.0, 2000.0),
        integer_quality=False,
        rate_increases_with_quality=False,
        quality_name="compression ratio",
        feature="jpg_2000",
    )


def _avif() -> Baseline:
    return PillowImageBaseline(
        "avif",
        "AVIF",
        (10, 30, 45, 60, 75, 90),
        lambda q: {"quality": int(q), "speed": 6, "subsampling": "4:2:0", "max_threads": 1},
        "libavif (AV1 intra) via Pillow, 4:2:0, speed 6, one thread",
        quality_range=(0, 100),
        feature="avif",
    )


def _jxl() -> Baseline:
    return PillowImageBaseline(
        "jxl",
        "JXL",
        (10, 30, 50, 70, 85, 95),
        lambda q: {"quality": int(q)},
        "JPEG XL via pillow-jxl-plugin",
        quality_range=(0, 100),
        plugin_module="pillow_jxl",
    )


def _opus() -> Baseline:
    return PyAVAudioBaseline(
        "opus",
        "libopus",
        "ogg",
        (6, 12, 24, 48, 96, 128),
        (6, 510),
        "libopus via PyAV, Ogg, VBR at a target bitrate, 48 kHz (resampled with torchaudio)",
        sample_rates=(48000, 24000, 16000, 12000, 8000),
        resample_to=48000,
    )


def _mp3() -> Baseline:
    return PyAVAudioBaseline(
        "mp3",
        "libmp3lame",
        "mp3",
        (32, 64, 96, 128, 192, 320),
        (8, 320),
        "LAME via PyAV, CBR",
        sample_rates=(44100, 48000, 32000, 22050, 24000, 16000, 11025, 12000, 8000),
    )


def _x264() -> Baseline:
    return PyAVVideoBaseline(
        "x264", "libx264", (40, 35, 30, 26, 22, 18), (0, 51), {"preset": "medium"},
        "libx264 via PyAV, CRF, preset medium, yuv420p, 1 thread",
    )


def _x265() -> Baseline:
    return PyAVVideoBaseline(
        "x265", "libx265", (40, 35, 30, 26, 22, 18), (0, 51),
        {"preset": "medium", "x265-params": "pools=1:frame-threads=1:log-level=error"},
        "libx265 via PyAV, CRF, preset medium, yuv420p, 1 thread",
    )


def _svtav1() -> Baseline:
    return PyAVVideoBaseline(
        "svtav1", "libsvtav1", (55, 48, 41, 35, 29, 23), (1, 63), {"preset": "8", "svtav1-params": "lp=1"},
        "SVT-AV1 via PyAV, CRF, preset 8, yuv420p, lp=1",
    )


_FACTORIES: dict[str, Callable[[], Baseline]] = {
    "jpeg": _jpeg,
    "webp": _webp,
    "jpeg2000": _jpeg2000,
    "avif": _avif,
    "jxl": _jxl,
    "opus": _opus,
    "mp3": _mp3,
    "vorbis": SoundfileVorbisBaseline,
    "x264": _x264,
    "x265": _x265,
    "svtav1": _svtav1,
}
_ALIASES = {
    "jpg": "jpeg", "j2k": "jpeg2000", "jp2": "jpeg2000", "jpegxl": "jxl", "ogg": "vorbis",
    "h264": "x264", "h265": "x265", "hevc": "x265", "av1": "svtav1",
}


def register_baseline(name: str, factory: Callable[[], Baseline]) -> None:
    """Add (or replace) a baseline by name, e.g. a wrapper around another library.

    >>> register_baseline("jpeg-example", _jpeg); is_baseline("jpeg-example")
    True
    """
    _FACTORIES[name] = factory


def baseline_names() -> list[str]:
    """Every registered baseline name (available here or not)."""
    return sorted(_FACTORIES)


def is_baseline(name: str) -> bool:
    return _ALIASES.get(name, name) in _FACTORIES


def get_baseline(name: str) -> Baseline:
    """The baseline called ``name``; check ``.available`` / ``.unavailable_reason()``.

    >>> get_baseline("webp").modality
    'image'
    """
    key = _ALIASES.get(name, name)
    if key not in _FACTORIES:
        raise KeyError(f"unknown baseline {name!r}; known: {', '.join(baseline_names())}")
    return _FACTORIES[key]()


def image_bpp(data_bytes: int, image: np.ndarray) -> float:
    h, w = np.asarray(image).shape[:2]
    return data_bytes * 8.0 / (h * w)


def encode_at_bpp(name: str, image_uint8_hwc: np.ndarray, target_bpp: float) -> tuple[float, bytes, np.ndarray]:
    """Encode with the image baseline ``name`` at the quality whose rate is closest to ``target_bpp``.

    Bisection over the quality knob (integers for JPEG/WebP/AVIF, a continuous compression
    ratio for JPEG 2000, 30 halvings in log-ratio). Among the qualities tried, the one with
    the smallest ``|bpp - target|`` wins; on a tie, the lower rate wins (never spend more
    bits than a cheaper equally close point). Returns ``(quality, data, decoded_uint8)``.

    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:64, 0:64]
    >>> img = np.stack([(xx * 4) % 256, (yy * 4) % 256, (xx * yy) % 256], -1).astype(np.uint8)
    >>> q, data, dec = encode_at_bpp("jpeg", img, 3.0)
    >>> abs(len(data) * 8 / 64 / 64 - 3.0) < 0.5, dec.shape
    (True, (64, 64, 3))
    """
    baseline = get_baseline(name)
    if baseline.modality != "image":
        raise ValueError(f"{name} is not an image baseline")
    if not target_bpp > 0:
        raise ValueError("target_bpp must be positive")
    image = _check_image(image_uint8_hwc)
    tried: dict[float, bytes] = {}

    def rate_of(q: float) -> float:
        if q not in tried:
            tried[q] = baseline.encode(image, q)
        return image_bpp(len(tried[q]), image)

    lo, hi = baseline.quality_range
    sign = 1 if baseline.rate_increases_with_quality else -1
    if baseline.integer_quality:
        lo, hi = int(math.ceil(lo)), int(math.floor(hi))
        # invariant: rate(lo) <= target < rate(hi) in the direction of `sign`
        a, b = lo, hi
        while b - a > 1:
            mid = (a + b) // 2
            if sign * (rate_of(mid) - target_bpp) <= 0:
                a, b = (mid, b) if sign > 0 else (a, mid)
            else:
                a, b = (a, mid) if sign > 0 else (mid, b)
        rate_of(a)
        rate_of(b)
    else:
        a, b = math.log(lo), math.log(hi)
        for _ in range(30):
            mid = (a + b) / 2
            r = rate_of(math.exp(mid))
            too_high = r > target_bpp
            # rate decreases with the ratio when sign < 0
            if (too_high and sign < 0) or (not too_high and sign > 0):
                a = mid
            else:
                b = mid
    best_q = min(tried, key=lambda q: (abs(image_bpp(len(tried[q]), image) - target_bpp), len(tried[q])))
    data = tried[best_q]
    return best_q, data, baseline.decode(data, like=image)


__all__ = [
    "Audio",
    "Baseline",
    "BaselineUnavailableError",
    "PillowImageBaseline",
    "PyAVAudioBaseline",
    "PyAVVideoBaseline",
    "Video",
    "SoundfileVorbisBaseline",
    "baseline_names",
    "encode_at_bpp",
    "get_baseline",
    "is_baseline",
    "register_baseline",
]
