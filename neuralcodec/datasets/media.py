"""Read and write media files as tensors: images (Pillow), audio (soundfile), video (PyAV).

Conventions every codec relies on:

* an image is a float32 tensor ``(C, H, W)`` in ``[0, 1]`` with ``C`` = 1 (gray), 3 (RGB)
  or 4 (RGBA). 8-bit files are divided by 255, 16-bit PNGs by 65535. Palette, gray+alpha,
  CMYK, YCbCr... are converted to RGB or RGBA; the EXIF orientation is applied.
* audio is a float32 tensor ``(C, T)`` in ``[-1, 1]`` (PCM files; float files keep their
  values) plus its sample rate; :func:`iter_audio` and :func:`audio_writer` stream long
  files in chunks.
* video is a float32 tensor ``(3, T, H, W)`` in ``[0, 1]`` (RGB, 8 bits) plus its frame rate;
  :func:`iter_video` yields it in chunks of frames so long videos fit in memory.

:func:`read_media` also returns the JSON-able ``metadata`` a writer needs to write the
file back the same way (image: ``mode``, ``bit_depth``; audio: ``sample_rate``,
``subtype``; video: ``fps`` as ``"num/den"``, ``frames``; all: ``format`` and the ``source``
file name). Codecs store it in the
``.ncf`` container and :func:`write_media` reads it back.

Every failure to read or write raises :class:`neuralcodec.MediaError` with the path in
the message. Writers are atomic (a temporary file in the same folder, then
``os.replace``): on any failure, Ctrl-C included, no partial or temporary file is left and
an existing file is untouched.

>>> import tempfile, os, torch
>>> d = tempfile.mkdtemp()
>>> x = torch.rand(3, 5, 7)
>>> write_image(os.path.join(d, "x.png"), x)
>>> y = read_image(os.path.join(d, "x.png"))
>>> y.shape, bool((y - x).abs().max() <= 0.5 / 255 + 1e-6)
(torch.Size([3, 5, 7]), True)
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np
import torch

from ..errors import MediaError

__all__ = [
    "Media",
    "IMAGE_SUFFIXES",
    "AUDIO_SUFFIXES",
    "VIDEO_SUFFIXES",
    "modality_of",
    "read_media",
    "write_media",
    "read_image",
    "write_image",
    "read_audio",
    "write_audio",
    "audio_info",
    "iter_audio",
    "audio_writer",
    "read_video",
    "iter_video",
    "write_video",
    "atomic_output",
]

PathLike = Union[str, os.PathLike]

IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".avif",
)  # fmt: skip
# suffix -> (libsndfile format, subtype forced by the suffix or None)
_AUDIO_FORMATS: dict[str, tuple[str, str | None]] = {
    ".wav": ("WAV", None),
    ".flac": ("FLAC", None),
    ".ogg": ("OGG", None),
    ".oga": ("OGG", None),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", None),
    ".aif": ("AIFF", None),
    ".aiff": ("AIFF", None),
    ".au": ("AU", None),
    ".w64": ("W64", None),
    ".caf": ("CAF", None),
}
AUDIO_SUFFIXES = tuple(_AUDIO_FORMATS)
# suffix -> (container format, encoder, pixel format): lossless FFV1 RGB in Matroska/AVI,
# high-quality H.264 for viewing in MP4/MOV.
_VIDEO_FORMATS: dict[str, tuple[str, str, str]] = {
    ".mkv": ("matroska", "ffv1", "bgr0"),
    ".avi": ("avi", "ffv1", "bgr0"),
    ".mp4": ("mp4", "libx264", "yuv420p"),
    ".m4v": ("mp4", "libx264", "yuv420p"),
    ".mov": ("mov", "libx264", "yuv420p"),
    ".webm": ("webm", "libvpx-vp9", "yuv420p"),
}
VIDEO_SUFFIXES = tuple(_VIDEO_FORMATS)
_MAX_FPS = 10_000
MAX_VIDEO_ELEMENTS = 1 << 32  # read_video's limit: 16 GiB of float32 (about 30 min of 480p)

# Pillow formats that can hold what we write; everything else is written as 8-bit.
_16BIT_FORMATS = ("PNG",)
_ALPHA_FORMATS = ("PNG", "WEBP", "TIFF", "GIF", "TGA", "BMP", "JPEG2000", "AVIF")
_MODES_BY_CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}
_CHANNELS_BY_MODE = {m: c for c, m in _MODES_BY_CHANNELS.items()}
_MAX_AUDIO_CHANNELS = 64


@dataclass
class Media:
    """A decoded media file: its tensor, its modality and what is needed to write it back.

    >>> m = Media(torch.zeros(1, 4, 4), "image", {"mode": "L", "bit_depth": 8})
    >>> m.modality, tuple(m.data.shape)
    ('image', (1, 4, 4))
    """

    data: torch.Tensor
    modality: str
    metadata: dict[str, Any] = field(default_factory=dict)


def modality_of(path: PathLike) -> str:
    """``"image"``, ``"audio"`` or ``"video"`` from the file name's suffix.

    >>> modality_of("photo.JPG"), modality_of("song.flac"), modality_of("clip.mp4")
    ('image', 'audio', 'video')
    """
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in _AUDIO_FORMATS:
        return "audio"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise MediaError(
        f"{path}: unsupported file type {suffix or '(no suffix)'!r}; images: "
        f"{' '.join(IMAGE_SUFFIXES)}; audio: {' '.join(AUDIO_SUFFIXES)}"
    )


def read_media(path: PathLike) -> Media:
    """Read an image or audio file (chosen by its suffix) with its metadata.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> write_audio(p, torch.zeros(2, 10), 8000)
    >>> m = read_media(p)
    >>> m.modality, tuple(m.data.shape), m.metadata["sample_rate"], m.metadata["subtype"]
    ('audio', (2, 10), 8000, 'PCM_16')
    """
    modality = modality_of(path)
    if modality == "image":
        data, metadata = _read_image(Path(path))
    elif modality == "audio":
        data, metadata = _read_audio(Path(path))
    else:
        data, metadata = read_video(path)
    return Media(data, modality, metadata)


def write_media(
    path: PathLike,
    data: torch.Tensor,
    modality: str,
    metadata: dict[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write ``data`` as ``modality`` to ``path`` (format from the suffix), using ``metadata``
    from :func:`read_media` (mode and bit depth, or sample rate and subtype).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "g.png")
    >>> write_media(p, torch.full((1, 2, 3), 0.5), "image", {"mode": "L", "bit_depth": 16})
    >>> read_media(p).metadata["bit_depth"]
    16
    """
    metadata = metadata or {}
    if modality == "image":
        write_image(path, data, mode=metadata.get("mode"), bit_depth=metadata.get("bit_depth", 8), overwrite=overwrite)
    elif modality == "audio":
        if "sample_rate" not in metadata:
            raise MediaError(f"{path}: cannot write audio without a sample rate")
        write_audio(path, data, metadata["sample_rate"], subtype=metadata.get("subtype"), overwrite=overwrite)
    elif modality == "video":
        if "fps" not in metadata:
            raise MediaError(f"{path}: cannot write video without a frame rate")
        write_video(path, data, metadata["fps"], overwrite=overwrite)
    else:
        raise MediaError(f"{path}: cannot write modality {modality!r} (image, audio and video are supported)")


# -- atomic output ----------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output(path: PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it becomes ``path`` atomically.

    On any exception (``KeyboardInterrupt`` included) the temporary file is removed and
    ``path`` is left as it was. With ``overwrite=False`` an existing ``path`` raises
    :class:`FileExistsError` (checked before and again, atomically, at the end).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "out.bin")
    >>> with atomic_output(p) as tmp:
    ...     _ = tmp.write_bytes(b"data")
    >>> open(p, "rb").read()
    b'data'
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(errno.EEXIST, "output already exists", str(path))
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _link_no_clobber(tmp: Path, path: Path) -> None:
    # A hard link fails atomically when the target exists; fall back to check-then-rename on
    # file systems without hard links.
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "output already exists", str(path)) from None
    except OSError:
        if path.exists():
            raise FileExistsError(errno.EEXIST, "output already exists", str(path)) from None
        os.replace(tmp, path)


# -- images -----------------------------------------------------------------------------------


def read_image(path: PathLike) -> torch.Tensor:
    """Read an image file to a float32 ``(C, H, W)`` tensor in ``[0, 1]`` (C = 1, 3 or 4).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> write_image(p, torch.ones(4, 2, 3))
    >>> read_image(p).shape
    torch.Size([4, 2, 3])
    """
    return _read_image(Path(path))[0]


def _read_image(path: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            fmt = im.format or ""
            if fmt == "PNG" and _png_bit_depth(path) == 16:
                array, orientation = _read_png16(path), im.getexif().get(0x0112, 1)
                array = _apply_orientation(array, orientation)
                bit_depth = 16
            else:
                im.load()
                oriented = ImageOps.exif_transpose(im)
                array, bit_depth = _pil_to_array(oriented, path)
    except MediaError:
        raise
    except FileNotFoundError:
        raise MediaError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MediaError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise MediaError(f"{path}: not a readable image (unknown or corrupted format)") from None
    except Image.DecompressionBombError as e:
        raise MediaError(f"{path}: image too large ({e})") from None
    except (OSError, ValueError, SyntaxError, RuntimeError, struct.error, EOFError) as e:
        # Pillow reports truncated or damaged files with OSError/SyntaxError/ValueError.
        raise MediaError(f"{path}: cannot decode image: {e}") from None
    if array.ndim == 2:
        array = array[:, :, None]
    h, w, c = array.shape
    if h == 0 or w == 0:
        raise MediaError(f"{path}: image has no pixels ({w}x{h})")
    scale = 65535.0 if bit_depth == 16 else 255.0
    data = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)).astype(np.float32) / np.float32(scale))
    metadata = {"mode": _MODES_BY_CHANNELS[c], "bit_depth": bit_depth, "format": fmt, "source": path.name}
    return data, metadata


def _pil_to_array(im: Any, path: Path) -> tuple[np.ndarray, int]:
    """A decoded Pillow image -> (H, W[, C]) uint8/uint16 array in L/RGB/RGBA, and its bit depth."""
    mode = im.mode
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(im), 8
    if mode == "1":
        return np.asarray(im.convert("L")), 8
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.uint16), 16
    if mode == "I":  # 32-bit integer gray (some TIFF/PGM); accept it when it fits 16 bits
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise MediaError(f"{path}: 32-bit integer image with values outside 0..65535 is not supported")
        return a.astype(np.uint16), 16
    if mode == "F":
        raise MediaError(f"{path}: floating-point images are not supported")
    if mode == "P":
        target = "RGBA" if "transparency" in im.info else "RGB"
        return np.asarray(im.convert(target)), 8
    if mode in ("LA", "La", "PA", "RGBa"):
        return np.asarray(im.convert("RGBA")), 8
    try:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        return np.asarray(im.convert("RGB")), 8
    except (ValueError, OSError) as e:
        raise MediaError(f"{path}: unsupported image mode {mode!r}: {e}") from None


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(29)  # signature (8) + IHDR length/type (8) + width, height, depth (9)
    if len(head) < 25 or head[12:16] != b"IHDR":
        return 8
    return head[24]


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit PNG -> (H, W, C) uint16 in L/RGB/RGBA (Pillow reduces 16-bit RGB to 8 bits)."""
    from torchvision.io import ImageReadMode, decode_png

    raw = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    try:
        t = decode_png(raw, mode=ImageReadMode.UNCHANGED)
    except RuntimeError as e:
        raise MediaError(f"{path}: cannot decode 16-bit PNG: {e}") from None
    a = t.numpy().transpose(1, 2, 0).astype(np.uint16)
    if a.shape[2] == 2:  # gray + alpha -> RGBA, as Pillow does for 8-bit LA
        a = np.concatenate([a[:, :, :1]] * 3 + [a[:, :, 1:]], axis=2)
    return a


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, C) array, as ``ImageOps.exif_transpose``."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:  # transpose
        return a.transpose(1, 0, 2)
    if orientation == 6:  # rotate 90 degrees clockwise
        return np.rot90(a, k=-1)
    if orientation == 7:  # transverse
        return np.rot90(a, k=2).transpose(1, 0, 2)
    if orientation == 8:  # rotate 90 degrees counter-clockwise
        return np.rot90(a, k=1)
    return a


def write_image(
    path: PathLike,
    x: torch.Tensor | np.ndarray,
    *,
    mode: str | None = None,
    bit_depth: int = 8,
    overwrite: bool = True,
) -> None:
    """Write a ``(C, H, W)`` (or ``(H, W)``) image in ``[0, 1]`` to ``path`` atomically.

    The format comes from the suffix. ``bit_depth=16`` is kept for PNG; formats that hold
    only 8 bits (or no alpha, as JPEG) are written as 8-bit (or RGB) with a warning.
    Values are clamped to ``[0, 1]`` and rounded; ``mode`` (``"L"``, ``"RGB"``, ``"RGBA"``)
    must agree with ``C``.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> write_image(p, torch.zeros(1, 3, 3), bit_depth=16)
    >>> read_media(p).metadata["mode"], read_media(p).metadata["bit_depth"]
    ('L', 16)
    """
    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if path.suffix.lower() not in IMAGE_SUFFIXES or fmt is None:
        raise MediaError(f"{path}: unknown image format {path.suffix!r}; use one of {' '.join(IMAGE_SUFFIXES)}")
    a = _as_array(x, path)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in _MODES_BY_CHANNELS or a.shape[1] == 0 or a.shape[2] == 0:
        raise MediaError(f"{path}: expected an image tensor (C, H, W) with C in 1, 3, 4; got {tuple(a.shape)}")
    channels = a.shape[0]
    if mode is not None and _CHANNELS_BY_MODE.get(mode) != channels:
        raise MediaError(f"{path}: mode {mode!r} does not match {channels} channel(s)")
    if bit_depth not in (8, 16):
        raise MediaError(f"{path}: bit depth must be 8 or 16, got {bit_depth!r}")
    if bit_depth == 16 and fmt not in _16BIT_FORMATS:
        warnings.warn(f"{path.suffix} holds 8 bits per channel; writing 8-bit (use .png to keep 16 bits)", stacklevel=2)
        bit_depth = 8
    if channels == 4 and fmt not in _ALPHA_FORMATS:
        warnings.warn(f"{path.suffix} has no alpha channel; the alpha channel is dropped", stacklevel=2)
        a, channels = a[:3], 3
    hwc = np.clip(a, 0.0, 1.0).transpose(1, 2, 0)
    try:
        with atomic_output(path, overwrite=overwrite) as tmp:
            if bit_depth == 16:
                tmp.write_bytes(_encode_png16(np.rint(hwc * 65535.0).astype(np.uint16)))
            else:
                u8 = np.rint(hwc * 255.0).astype(np.uint8)
                im = Image.fromarray(u8[:, :, 0] if channels == 1 else u8, _MODES_BY_CHANNELS[channels])
                im.save(tmp, format=fmt, **_save_options(fmt))
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, (FileExistsError, MediaError)):
            raise
        raise MediaError(f"{path}: cannot write image: {e}") from None


def _save_options(fmt: str) -> dict[str, Any]:
    # Decoded images are the product: keep them as faithful as the chosen format allows.
    if fmt == "JPEG":
        return {"quality": 95, "subsampling": 0}
    if fmt == "WEBP":
        return {"lossless": True}
    if fmt == "AVIF":
        return {"quality": 95}
    return {}


def _as_array(x: torch.Tensor | np.ndarray, path: Path) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.size and not np.isfinite(a).all():
        raise MediaError(f"{path}: refusing to write NaN or infinite values")
    return a


def _encode_png16(a: np.ndarray) -> bytes:
    """(H, W, C) uint16 -> 16-bit PNG bytes (gray, RGB or RGBA), with per-row adaptive filters."""
    h, w, c = a.shape
    color_type = {1: 0, 3: 2, 4: 6}[c]
    raw = np.ascontiguousarray(a, dtype=">u2").reshape(h, w * c).view(np.uint8).astype(np.int16)
    bpp = 2 * c  # bytes per pixel
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    up_left = np.zeros_like(raw)
    up_left[1:, bpp:] = raw[:-1, :-bpp]
    # Paeth predictor, vectorized: pick the neighbour nearest to left + up - up_left.
    p = left + up - up_left
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    predictions = (np.zeros_like(raw), left, up, (left + up) // 2, paeth)
    best = None
    best_cost = None
    for kind, pred in enumerate(predictions):
        filtered = ((raw - pred) & 0xFF).astype(np.uint8)
        # The usual heuristic: minimise the sum of |byte| read as signed.
        cost = np.abs(filtered.view(np.int8).astype(np.int32)).sum(axis=1)
        if best is None:
            best, best_cost, kinds = filtered, cost, np.zeros(h, np.uint8)
        else:
            better = cost < best_cost
            best[better] = filtered[better]
            best_cost = np.where(better, cost, best_cost)
            kinds[better] = kind
    scanlines = np.concatenate([kinds[:, None], best], axis=1).tobytes()
    idat = zlib.compress(scanlines, 6)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))]
    step = 1 << 23  # several IDAT chunks keep each chunk far below the format's 2**31 limit
    parts += [chunk(b"IDAT", idat[i : i + step]) for i in range(0, len(idat), step)] or [chunk(b"IDAT", b"")]
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


# -- audio ------------------------------------------------------------------------------------


def read_audio(path: PathLike) -> tuple[torch.Tensor, int]:
    """Read an audio file to a float32 ``(C, T)`` tensor in ``[-1, 1]`` and its sample rate.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.flac")
    >>> write_audio(p, torch.zeros(1, 100), 16000)
    >>> x, sr = read_audio(p)
    >>> tuple(x.shape), sr
    ((1, 100), 16000)
    """
    data, metadata = _read_audio(Path(path))
    return data, metadata["sample_rate"]


def _read_audio(path: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    import soundfile as sf

    if path.is_dir():
        raise MediaError(f"{path}: is a directory, not an audio file")
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
        if info.channels < 1 or info.channels > _MAX_AUDIO_CHANNELS:
            raise MediaError(f"{path}: unsupported channel count {info.channels}")
        samples, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except MediaError:
        raise
    except (RuntimeError, OSError, ValueError, TypeError) as e:  # sf.LibsndfileError is a RuntimeError
        raise MediaError(f"{path}: cannot decode audio: {e}") from None
    if samples.shape[0] == 0:
        raise MediaError(f"{path}: audio file has no samples")
    data = torch.from_numpy(np.ascontiguousarray(samples.T))
    metadata = {"sample_rate": int(sample_rate), "subtype": info.subtype, "format": info.format, "source": path.name}
    return data, metadata


def write_audio(
    path: PathLike,
    x: torch.Tensor | np.ndarray,
    sample_rate: int,
    *,
    subtype: str | None = None,
    overwrite: bool = True,
) -> None:
    """Write a ``(C, T)`` (or ``(T,)``) signal in ``[-1, 1]`` to ``path`` atomically.

    The format comes from the suffix (WAV, FLAC, OGG/Vorbis, ...). ``subtype`` (e.g.
    ``"PCM_24"``, from :func:`read_media`) is kept when the format can store it, else the
    format's default is used (PCM_16 for WAV and FLAC). Integer subtypes clip to ``[-1, 1]``.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> write_audio(p, torch.zeros(2, 8), 44100, subtype="PCM_24")
    >>> read_media(p).metadata["subtype"]
    'PCM_24'
    """
    import soundfile as sf

    path = Path(path)
    fmt, chosen = _audio_format(path, sample_rate, subtype)
    a = _as_array(x, path)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or not 1 <= a.shape[0] <= _MAX_AUDIO_CHANNELS or a.shape[1] == 0:
        raise MediaError(f"{path}: expected an audio tensor (C, T) with 1..{_MAX_AUDIO_CHANNELS} channels; got {a.shape}")
    if chosen not in ("FLOAT", "DOUBLE"):
        a = np.clip(a, -1.0, 1.0)  # integer and lossy encoders must not wrap around
    try:
        with atomic_output(path, overwrite=overwrite) as tmp:
            sf.write(str(tmp), np.ascontiguousarray(a.T, dtype=np.float32), sample_rate, subtype=chosen, format=fmt)
    except (RuntimeError, OSError, ValueError, TypeError) as e:
        if isinstance(e, (FileExistsError, MediaError)):
            raise
        raise MediaError(f"{path}: cannot write audio: {e}") from None


def audio_info(path: PathLike) -> dict[str, Any]:
    """Sample rate, frames, channels, subtype and format of an audio file, without decoding it.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> write_audio(p, torch.zeros(2, 50), 8000)
    >>> audio_info(p)["frames"], audio_info(p)["channels"]
    (50, 2)
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, ValueError, TypeError) as e:
        raise MediaError(f"{path}: cannot decode audio: {e}") from None
    return {
        "sample_rate": int(info.samplerate),
        "frames": int(info.frames),
        "channels": int(info.channels),
        "subtype": info.subtype,
        "format": info.format,
        "source": path.name,
    }


def iter_audio(path: PathLike, chunk_frames: int, overlap: int = 0) -> Iterator[torch.Tensor]:
    """Yield float32 ``(C, t)`` chunks of ``chunk_frames`` samples (the last may be shorter).

    Consecutive chunks share ``overlap`` samples (each chunk starts ``chunk_frames - overlap``
    after the previous one), so a long file is coded with bounded memory.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.flac")
    >>> write_audio(p, torch.zeros(1, 10), 8000)
    >>> [c.shape[1] for c in iter_audio(p, chunk_frames=4, overlap=1)]
    [4, 4, 4]
    """
    import soundfile as sf

    if chunk_frames < 1 or not 0 <= overlap < chunk_frames:
        raise ValueError("need chunk_frames >= 1 and 0 <= overlap < chunk_frames")
    path = Path(path)
    info = audio_info(path)
    if info["frames"] == 0:
        raise MediaError(f"{path}: audio file has no samples")
    try:
        for block in sf.blocks(str(path), blocksize=chunk_frames, overlap=overlap, dtype="float32", always_2d=True):
            yield torch.from_numpy(np.ascontiguousarray(block.T))
    except (RuntimeError, OSError, ValueError, TypeError) as e:
        raise MediaError(f"{path}: cannot decode audio: {e}") from None


class _AudioWriter:
    """Appends ``(C, t)`` chunks to an open sound file (see :func:`audio_writer`)."""

    def __init__(self, sound_file: Any, channels: int, clip: bool, path: Path) -> None:
        self._file, self.channels, self._clip, self._path = sound_file, channels, clip, path
        self.frames = 0

    def write(self, x: torch.Tensor | np.ndarray) -> None:
        a = _as_array(x, self._path)
        if a.ndim != 2 or a.shape[0] != self.channels:
            raise MediaError(f"{self._path}: expected chunks of shape ({self.channels}, t), got {a.shape}")
        if self._clip:
            a = np.clip(a, -1.0, 1.0)
        try:
            self._file.write(np.ascontiguousarray(a.T, dtype=np.float32))
        except (RuntimeError, OSError, ValueError, TypeError) as e:
            raise MediaError(f"{self._path}: cannot write audio: {e}") from None
        self.frames += a.shape[1]


@contextlib.contextmanager
def audio_writer(
    path: PathLike, sample_rate: int, channels: int, *, subtype: str | None = None, overwrite: bool = True
) -> Iterator[_AudioWriter]:
    """Write an audio file chunk by chunk, atomically: the file appears only when the block ends
    without an error, and it must hold at least one sample.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> with audio_writer(p, 8000, channels=2) as w:
    ...     w.write(torch.zeros(2, 3)); w.write(torch.zeros(2, 4))
    >>> audio_info(p)["frames"]
    7
    """
    import soundfile as sf

    path = Path(path)
    fmt, chosen = _audio_format(path, sample_rate, subtype)
    if not isinstance(channels, int) or not 1 <= channels <= _MAX_AUDIO_CHANNELS:
        raise MediaError(f"{path}: invalid channel count {channels!r}")
    with atomic_output(path, overwrite=overwrite) as tmp:
        try:
            sound_file = sf.SoundFile(str(tmp), "w", samplerate=sample_rate, channels=channels, subtype=chosen, format=fmt)
        except (RuntimeError, OSError, ValueError, TypeError) as e:
            raise MediaError(f"{path}: cannot write audio: {e}") from None
        with sound_file:
            writer = _AudioWriter(sound_file, channels, chosen not in ("FLOAT", "DOUBLE"), path)
            yield writer  # the caller's exceptions pass through unchanged; the file is dropped
        if writer.frames == 0:
            raise MediaError(f"{path}: no samples were written")


def _audio_format(path: Path, sample_rate: Any, subtype: str | None) -> tuple[str, str]:
    """(libsndfile format, subtype) for writing ``path``; validates the suffix and the rate."""
    import soundfile as sf

    if path.suffix.lower() not in _AUDIO_FORMATS:
        raise MediaError(f"{path}: unknown audio format {path.suffix!r}; use one of {' '.join(AUDIO_SUFFIXES)}")
    fmt, forced_subtype = _AUDIO_FORMATS[path.suffix.lower()]
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or not 1 <= sample_rate <= 10_000_000:
        raise MediaError(f"{path}: invalid sample rate {sample_rate!r}")
    chosen = forced_subtype or subtype
    if not (isinstance(chosen, str) and sf.check_format(fmt, chosen)):
        chosen = "PCM_24" if fmt == "FLAC" and subtype in ("FLOAT", "DOUBLE") else sf.default_subtype(fmt)
    return fmt, chosen


# -- video ------------------------------------------------------------------------------------


def _fps_fraction(fps: Any, path: PathLike) -> Fraction:
    """A frame rate given as a number, a Fraction or a ``"num/den"`` string, validated."""
    try:
        rate = Fraction(fps) if not isinstance(fps, float) else Fraction(fps).limit_denominator(1001)
    except (TypeError, ValueError, ZeroDivisionError):
        raise MediaError(f"{path}: invalid frame rate {fps!r}") from None
    if isinstance(fps, bool) or not 0 < rate <= _MAX_FPS or rate.denominator > 1_000_000:
        raise MediaError(f"{path}: invalid frame rate {fps!r}")
    return rate


def iter_video(path: PathLike, chunk_frames: int = 16) -> Iterator[torch.Tensor]:
    """Yield the frames of a video as float32 ``(3, t, H, W)`` chunks in ``[0, 1]`` (RGB).

    Only ``chunk_frames`` decoded frames are held at a time, so long videos stream.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "v.mkv")
    >>> write_video(p, torch.rand(3, 5, 8, 10), 25)
    >>> [tuple(c.shape) for c in iter_video(p, chunk_frames=2)]
    [(3, 2, 8, 10), (3, 2, 8, 10), (3, 1, 8, 10)]
    """
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be >= 1")
    path = Path(path)
    buffer: list[np.ndarray] = []
    for frame in _decode_frames(path):
        buffer.append(frame)
        if len(buffer) == chunk_frames:
            yield _frames_to_tensor(buffer)
            buffer = []
    if buffer:
        yield _frames_to_tensor(buffer)


def _frames_to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    a = np.stack(frames)  # (t, H, W, 3) uint8
    return torch.from_numpy(np.ascontiguousarray(a.transpose(3, 0, 1, 2))).float().div_(255.0)


def _open_video(path: Path) -> tuple[Any, Any]:
    import av

    if path.is_dir():
        raise MediaError(f"{path}: is a directory, not a video")
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: cannot open video: {e}") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: no video stream")
    return container, container.streams.video[0]


def _decode_frames(path: Path) -> Iterator[np.ndarray]:
    import av

    container, stream = _open_video(path)
    try:
        with container:
            stream.thread_type = "AUTO"
            size = None
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                if size is None:
                    size = rgb.shape
                elif rgb.shape != size:
                    raise MediaError(f"{path}: frame size changes inside the video ({size} -> {rgb.shape})")
                yield rgb
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: cannot decode video: {e}") from None


def read_video(path: PathLike) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read a whole video to a float32 ``(3, T, H, W)`` tensor in ``[0, 1]`` and its metadata
    (``fps`` as ``"num/den"``, ``frames``, ``codec``, ``format``, ``source``).

    For long videos use :func:`iter_video`, which holds only a chunk of frames.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "v.mkv")
    >>> write_video(p, torch.rand(3, 3, 6, 4), "30000/1001")
    >>> x, meta = read_video(p)
    >>> tuple(x.shape), meta["fps"], meta["frames"]
    ((3, 3, 6, 4), '30000/1001', 3)
    """
    path = Path(path)
    container, stream = _open_video(path)
    with container:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        codec_name = stream.codec_context.name
        fmt = container.format.name
    if not rate:
        raise MediaError(f"{path}: the video has no frame rate")
    chunks, elements = [], 0
    for chunk in iter_video(path, chunk_frames=64):
        elements += chunk.numel()
        if elements > MAX_VIDEO_ELEMENTS:  # a clear error instead of running out of memory
            raise MediaError(
                f"{path}: video too large to hold in memory (over {MAX_VIDEO_ELEMENTS:,} values); "
                "read it in chunks with iter_video"
            )
        chunks.append(chunk)
    if not chunks:
        raise MediaError(f"{path}: the video has no frames")
    data = torch.cat(chunks, dim=1)
    fps = _fps_fraction(rate, path)
    metadata = {
        "fps": f"{fps.numerator}/{fps.denominator}",
        "frames": int(data.shape[1]),
        "codec": codec_name,
        "format": fmt,
        "source": path.name,
    }
    return data, metadata


def write_video(path: PathLike, x: torch.Tensor | np.ndarray, fps: Any, *, overwrite: bool = True) -> None:
    """Write a ``(3, T, H, W)`` RGB video in ``[0, 1]`` to ``path`` atomically.

    ``.mkv``/``.avi``: lossless FFV1 (RGB, exact). ``.mp4``/``.mov``: H.264 at CRF 12 for
    viewing (4:2:0; 4:4:4 when a side is odd). ``.webm``: VP9 at CRF 15. Frame count and
    frame rate (``"num/den"`` or a number) are kept exactly.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "v.avi")
    >>> x = torch.rand(3, 4, 7, 5)
    >>> write_video(p, x, 24)
    >>> bool((read_video(p)[0] - x).abs().max() <= 0.5 / 255 + 1e-6)
    True
    """
    import av

    path = Path(path)
    if path.suffix.lower() not in _VIDEO_FORMATS:
        raise MediaError(f"{path}: unknown video format {path.suffix!r}; use one of {' '.join(VIDEO_SUFFIXES)}")
    fmt, encoder, pix_fmt = _VIDEO_FORMATS[path.suffix.lower()]
    rate = _fps_fraction(fps, path)
    a = _as_array(x, path)
    if a.ndim != 4 or a.shape[0] != 3 or min(a.shape[1:]) == 0:
        raise MediaError(f"{path}: expected a video tensor (3, T, H, W) with at least one frame; got {a.shape}")
    _, frames, h, w = a.shape
    if pix_fmt == "yuv420p" and (h % 2 or w % 2):
        pix_fmt = "yuv444p"  # 4:2:0 needs even sides; 4:4:4 keeps odd sizes exact
    options = {"libx264": {"crf": "12", "preset": "medium"}, "libvpx-vp9": {"crf": "15", "b": "0"}}.get(encoder, {})
    try:
        with atomic_output(path, overwrite=overwrite) as tmp:
            with av.open(str(tmp), mode="w", format=fmt) as container:
                stream = container.add_stream(encoder, rate=rate, options=options)
                stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
                for t in range(frames):  # one frame at a time: no full uint8 copy of the video
                    rgb = np.rint(np.clip(a[:, t], 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                    frame.pts = t
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
    except (av.FFmpegError, OSError, ValueError) as e:
        if isinstance(e, (FileExistsError, MediaError)):
            raise
        raise MediaError(f"{path}: cannot write video: {e}") from None
