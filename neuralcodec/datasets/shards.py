"""Compressed datasets: ``.ncf`` bitstreams packed into WebDataset-style tar shards.

Layout of a packed folder::

    shards/
      index.json            what was packed, with what model, and the finished shards
      shard-00000.tar       items 0 .. shard_size-1
      shard-00001.tar       ...

Each shard is a plain POSIX (ustar) tar file whose members are grouped by key, the
`WebDataset <https://github.com/webdataset/webdataset>`_ convention::

    000000000.ncf    the item's .ncf container (see neuralcodec.entropy.container)
    000000000.cls    its integer class label as ASCII text (only when the item has one)
    000000000.json   its metadata: source path, class name, the caller's metadata

Why tar shards: ``tar tf`` / ``tar xf`` inspect and extract them with no extra software,
WebDataset, torchdata and Hugging Face ``datasets`` ("webdataset" builder) read them as
they are, they stream sequentially from object stores, and a few large files beat
millions of small ones on every file system. Members are written deterministically
(sorted keys, zero mtime/uid/gid, fixed mode), so the same input and model give
byte-identical shards whether packed in one process or on a distributed engine.

Crash safety: a shard is written as ``shard-NNNNN.tar.tmp`` and renamed only when
complete; ``index.json`` is replaced atomically after every finished shard and lists
each shard with its item count, size and SHA-256. Readers only open shards listed in
the index, so an interrupted run never exposes a half-written shard, and ``pack(...,
resume=True)`` continues after the last finished shard (items are numbered in a
deterministic order, so the resumed result equals an uninterrupted run).

>>> import tempfile, torch
>>> from neuralcodec.codecs.walloc import WaLLoC
>>> codec = WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1, context_levels=2, context_hidden=8).eval()
>>> out = tempfile.mkdtemp()
>>> items = [(torch.rand(3, 16, 16), i % 2) for i in range(5)]
>>> index = pack(items, out, model=codec, shard_size=2, progress=False)
>>> index["items"], [s["items"] for s in index["shards"]]
(5, [2, 2, 1])
>>> [(r.key, r.label) for r in read_shard(out, index["shards"][2])]
[('000000004', 0)]
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

import torch

from ..errors import BitstreamError, MediaError, NeuralCodecError

__all__ = [
    "SHARD_FORMAT",
    "INDEX_NAME",
    "ShardRecord",
    "pack",
    "unpack",
    "read_index",
    "read_shard",
    "shard_members",
    "list_media_folder",
]

SHARD_FORMAT = "neuralcodec-shards"
SHARD_VERSION = 1
INDEX_NAME = "index.json"
KEY_DIGITS = 9  # keys are the item number, zero-padded: sorting keys sorts items
_SHARD_NAME = re.compile(r"shard-\d{5,}\.tar")
_KEY = re.compile(r"\d{%d}" % KEY_DIGITS)
_MEMBER_SUFFIXES = (".ncf", ".cls", ".json")
MAX_MEMBER_BYTES = 1 << 31  # a sanity bound on one member before it is read into memory

PathLike = Union[str, os.PathLike]


@dataclass
class ShardRecord:
    """One packed item: its key, ``.ncf`` bytes, optional label and metadata."""

    key: str
    blob: bytes
    label: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Item:
    """One item to encode: a media path or tensor, with its label and metadata."""

    media: Any  # Path or Tensor (C, H, W) in [0, 1]
    label: int | None
    metadata: dict[str, Any]


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


def list_media_folder(root: PathLike, labels_from_dirs: bool = False) -> tuple[list[tuple[str, int | None]], list[str] | None]:
    """Media files under ``root`` (relative POSIX paths, sorted) and their labels.

    With ``labels_from_dirs`` the first folder under ``root`` names the class (the
    ImageFolder convention); classes are numbered in sorted order.

    >>> import tempfile, os, torch
    >>> from neuralcodec.datasets.media import write_image
    >>> d = tempfile.mkdtemp()
    >>> for p in ("cat/a.png", "dog/b.png", "cat/c.png"):
    ...     os.makedirs(os.path.dirname(os.path.join(d, p)), exist_ok=True)
    ...     write_image(os.path.join(d, p), torch.rand(3, 4, 4))
    >>> list_media_folder(d, labels_from_dirs=True)
    ([('cat/a.png', 0), ('cat/c.png', 0), ('dog/b.png', 1)], ['cat', 'dog'])
    """
    from .media import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES

    root = Path(root)
    if not root.is_dir():
        raise MediaError(f"{root}: not a folder")
    suffixes = {s.lower() for s in IMAGE_SUFFIXES + AUDIO_SUFFIXES + VIDEO_SUFFIXES}
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise MediaError(f"{root}: no media files found")
    if not labels_from_dirs:
        return [(f, None) for f in files], None
    loose = [f for f in files if "/" not in f]
    if loose:
        raise MediaError(f"{root}: labels from folders need every file inside a class folder; {loose[0]!r} is not")
    classes = sorted({f.split("/", 1)[0] for f in files})
    number = {c: i for i, c in enumerate(classes)}
    return [(f, number[f.split("/", 1)[0]]) for f in files], classes


def _as_item(obj: Any, position: int) -> _Item:
    """Normalise one element of an iterable source to an :class:`_Item`."""
    if isinstance(obj, _Item):
        return obj
    label: Any = None
    metadata: dict[str, Any] = {}
    if isinstance(obj, dict):
        media, label, metadata = obj.get("media"), obj.get("label"), dict(obj.get("metadata") or {})
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        media, extra = obj
        if isinstance(extra, dict):
            metadata = dict(extra)
            label = metadata.pop("label", None)
        else:
            label = extra
    else:
        media = obj
    if isinstance(label, torch.Tensor) and label.numel() == 1:
        label = label.item()
    if isinstance(label, str):
        metadata.setdefault("class", label)
        label = None
    rate = metadata.get("sample_rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= 10_000_000):
        raise ValueError(f"item {position}: sample_rate must be a positive int, got {rate!r}")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
        raise ValueError(f"item {position}: label must be an int (or a class name string), got {type(label).__name__}")
    if isinstance(media, (str, os.PathLike)):
        media = Path(media)
    elif isinstance(media, torch.Tensor):
        if media.dtype == torch.uint8:
            media = media.float() / 255.0
        if media.dim() not in (2, 3):
            raise ValueError(f"item {position}: media tensor must be (C, H, W) or (C, T), got shape {tuple(media.shape)}")
    else:
        raise ValueError(f"item {position}: media must be a path or a tensor, got {type(media).__name__}")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"item {position}: metadata must be JSON-serialisable ({e})") from None
    return _Item(media, label, metadata)


@dataclass
class _Source:
    """A pack source: items by position, how many (if known), classes, a fingerprint."""

    kind: str  # "folder" or "iterable"
    items: Callable[[int], Iterator[_Item]]  # items from a start position on
    total: int | None
    classes: list[str] | None
    fingerprint: str | None
    sequence: Sequence[Any] | None = None  # the items by position, when random access is possible


def _open_source(source: Any, labels_from_dirs: bool) -> _Source:
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        files, classes = list_media_folder(root, labels_from_dirs)
        listing = json.dumps([files, classes]).encode()
        items = [
            _Item(root / rel, label, {"path": rel, **({"class": classes[label]} if classes and label is not None else {})})
            for rel, label in files
        ]
        return _Source("folder", lambda start: iter(items[start:]), len(items), classes,
                       hashlib.sha256(listing).hexdigest()[:16], items)
    if labels_from_dirs:
        raise ValueError("labels_from_dirs applies to a folder source only")
    if isinstance(source, Sequence) or (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
        seq = source

        def from_start(start: int) -> Iterator[_Item]:
            for i in range(start, len(seq)):
                yield _as_item(seq[i], i)

        return _Source("iterable", from_start, len(seq), None, None, _LazyItems(seq))

    def from_iter(start: int) -> Iterator[_Item]:
        # A plain iterable has no random access: re-iterate and skip (without encoding).
        for i, obj in enumerate(itertools.islice(iter(source), start, None), start):
            yield _as_item(obj, i)

    return _Source("iterable", from_iter, None, None, None)


class _LazyItems(Sequence):
    def __init__(self, seq: Any) -> None:
        self.seq = seq

    def __len__(self) -> int:
        return len(self.seq)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return _as_item(self.seq[i], i)


# ----------------------------------------------------------------------------------------------
# Encoding and shard writing (shared by the single-process and the distributed paths)
# ----------------------------------------------------------------------------------------------


def _load_item(item: _Item) -> tuple[torch.Tensor, dict[str, Any]]:
    """Media tensor and the metadata that goes into the container (source name excluded)."""
    if isinstance(item.media, Path):
        from .media import read_media

        media = read_media(item.media)
        meta = {k: v for k, v in media.metadata.items() if k != "source"}
        return media.data, meta
    # An audio tensor's rate comes from the item's metadata (else the codec assumes its own).
    rate = item.metadata.get("sample_rate") if item.media.dim() == 2 else None
    return item.media, ({"sample_rate": rate} if rate is not None else {})


def encode_items(codec: Any, items: Sequence[_Item], first_index: int, batch_size: int = 1) -> list[ShardRecord]:
    """Encode ``items`` (numbered from ``first_index``) to shard records.

    Consecutive items with the same shape and container metadata are compressed as one
    batch of up to ``batch_size``; the grouping depends only on the items, so every
    packer (local or distributed) makes the same bytes.
    """
    records: list[ShardRecord] = []
    pending: list[tuple[int, _Item, torch.Tensor, dict[str, Any]]] = []

    def flush() -> None:
        if not pending:
            return
        x = torch.stack([p[2] for p in pending]).to(codec.device)
        with torch.inference_mode():
            blobs = codec.compress(x, metadata=pending[0][3]) if len(pending) > 1 else [codec.compress(x[0], metadata=pending[0][3])]
        for (number, item, _, _), blob in zip(pending, blobs):
            records.append(ShardRecord(f"{number:0{KEY_DIGITS}d}", bytes(blob), item.label, item.metadata))
        pending.clear()

    for offset, item in enumerate(items):
        data, meta = _load_item(item)
        if pending and (pending[0][2].shape != data.shape or pending[0][3] != meta or len(pending) >= batch_size):
            flush()
        pending.append((first_index + offset, item, data, meta))
    flush()
    return records


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0  # deterministic bytes: no clock, no user in the archive
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_shard(path: PathLike, records: Sequence[ShardRecord]) -> dict[str, Any]:
    """Write ``records`` as a tar shard at ``path`` (via ``path.tmp``, then rename).

    Returns the shard's index entry: ``{"name", "items", "bytes", "sha256"}``.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
                for r in sorted(records, key=lambda r: r.key):
                    members = [(".ncf", r.blob)]
                    if r.label is not None:
                        members.append((".cls", str(int(r.label)).encode()))
                    if r.metadata:
                        members.append((".json", json.dumps(r.metadata, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()))
                    for suffix, data in sorted(members):
                        tf.addfile(_tar_info(r.key + suffix, len(data)), io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        size = tmp.stat().st_size
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"name": path.name, "items": len(records), "bytes": size, "sha256": digest.hexdigest()}


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.tar"


# ----------------------------------------------------------------------------------------------
# Index
# ----------------------------------------------------------------------------------------------


def _write_index(out_dir: Path, index: dict[str, Any]) -> None:
    text = json.dumps(index, indent=1, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{INDEX_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_dir / INDEX_NAME)
        _fsync_dir(out_dir)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_index(path: PathLike) -> dict[str, Any]:
    """The validated ``index.json`` of a packed folder (or the index file itself).

    Raises :class:`BitstreamError` when it is missing, not ours, or inconsistent.
    """
    path = Path(path)
    index_path = path / INDEX_NAME if path.is_dir() else path
    if not index_path.is_file():
        raise BitstreamError(f"{path}: no {INDEX_NAME} (not a packed dataset, or packing never finished a shard)")
    try:
        if index_path.stat().st_size > 1 << 30:
            raise BitstreamError(f"{index_path}: index file too large")
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BitstreamError(f"{index_path}: unreadable index ({e})") from None
    if not isinstance(index, dict) or index.get("format") != SHARD_FORMAT:
        raise BitstreamError(f"{index_path}: not a {SHARD_FORMAT} index")
    if index.get("version") != SHARD_VERSION:
        raise BitstreamError(f"{index_path}: index version {index.get('version')!r}; this reader knows {SHARD_VERSION}")
    shards = index.get("shards")
    if not isinstance(shards, list):
        raise BitstreamError(f"{index_path}: 'shards' is not a list")
    total = 0
    for s in shards:
        ok = (
            isinstance(s, dict)
            and isinstance(s.get("name"), str)
            and _SHARD_NAME.fullmatch(s["name"]) is not None
            and all(isinstance(s.get(k), int) and not isinstance(s.get(k), bool) and s[k] >= 0 for k in ("items", "bytes"))
            and isinstance(s.get("sha256"), str)
        )
        if not ok:
            raise BitstreamError(f"{index_path}: malformed shard entry {s!r}")
        total += s["items"]
    if index.get("items") != total:
        raise BitstreamError(f"{index_path}: item count {index.get('items')!r} does not match the shards ({total})")
    classes = index.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise BitstreamError(f"{index_path}: malformed class list")
    return index


# ----------------------------------------------------------------------------------------------
# Reading shards
# ----------------------------------------------------------------------------------------------


def shard_members(path: PathLike, entry: dict[str, Any] | None = None) -> dict[str, dict[str, tuple[int, int]]]:
    """``{key: {suffix: (data offset, size)}}`` of a shard, from its tar headers only.

    ``entry`` (the shard's index entry) is checked: the file must have its recorded size.
    Raises :class:`BitstreamError` for a damaged or foreign tar file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise BitstreamError(f"{path}: cannot open shard ({e.strerror or e})") from None
    if entry is not None and size != entry["bytes"]:
        raise BitstreamError(f"{path}: shard is {size} bytes, the index says {entry['bytes']} (truncated or replaced)")
    members: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(path, mode="r:") as tf:
            for m in tf:
                if not m.isfile():
                    raise BitstreamError(f"{path}: unexpected non-file member {m.name!r}")
                key, dot, suffix = m.name.partition(".")
                suffix = dot + suffix
                if _KEY.fullmatch(key) is None or suffix not in _MEMBER_SUFFIXES:
                    raise BitstreamError(f"{path}: unexpected member {m.name!r}")
                if m.size > MAX_MEMBER_BYTES or m.offset_data + m.size > size:
                    raise BitstreamError(f"{path}: member {m.name!r} runs past the end of the file")
                if suffix in members.setdefault(key, {}):
                    raise BitstreamError(f"{path}: duplicate member {m.name!r}")
                members[key][suffix] = (m.offset_data, m.size)
    except tarfile.TarError as e:
        raise BitstreamError(f"{path}: damaged shard ({e})") from None
    except EOFError:
        raise BitstreamError(f"{path}: truncated shard") from None
    for key, parts in members.items():
        if ".ncf" not in parts:
            raise BitstreamError(f"{path}: item {key} has no .ncf member")
    if entry is not None and len(members) != entry["items"]:
        raise BitstreamError(f"{path}: shard holds {len(members)} items, the index says {entry['items']}")
    return members


def parse_label(raw: bytes, where: str) -> int:
    text = raw.decode("ascii", errors="replace").strip()
    if not re.fullmatch(r"-?\d{1,18}", text):
        raise BitstreamError(f"{where}: malformed .cls label {text[:20]!r}")
    return int(text)


def parse_metadata(raw: bytes, where: str) -> dict[str, Any]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BitstreamError(f"{where}: malformed .json metadata ({e})") from None
    if not isinstance(meta, dict):
        raise BitstreamError(f"{where}: .json metadata is not an object")
    return meta


def read_shard(root: PathLike, entry: dict[str, Any] | str, verify: bool = True) -> list[ShardRecord]:
    """All records of one shard of the packed folder ``root``, in key order.

    ``entry`` is the shard's index entry (or its name); with ``verify`` the SHA-256 of
    the whole file is checked against the index first.
    """
    root = Path(root)
    if isinstance(entry, str):
        matches = [s for s in read_index(root)["shards"] if s["name"] == entry]
        if not matches:
            raise BitstreamError(f"{root}: no shard {entry!r} in the index")
        entry = matches[0]
    path = root / entry["name"]
    members = shard_members(path, entry)
    with open(path, "rb") as f:
        if verify:
            digest = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
            if digest.hexdigest() != entry["sha256"]:
                raise BitstreamError(f"{path}: SHA-256 differs from the index (damaged shard)")
        records = []
        for key in sorted(members):
            parts = {}
            for suffix, (offset, size) in members[key].items():
                f.seek(offset)
                parts[suffix] = f.read(size)
            where = f"{path}:{key}"
            records.append(ShardRecord(
                key, parts[".ncf"],
                parse_label(parts[".cls"], where) if ".cls" in parts else None,
                parse_metadata(parts[".json"], where) if ".json" in parts else {},
            ))
    return records


# ----------------------------------------------------------------------------------------------
# pack
# ----------------------------------------------------------------------------------------------


def _resolve_codec(model: Any, device: str | torch.device | None = None) -> Any:
    from ..codecs.base import Codec

    if isinstance(model, Codec):
        return model.eval() if device is None else model.eval().to(device)
    from ..codecs.registry import load

    return load(model, device=device)


def _new_index(codec: Any, src: _Source, shard_size: int) -> dict[str, Any]:
    return {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "codec": codec.name,
        "weights_hash": codec.weights_hash(),
        "modality": codec.modality,
        "shard_size": shard_size,
        "source": {"kind": src.kind, "items": src.total, "fingerprint": src.fingerprint},
        "classes": src.classes,
        "shards": [],
        "items": 0,
        "complete": False,
    }


def _start(out_dir: Path, fresh: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The index to continue from: the existing one (checked) or ``fresh``.

    Removes temporary files of an interrupted run, so no reader or resumer sees them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for tmp in out_dir.glob("shard-*.tar.tmp"):
        tmp.unlink()
    if not (out_dir / INDEX_NAME).exists():
        # Shards with no index entry (a run that crashed between a rename and its index
        # write) are never trusted: they are rewritten under the same names.
        return fresh
    old = read_index(out_dir)
    if not resume:
        raise NeuralCodecError(f"{out_dir} already holds a packed dataset; resume it (resume=True) or use an empty folder")
    for key in ("codec", "weights_hash", "modality", "shard_size", "source", "classes"):
        if old.get(key) != fresh[key]:
            raise NeuralCodecError(
                f"{out_dir}: cannot resume: {key} was {old.get(key)!r}, now {fresh[key]!r} (use an empty folder)"
            )
    for s in old["shards"]:
        p = out_dir / s["name"]
        if not p.is_file() or p.stat().st_size != s["bytes"]:
            raise BitstreamError(f"{p}: finished shard missing or resized; cannot resume safely")
    return old


def _progress(total: int | None, initial: int, enabled: bool | None, desc: str) -> Any:
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, initial=initial, desc=desc, unit="item", file=sys.stderr, disable=disable, dynamic_ncols=True)


def pack(
    source: PathLike | Iterable[Any],
    out_dir: PathLike,
    model: Any = "walloc-image-16x",
    shard_size: int = 1000,
    *,
    resume: bool = True,
    labels_from_dirs: bool = False,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Encode a media folder or an iterable of items into tar shards of ``.ncf`` files.

    Args:
        source: a folder of media files (walked recursively, sorted), or an iterable whose
            elements are a media path or tensor ``(C, H, W)`` in [0, 1] (uint8 is scaled),
            ``(media, label)`` with an int label, ``(media, metadata_dict)`` (a ``"label"``
            key is taken as the label), or ``{"media", "label", "metadata"}``. Audio tensors
            ``(C, T)`` give their rate as ``metadata["sample_rate"]`` (default: the codec's).
        out_dir: the output folder (created); holds ``index.json`` and the shards.
        model: a shipped model name, a saved model path, or a :class:`Codec`.
        shard_size: items per shard.
        resume: continue an interrupted run in ``out_dir`` (the same source and model);
            with ``False`` an existing packed folder is an error.
        labels_from_dirs: the first folder under a folder ``source`` is the class.
        batch_size: images of one shape compressed together. Only for codecs that code a
            batch exactly as the items alone (every file must decode on its own); WaLLoC
            does (its context nets run item by item), but batches gain little on the CPU.
        device: where the encoder runs (default: the model's device).
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        The final index (also in ``out_dir/index.json``).

    >>> import tempfile, torch
    >>> from neuralcodec.codecs.walloc import WaLLoC
    >>> codec = WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1, context_levels=2, context_hidden=8).eval()
    >>> d = tempfile.mkdtemp()
    >>> pack([torch.rand(3, 16, 16) for _ in range(3)], d, model=codec, shard_size=2, progress=False)["complete"]
    True
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError("shard_size and batch_size must be >= 1")
    out_dir = Path(out_dir)
    codec = _resolve_codec(model, device)
    src = _open_source(source, labels_from_dirs)
    index = _start(out_dir, _new_index(codec, src, shard_size), resume)
    if index["complete"]:
        return index
    done = index["items"]
    bar = _progress(src.total, done, progress, f"pack {out_dir.name}")
    try:
        items = src.items(done)
        number = len(index["shards"])
        while True:
            chunk = list(itertools.islice(items, shard_size))
            if not chunk:
                break
            records = encode_items(codec, chunk, done, batch_size)
            entry = write_shard(out_dir / shard_name(number), records)
            index["shards"].append(entry)
            index["items"] = done = done + len(chunk)
            number += 1
            _write_index(out_dir, index)
            bar.update(len(chunk))
            if len(chunk) < shard_size:
                break
        index["complete"] = True
        if src.total is not None and index["items"] != src.total:
            raise NeuralCodecError(f"source had {index['items']} items, expected {src.total}")
        _write_index(out_dir, index)
    finally:
        bar.close()
    return index


# ----------------------------------------------------------------------------------------------
# unpack
# ----------------------------------------------------------------------------------------------

_DEFAULT_SUFFIX = {"image": ".png", "audio": ".wav", "video": ".mkv"}


def _safe_relative(path: Any) -> Path | None:
    """A stored relative path if it is harmless (no absolute path, no '..'), else None."""
    if not isinstance(path, str) or not path or len(path) > 1024 or "\\" in path or "\x00" in path:
        return None
    p = Path(path)
    if p.is_absolute() or any(part in ("", ".", "..") for part in p.parts):
        return None
    return p


def unpack(
    root: PathLike,
    out_dir: PathLike,
    model: Any = None,
    *,
    fmt: str | None = None,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> int:
    """Decode every item of a packed folder back to media files; returns the count.

    Files keep their packed relative path (``cat/a.png``) when one was stored, otherwise
    they are named by key; the suffix is ``fmt`` (default: png, wav or mkv).

    >>> import tempfile, torch, os
    >>> from neuralcodec.codecs.walloc import WaLLoC
    >>> codec = WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1, context_levels=2, context_hidden=8).eval()
    >>> d, o = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> _ = pack([torch.rand(3, 16, 16)], d, model=codec, progress=False)
    >>> unpack(d, o, model=codec, progress=False), sorted(os.listdir(o))
    (1, ['000000000.png'])
    """
    from .media import write_media

    root, out_dir = Path(root), Path(out_dir)
    index = read_index(root)
    codec = _resolve_codec(model if model is not None else index["codec"], device)
    suffix = "." + fmt.lstrip(".") if fmt else _DEFAULT_SUFFIX.get(index.get("modality"), ".png")
    count = 0
    bar = _progress(index["items"], 0, progress, f"unpack {root.name}")
    try:
        for entry in index["shards"]:
            for r in read_shard(root, entry):
                from ..entropy.container import Container

                container = Container.from_bytes(r.blob)
                rel = _safe_relative(r.metadata.get("path"))
                target = out_dir / (rel.with_suffix(suffix) if rel is not None else Path(r.key + suffix))
                target.parent.mkdir(parents=True, exist_ok=True)
                with torch.inference_mode():
                    data = codec.decompress(r.blob)
                write_media(target, data.cpu(), container.modality, container.metadata, overwrite=overwrite)
                count += 1
                bar.update(1)
    finally:
        bar.close()
    return count
