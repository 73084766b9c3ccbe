"""The ``.ncf`` container: a self-describing, safe-to-parse file for one compressed item.

Binary layout (all integers little-endian)::

    offset      size   field
    0           4      magic            b"\\x89NCF"  (non-text first byte, like PNG)
    4           2      format version   uint16, currently 2
    6           4      header length H  uint32, 2 <= H <= 1 MiB
    10          H      header           version 2: raw deflate (RFC 1951) of the UTF-8 JSON
                                        object below, with the preset dictionary
                                        HEADER_DICTIONARY; version 1: the JSON itself
    10+H        S      sections         the section bytes, concatenated in header order
    10+H+S      4      CRC32            uint32, zlib.crc32 of every byte before it

Why deflate the header: the JSON (codec, weights hash, shape, metadata, section table) is
250-500 bytes, 2-4 % of a 768x512 photo's file and more than the coded data of a small
image. Against a dictionary of typical headers it deflates to 80-170 bytes, and it is still
plain JSON once inflated. Version 1 files (plain JSON header) are read as before.

The file size is exactly ``10 + H + S + 4`` where ``S`` is the sum of the section
lengths; trailing bytes are an error. The header is a JSON object with exactly
these keys::

    {"codec": "walloc-image-16x",          # registry name, 1..128 printable ASCII chars
     "weights_hash": "0123456789abcdef",   # Codec.weights_hash(): 0..64 lowercase hex chars
     "modality": "image",                  # 1..32 chars of [a-z0-9_-]
     "shape": [3, 512, 768],               # original media shape: 0..8 ints, each >= 1,
                                           #   product <= 2**40
     "metadata": {"bit_depth": 8},         # JSON object: str keys, JSON values, nesting <= 16
     "sections": [["latent", 1234], ...]}  # <= 256 [name, length] pairs; names unique,
                                           #   1..64 chars of [A-Za-z0-9_.-]

Parsing checks the fixed prefix, the version, that ``H`` fits the limits and the
data actually present, then the CRC32, and only then inflates the header (bounded by
the same 1 MiB limit; a deflate stream that does not end exactly at ``H`` is an error),
decodes and validates the JSON (its types, not just its syntax) and checks that the section lengths add up
to the bytes present. Nothing is allocated from a length read in the file before
that length is checked against the file size. Every failure raises
:class:`neuralcodec.BitstreamError`; a file from a newer format version says so.

>>> c = Container("demo", "00ff", "image", (3, 4, 4), {"bit_depth": 8}, {"latent": b"\\x01\\x02"})
>>> Container.from_bytes(c.to_bytes()) == c
True
>>> peek(c.to_bytes())["sections"]
{'latent': 2}
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..errors import BitstreamError

__all__ = ["Container", "write_container", "read_container", "peek", "MAGIC", "FORMAT_VERSION", "HEADER_DICTIONARY"]

MAGIC = b"\x89NCF"
FORMAT_VERSION = 2  # what this version writes; it reads 1 and 2

# The deflate preset dictionary of version-2 headers: typical headers of the shipped codecs with
# hashes, digests and lengths left out (deflate copies matching strings from it). Frozen: part
# of the format; another dictionary needs another format version. Most frequent text last.
HEADER_DICTIONARY = (
    b'{"codec":"walloc-video","weights_hash":"","modality":"video","shape":[3,"metadata":{"codec":"h264",'
    b'"format":"mp4","source":".mp4","fps":"30/1","frames":,"walloc_video":{"gop":16,"latent":[]}},'
    b'"sections":[["index",],["digest",],["data",]]}'
    b'{"codec":"walloc-audio-rvq","weights_hash":"","modality":"audio","shape":[2,"metadata":{"sample_rate":44100,'
    b'"subtype":"PCM_16","format":"WAV","source":".wav","walloc_audio_rvq":{"quantizers":8,"frames":,'
    b'"coded_rate":44100,"pairs":1,"coded_frames":}},"sections":[["gain",],["q0",],["q1",],["q2",],["q3",],'
    b'["q4",],["q5",],["q6",],["q7",]]}'
    b'{"codec":"walloc-audio","weights_hash":"","modality":"audio","shape":[1,"metadata":{"sample_rate":48000,'
    b'"subtype":"PCM_24","format":"FLAC","source":".flac","walloc_audio":{"coded_rate":44100,"coded_frames":,'
    b'"chunks":1,"pairs":1,"digests":["",""]}},"sections":[["gain",],["index",],["data",]]}'
    b'"mode":"L","bit_depth":16,"format":"JPEG","source":".jpg","mode":"RGBA","gray":true}},["alpha",'
    b'{"codec":"hyperprior-mean-q1","weights_hash":"","modality":"image","shape":[3,"metadata":{"mode":"RGB",'
    b'"bit_depth":8,"format":"PNG","source":".png","hyperprior":{"mode":"RGB","latent":[,"digest":""}},'
    b'"sections":[["z",],["y",]]}'
    b'{"codec":"walloc-image-16x","weights_hash":"","modality":"image","shape":[3,"metadata":{"mode":"RGB",'
    b'"bit_depth":8,"format":"PNG","source":".png","walloc":{"mode":"RGB","latent":[,"digest":""}},'
    b'"sections":[["g0",],["g1",],["g2",],["g3",],["g4",],["g5",],["g6",],["g7",],["g8",],["g9",],["g10",],'
    b'["g11",],["g12",],["g13",],["g14",],["g15",],["g16",],["g17",],["g18",],["g19",],["g20",'
)

_PREFIX = struct.Struct("<4sHI")  # magic, version, header length
_CRC = struct.Struct("<I")
_MIN_SIZE = _PREFIX.size + 2 + _CRC.size  # the smallest header is "{}"

# Sane limits, checked before anything is allocated or trusted.
MAX_HEADER_BYTES = 1 << 20
MAX_SECTIONS = 256
MAX_SECTION_NAME = 64
MAX_NDIM = 8
MAX_NUMEL = 1 << 40
MAX_JSON_DEPTH = 16

_SECTION_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,%d}" % MAX_SECTION_NAME)
_MODALITY = re.compile(r"[a-z0-9_\-]{1,32}")
_CODEC_NAME = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
_HASH = re.compile(r"[0-9a-f]{0,64}")
_HEADER_KEYS = ("codec", "weights_hash", "modality", "shape", "metadata", "sections")

PathLike = Union[str, os.PathLike]


@dataclass
class Container:
    """One compressed item: who made it, what it was, and its named byte sections.

    ``shape`` is the original media shape, e.g. ``(C, H, W)``, ``(C, T)`` or
    ``(C, T, H, W)``; ``metadata`` holds JSON-able extras (sample rate, fps, bit depth,
    mode); ``sections`` maps names ("latent", "escapes", "side") to bytes, in order.

    >>> c = Container("walloc-image-16x", "0123456789abcdef", "image", (3, 8, 8))
    >>> c.sections["latent"] = b"..."
    >>> Container.from_bytes(c.to_bytes()).sections
    {'latent': b'...'}
    """

    codec: str
    weights_hash: str
    modality: str
    shape: tuple[int, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shape = tuple(self.shape)

    def to_bytes(self) -> bytes:
        """Serialize to the binary layout of the module docstring.

        Raises ``ValueError`` (not :class:`BitstreamError`) when a field breaks the
        format's limits, so a writer never produces a file its reader rejects.
        """
        try:
            header = _header_dict(self)
            _validate_header(header)
        except BitstreamError as e:  # the same checks as the reader, reported as a caller error
            raise ValueError(f"cannot write container: {e}") from None
        payload = [bytes(self.sections[name]) for name in self.sections]
        header_json = json.dumps(header, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
        if len(header_json) > MAX_HEADER_BYTES:
            raise ValueError(f"cannot write container: header is {len(header_json)} bytes, limit {MAX_HEADER_BYTES}")
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=HEADER_DICTIONARY)
        header_bytes = deflate.compress(header_json) + deflate.flush()
        body = b"".join([_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)), header_bytes, *payload])
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, blob: bytes | bytearray | memoryview) -> "Container":
        """Parse and validate a container; :class:`BitstreamError` on anything malformed."""
        view = _as_view(blob)
        header, header_end = _parse_prefix_and_header(view, check_crc=True)
        sections: dict[str, bytes] = {}
        pos = header_end
        for name, length in header["sections"]:
            sections[name] = bytes(view[pos : pos + length])
            pos += length
        return cls(
            codec=header["codec"],
            weights_hash=header["weights_hash"],
            modality=header["modality"],
            shape=tuple(header["shape"]),
            metadata=header["metadata"],
            sections=sections,
        )


def write_container(path: PathLike, container: Container) -> None:
    """Write ``container`` to ``path`` atomically (temp file in the same folder, then rename).

    On any failure no file (partial or temporary) is left behind, and an existing
    file at ``path`` is untouched.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> write_container(os.path.join(d, "x.ncf"), Container("demo", "", "audio", (1, 16)))
    >>> read_container(os.path.join(d, "x.ncf")).modality
    'audio'
    """
    data = container.to_bytes()  # validate fully before touching the file system
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def read_container(path: PathLike) -> Container:
    """Read and validate an ``.ncf`` file.

    Raises :class:`BitstreamError` (with the path in the message) for a malformed,
    truncated, corrupted or foreign file; ``OSError`` if the file cannot be read at all.
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return Container.from_bytes(data)
    except BitstreamError as e:
        raise BitstreamError(f"{path}: {e}") from None


def peek(blob_or_path: bytes | bytearray | memoryview | PathLike) -> dict[str, Any]:
    """Header information for ``codec info``, without building the section bytes.

    Returns ``format_version``, ``codec``, ``weights_hash``, ``modality``, ``shape``,
    ``metadata``, ``sections`` (name -> byte length), ``header_bytes``, ``total_bytes``
    and ``crc_ok``. The prefix and header are validated as in :meth:`Container.from_bytes`
    (a :class:`BitstreamError` otherwise), but a CRC mismatch is reported in ``crc_ok``
    instead of raised, so a damaged file can still be described.

    >>> info = peek(Container("demo", "ab", "image", (3, 2, 2), sections={"latent": b"xyz"}).to_bytes())
    >>> info["codec"], info["sections"], info["crc_ok"]
    ('demo', {'latent': 3}, True)
    """
    if isinstance(blob_or_path, (bytes, bytearray, memoryview)):
        view = _as_view(blob_or_path)
        where = ""
    else:
        where = f"{Path(blob_or_path)}: "
        with open(blob_or_path, "rb") as f:
            view = memoryview(f.read())
    try:
        header, header_end = _parse_prefix_and_header(view, check_crc=False)
    except BitstreamError as e:
        raise BitstreamError(f"{where}{e}") from None
    (stored_crc,) = _CRC.unpack(view[len(view) - _CRC.size :])
    return {
        "format_version": _PREFIX.unpack(view[: _PREFIX.size])[1],
        "codec": header["codec"],
        "weights_hash": header["weights_hash"],
        "modality": header["modality"],
        "shape": tuple(header["shape"]),
        "metadata": header["metadata"],
        "sections": {name: length for name, length in header["sections"]},
        "header_bytes": header_end - _PREFIX.size,
        "total_bytes": len(view),
        "crc_ok": zlib.crc32(view[: len(view) - _CRC.size]) == stored_crc,
    }


# -- parsing --------------------------------------------------------------------------------


def _as_view(blob: Any) -> memoryview:
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(blob).__name__}")
    view = memoryview(blob)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def _parse_prefix_and_header(view: memoryview, check_crc: bool) -> tuple[dict[str, Any], int]:
    """Validate everything but (optionally) the CRC; return the header and where sections start."""
    n = len(view)
    if n < 4 or bytes(view[:4]) != MAGIC:
        raise BitstreamError("not an .ncf file (bad magic)")
    if n < _MIN_SIZE:
        raise BitstreamError(f"truncated .ncf file ({n} bytes)")
    _, version, header_len = _PREFIX.unpack(view[: _PREFIX.size])
    if version > FORMAT_VERSION:
        raise BitstreamError(
            f".ncf format version {version} was made by a newer neuralcodec "
            f"(this one reads version {FORMAT_VERSION}); upgrade neuralcodec"
        )
    if version < 1:
        raise BitstreamError(f"invalid .ncf format version {version}")
    if header_len < 2 or header_len > MAX_HEADER_BYTES:
        raise BitstreamError(f"invalid header length {header_len} (limit {MAX_HEADER_BYTES})")
    header_end = _PREFIX.size + header_len
    if header_end + _CRC.size > n:
        raise BitstreamError(f"truncated .ncf file: header claims {header_len} bytes, file has {n}")
    if check_crc:
        (stored_crc,) = _CRC.unpack(view[n - _CRC.size :])
        if zlib.crc32(view[: n - _CRC.size]) != stored_crc:
            raise BitstreamError("corrupted or truncated .ncf file (CRC32 mismatch)")
    raw = bytes(view[_PREFIX.size : header_end])
    header = _decode_json(_inflate_header(raw) if version >= 2 else raw)
    _validate_header(header)
    payload = sum(length for _, length in header["sections"])
    if header_end + payload + _CRC.size != n:
        raise BitstreamError(
            f"section lengths add up to {payload} bytes but the file holds {n - header_end - _CRC.size}"
        )
    return header, header_end


def _inflate_header(raw: bytes) -> bytes:
    """The JSON of a version-2 header: bounded inflate that must end exactly at the header's end."""
    inflate = zlib.decompressobj(-15, zdict=HEADER_DICTIONARY)
    try:
        text = inflate.decompress(raw, MAX_HEADER_BYTES + 1)
    except zlib.error as e:
        raise BitstreamError(f"header is not valid deflate data: {e}") from None
    if len(text) > MAX_HEADER_BYTES:
        raise BitstreamError(f"header inflates to more than {MAX_HEADER_BYTES} bytes")
    if not inflate.eof or inflate.unused_data:
        raise BitstreamError("header deflate stream is truncated or has trailing bytes")
    return text


def _reject_constant(name: str) -> Any:
    raise BitstreamError(f"header JSON contains {name}")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise BitstreamError("header JSON has duplicate keys")
    return obj


def _decode_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_object)
    except BitstreamError:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, huge ints
        raise BitstreamError(f"header is not valid UTF-8 JSON: {str(e)[:200]}") from None


def _check_json_value(value: Any, depth: int, where: str) -> None:
    if depth > MAX_JSON_DEPTH:
        raise BitstreamError(f"{where} is nested deeper than {MAX_JSON_DEPTH}")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BitstreamError(f"{where} holds a non-finite number")
        return
    if isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BitstreamError(f"{where} has a non-string key")
            _check_json_value(item, depth + 1, where)
        return
    raise BitstreamError(f"{where} holds a {type(value).__name__}, which is not JSON")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _header_dict(c: Container) -> dict[str, Any]:
    if not isinstance(c.sections, dict):
        raise BitstreamError("sections must be a dict of name -> bytes")
    for name, data in c.sections.items():
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BitstreamError(f"section {name!r} is {type(data).__name__}, not bytes")
    return {
        "codec": c.codec,
        "weights_hash": c.weights_hash,
        "modality": c.modality,
        "shape": list(c.shape),
        "metadata": c.metadata,
        "sections": [[name, len(memoryview(data).cast("B"))] for name, data in c.sections.items()],
    }


def _validate_header(h: Any) -> None:
    """Check the header's keys, types and limits (the same rules for writing and reading)."""
    if not isinstance(h, dict):
        raise BitstreamError("header is not a JSON object")
    if set(h) != set(_HEADER_KEYS):
        missing = sorted(set(_HEADER_KEYS) - set(h))
        extra = sorted(set(h) - set(_HEADER_KEYS))
        raise BitstreamError(f"header keys wrong (missing {missing}, unexpected {extra[:8]})")
    if not isinstance(h["codec"], str) or not _CODEC_NAME.fullmatch(h["codec"]):
        raise BitstreamError("header 'codec' must be 1..128 printable ASCII characters")
    if not isinstance(h["weights_hash"], str) or not _HASH.fullmatch(h["weights_hash"]):
        raise BitstreamError("header 'weights_hash' must be 0..64 lowercase hex characters")
    if not isinstance(h["modality"], str) or not _MODALITY.fullmatch(h["modality"]):
        raise BitstreamError("header 'modality' must be 1..32 characters of [a-z0-9_-]")
    shape = h["shape"]
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise BitstreamError(f"header 'shape' must be a list of at most {MAX_NDIM} ints")
    numel = 1
    for d in shape:
        if not _is_int(d) or d < 1 or d > MAX_NUMEL:
            raise BitstreamError(f"header 'shape' has an invalid dimension {str(d)[:32]}")
        numel *= d
        if numel > MAX_NUMEL:
            raise BitstreamError("header 'shape' has more than 2**40 elements")
    if not isinstance(h["metadata"], dict):
        raise BitstreamError("header 'metadata' must be a JSON object")
    _check_json_value(h["metadata"], 1, "header 'metadata'")
    sections = h["sections"]
    if not isinstance(sections, list) or len(sections) > MAX_SECTIONS:
        raise BitstreamError(f"header 'sections' must be a list of at most {MAX_SECTIONS} entries")
    seen: set[str] = set()
    for entry in sections:
        if not isinstance(entry, list) or len(entry) != 2:
            raise BitstreamError("each section entry must be [name, length]")
        name, length = entry
        if not isinstance(name, str) or not _SECTION_NAME.fullmatch(name):
            raise BitstreamError(f"invalid section name (1..{MAX_SECTION_NAME} chars of [A-Za-z0-9_.-])")
        if name in seen:
            raise BitstreamError(f"duplicate section name {name!r}")
        seen.add(name)
        if not _is_int(length) or length < 0 or length > 1 << 48:
            raise BitstreamError(f"section {name!r} has an invalid length")
