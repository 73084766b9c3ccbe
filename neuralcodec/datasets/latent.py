"""``LatentDataset``: batches of entropy-decoded latents (and labels) from packed shards.

Training on a compressed dataset stops the decoder after entropy decoding: no synthesis
network runs, so a batch costs a few tensor passes of the entropy model over small
latents instead of decoding and resizing full images.

The dataset is a :class:`torch.utils.data.IterableDataset` that yields whole batches
(decoded together, in one pass of the entropy model per coding stage), so give it to a
``DataLoader`` with ``batch_size=None``::

    ds = LatentDataset("shards/", batch_size=256, shuffle=True)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    for batch in loader:
        batch["latent"], batch["label"]     # (B, C, h, w) float, (B,) int64

Items are split across ``DataLoader`` workers (and across ``rank``/``world_size`` for
data-parallel training) by whole batches of one shared, seeded order, so every item is
seen exactly once per epoch.

>>> import tempfile, torch
>>> from neuralcodec.codecs.walloc import WaLLoC
>>> from neuralcodec.datasets.shards import pack
>>> codec = WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1, context_levels=2, context_hidden=8).eval()
>>> d = tempfile.mkdtemp()
>>> _ = pack([(torch.rand(3, 16, 16), i) for i in range(5)], d, model=codec, shard_size=2, progress=False)
>>> ds = LatentDataset(d, model=codec, batch_size=4)
>>> [(tuple(b["latent"].shape), b["label"].tolist()) for b in ds]
[((4, 4, 4, 4), [0, 1, 2, 3]), ((1, 4, 4, 4), [4])]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import BitstreamError
from .shards import PathLike, parse_label, read_index, shard_members

__all__ = ["LatentDataset", "decode_latents", "decode_media"]


def decode_latents(codec: Any, blobs: Sequence[bytes], device: str | torch.device | None = None) -> list[torch.Tensor]:
    """Entropy-decode many ``.ncf`` blobs to latents, batched where the codec allows it.

    For WaLLoC images, all items with the same latent size are decoded together, stage by
    stage; for WaLLoC audio, all coded chunks (of every stereo pair of every file) with the
    same latent length are, and each file's chunks are then joined as ``codec.latents`` does. With an exact entropy model (``codec.entropy.batch_exact``, e.g. the
    ``channel_checkerboard`` model of ``walloc-image-16x``) each stage is one pass of its net
    over the whole batch and one rANS call over all items' lanes; with the older
    hierarchical model the nets run one item at a time (their float outputs depend on the
    batch size) and only the rANS calls are batched. Other codecs decode item by item with
    ``codec.latents``. The result equals ``codec.latents(blob)`` for every blob.

    >>> import torch
    >>> from neuralcodec.codecs.walloc import WaLLoC
    >>> codec = WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1, context_levels=2, context_hidden=8).eval()
    >>> blobs = codec.compress(torch.rand(3, 3, 16, 16))
    >>> all(torch.equal(a, codec.latents(b)) for a, b in zip(decode_latents(codec, blobs), blobs))
    True
    """
    from ..codecs.walloc import WaLLoC
    from ..codecs.walloc_audio import WaLLoCAudio

    device = torch.device(device) if device is not None else codec.device
    if type(codec) is WaLLoCAudio:
        return _decode_audio_latents(codec, blobs, device)
    if type(codec) is not WaLLoC:  # other subclasses (video) lay out their files differently
        return [codec.latents(b).to(device) for b in blobs]
    out: list[torch.Tensor | None] = [None] * len(blobs)
    groups: dict[tuple[int, ...], list[tuple[int, list[bytes], str]]] = {}
    for i, blob in enumerate(blobs):
        # WaLLoC's own validation of a file (model identity, shapes, metadata, sections):
        # the same checks as codec.latents, before any stream is decoded.
        streams, size, digest, _, _ = codec.latent_streams(blob)
        groups.setdefault(size, []).append((i, streams, digest))
    exact = getattr(codec.entropy, "batch_exact", False)
    with torch.no_grad():
        for size, members in groups.items():
            streams = [m[1] for m in members]
            digests = [m[2] for m in members]
            if exact:
                q = codec.entropy.decompress(streams, size, digests, device=device)
            else:
                q = _decompress_item_nets(codec.entropy, streams, size, digests, device)
            for (i, _, _), latent in zip(members, q):
                out[i] = latent
    return out  # type: ignore[return-value]


_AUDIO_POSITIONS_PER_CALL = 1 << 18  # latent positions (x C_lat channels) per batched audio decode


def _decode_audio_latents(codec: Any, blobs: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """:func:`decode_latents` for :class:`~neuralcodec.codecs.walloc_audio.WaLLoCAudio` files.

    A file is coded as chunks x stereo pairs, each an independent latent ``(C_lat, n)`` with
    its own rANS streams and index digest. All of them, across files, are grouped by ``n``
    (1 s clips of similar length share one group) and each group is decoded in one call:
    one pass of the nets and one rANS call per stage with an exact entropy model, nets item
    by item otherwise. Each file's chunks are then stacked by pair and joined with the
    codec's own ``_stitch`` (the gains are not applied: ``latents`` are gain-normalized).
    """
    opened = [codec._open(blob) for blob in blobs]  # the same checks as codec.latents, first
    # (file, chunk, pair, streams, digest) of every coded latent, grouped by latent length.
    groups: dict[int, list[tuple[int, int, int, list[bytes], str]]] = {}
    chunks: list[list[list[torch.Tensor | None]]] = []
    for i, (c, info) in enumerate(opened):
        pairs, stages, data = info["pairs"], info["stages"], c.sections["data"]
        offsets = np.concatenate([[0], np.cumsum(info["lengths"])])
        chunks.append([[None] * pairs for _ in info["plan"]])
        for k, (_, length) in enumerate(info["plan"]):
            for p in range(pairs):
                base = (k * pairs + p) * stages
                streams = [data[offsets[j]:offsets[j + 1]] for j in range(base, base + stages)]
                groups.setdefault(length // codec.multiple, []).append((i, k, p, streams, info["digests"][k * pairs + p]))
    exact = getattr(codec.entropy, "batch_exact", False)
    with torch.no_grad():
        for n, group in groups.items():
            # Long files have many full chunks (4,096 latent positions each for the shipped
            # model): bound the positions decoded together, hence the nets' memory.
            step = max(1, _AUDIO_POSITIONS_PER_CALL // n)
            for start in range(0, len(group), step):
                members = group[start:start + step]
                streams = [m[3] for m in members]
                digests = [m[4] for m in members]
                if exact:
                    q = codec.entropy.decompress(streams, (n,), digests, device=device)
                else:
                    q = _decompress_item_nets(codec.entropy, streams, (n,), digests, device)
                for (i, k, p, _, _), latent in zip(members, q):
                    chunks[i][k][p] = latent
    return [codec._stitch([torch.stack(pairs) for pairs in item], info["coded_frames"]).to(device)  # type: ignore[misc]
            for item, (_, info) in zip(chunks, opened)]


def _decompress_item_nets(entropy: Any, streams: list[list[bytes]], size: tuple[int, ...], digests: list[str],
                          device: torch.device) -> torch.Tensor:
    """WaLLoC's ``HierarchicalContextModel.decompress`` with the context nets run item by item.

    The rANS streams of all items of a stage are still decoded in one batch, but each item's
    means and scales come from a batch-of-one pass of the nets, exactly as when the item was
    encoded or is decoded alone: CPU convolutions round differently for other batch sizes
    (~1e-6 here), enough to flip a table index and fail the decode.
    """
    from ..codecs.walloc import LATENT_LIMIT
    from ..entropy import rans
    from ..entropy.tables import tensor_hash

    tables = entropy._tables()
    stages = entropy.stages(size, device)
    if any(len(s) != len(stages) for s in streams):
        raise BitstreamError(f"expected {len(stages)} latent streams per item")
    q = torch.zeros((len(streams), entropy.channels, *size), device=device)
    used: list[list[torch.Tensor]] = [[] for _ in streams]
    for i, (mask, _, (a, b)) in enumerate(stages):
        idx, centre = [], []
        for n in range(len(streams)):
            mean, scale = entropy.params(q[n : n + 1], i, stages)
            sel = (slice(None), slice(None), mask)
            idx_n, centre_n = entropy._indexes(mean[sel], scale[sel])
            idx.append(idx_n[0].cpu())
            centre.append(centre_n[0])
        sym = rans.decode_batch([s[i] for s in streams], idx, tables)
        values = torch.stack(sym).long().to(device) + torch.stack(centre)
        if bool((values.abs() > LATENT_LIMIT).any()):
            raise BitstreamError("latent value out of range: corrupted stream")
        view = q[:, a:b]
        view[(slice(None), slice(None), mask)] = values.to(q.dtype)
        for n in range(len(streams)):
            used[n].append(idx[n])
    for n, d in enumerate(digests):
        if tensor_hash(*used[n]) != d:
            raise BitstreamError("the entropy model's table indexes differ from the encoder's; cannot decode reliably")
    return q


def decode_media(codec: Any, blobs: Sequence[bytes], latents: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Media of ``blobs`` from their already decoded ``latents`` (no second entropy decode).

    For WaLLoC, same-size RGB and gray images run the synthesis network as one batch; other
    cases use ``codec.decompress``. Matches ``codec.decompress(blob)`` up to float rounding.
    """
    from ..codecs.walloc import WaLLoC
    from ..entropy.container import Container

    out: list[torch.Tensor | None] = [None] * len(blobs)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, blob in enumerate(blobs):
        if type(codec) is WaLLoC:
            c = Container.from_bytes(blob)
            mode = c.metadata.get("walloc", {}).get("mode")
            if mode in ("RGB", "L"):
                groups.setdefault((tuple(latents[i].shape), tuple(c.shape), mode), []).append(i)
                continue
        with torch.no_grad():
            out[i] = codec.decompress(blob)
    with torch.no_grad():
        for (_, (_, h, w), mode), members in groups.items():
            rgb = codec.synthesis(torch.stack([latents[i] for i in members]).to(codec.device)).clamp(0, 1)
            rgb = rgb[:, :, :h, :w]
            for i, image in zip(members, rgb):
                out[i] = image.mean(0, keepdim=True) if mode == "L" else image
    return out  # type: ignore[return-value]


def _stack_or_list(tensors: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    if tensors and all(t.shape == tensors[0].shape for t in tensors):
        return torch.stack(tensors)
    return tensors


class LatentDataset(IterableDataset):
    """Batches of entropy-decoded latents, labels and keys read from a packed folder.

    Args:
        path: a folder written by :func:`neuralcodec.datasets.pack` (``index.json`` + shards).
        model: the codec (name, path or :class:`Codec`); default: the model named in the index.
        batch_size: items per yielded batch (decoded together).
        shuffle: a new seeded order every epoch (see :meth:`set_epoch`); else packing order.
        seed: seed of the shuffle.
        drop_last: drop the last, smaller batch of each rank.
        device: where latents are decoded and returned. ``"auto"``: CUDA when there is a GPU
            and the dataset is read in the main process, else the CPU (DataLoader workers
            decode on the CPU). An explicit ``"cuda"`` needs ``num_workers=0``.
        return_media: also decode the media (synthesis network) as ``batch["media"]``.
        rank, world_size: the share of the items this process reads (data-parallel).
        verify: check each shard's size and item count against the index on open.

    Each batch is a dict: ``latent`` (``(B, C, ...)`` float; a list when sizes differ),
    ``label`` (``(B,)`` int64, ``-1`` for unlabelled items), ``index`` (``(B,)`` item
    numbers), ``key`` (list of str) and, with ``return_media``, ``media``.

    >>> import tempfile, torch
    >>> from torch.utils.data import DataLoader
    >>> from neuralcodec.codecs.walloc import WaLLoC
    >>> from neuralcodec.datasets.shards import pack
    >>> codec = WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1, context_levels=2, context_hidden=8).eval()
    >>> d = tempfile.mkdtemp()
    >>> _ = pack([(torch.rand(3, 16, 16), i) for i in range(6)], d, model=codec, shard_size=4, progress=False)
    >>> loader = DataLoader(LatentDataset(d, model=codec, batch_size=2, shuffle=True), batch_size=None)
    >>> sorted(i for b in loader for i in b["index"].tolist())
    [0, 1, 2, 3, 4, 5]
    """

    def __init__(
        self,
        path: PathLike,
        model: Any = None,
        batch_size: int = 64,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: str | torch.device = "auto",
        return_media: bool = False,
        rank: int = 0,
        world_size: int = 1,
        verify: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.root = Path(path)
        self.index = read_index(self.root)
        self.classes: list[str] | None = self.index.get("classes")
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self._device_spec = device if device == "auto" else torch.device(device)
        self.return_media = return_media
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._model_spec = model if model is not None else self.index["codec"]
        self._codec: Any = None
        self._model_given = not isinstance(self._model_spec, (str, os.PathLike))
        # Item table from the tar headers: shard number, .ncf (offset, size), label.
        shard_of, ncf_offset, ncf_size, labels, keys = [], [], [], [], []
        for s, entry in enumerate(self.index["shards"]):
            members = shard_members(self.root / entry["name"], entry if verify else None)
            with open(self.root / entry["name"], "rb") as f:
                for key in sorted(members):
                    parts = members[key]
                    shard_of.append(s)
                    keys.append(key)
                    ncf_offset.append(parts[".ncf"][0])
                    ncf_size.append(parts[".ncf"][1])
                    if ".cls" in parts:
                        f.seek(parts[".cls"][0])
                        labels.append(parse_label(f.read(parts[".cls"][1]), f"{entry['name']}:{key}"))
                    else:
                        labels.append(-1)
        self._shard = np.asarray(shard_of, dtype=np.int64)
        self._offset = np.asarray(ncf_offset, dtype=np.int64)
        self._size = np.asarray(ncf_size, dtype=np.int64)
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.keys: list[str] = keys
        self._files: dict[int, Any] = {}
        self._pid = os.getpid()

    # -- sizes and order ---------------------------------------------------------------
    @property
    def num_items(self) -> int:
        """Items in the whole packed dataset."""
        return len(self._shard)

    def _rank_items(self) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)
        else:
            order = np.arange(self.num_items)
        # Equal shares per rank (the tail is dropped only across ranks, as DistributedSampler pads).
        if self.world_size > 1:
            per = self.num_items // self.world_size
            order = order[self.rank * per : (self.rank + 1) * per]
        return order

    def _batches(self) -> list[np.ndarray]:
        order = self._rank_items()
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __len__(self) -> int:
        """Batches per epoch for this rank (all DataLoader workers together)."""
        return len(self._batches())

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order of ``epoch`` (call before iterating, as with DistributedSampler)."""
        self.epoch = int(epoch)

    # -- reading -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device latents are decoded on, in this process."""
        in_worker = get_worker_info() is not None
        if self._device_spec == "auto":
            return torch.device("cuda" if torch.cuda.is_available() and not in_worker else "cpu")
        if self._device_spec.type == "cuda" and in_worker:
            raise RuntimeError("LatentDataset(device='cuda') decodes in the main process: use DataLoader(num_workers=0) "
                               "or device='auto' (CPU in workers)")
        return self._device_spec

    @property
    def codec(self) -> Any:
        if self._codec is not None and self._codec.device != self.device and not self._model_given:
            self._codec = None  # e.g. loaded on the GPU in the main process, now read in a CPU worker
        if self._codec is None:
            from .shards import _resolve_codec

            self._codec = _resolve_codec(self._model_spec, self.device)
            if self._codec.weights_hash() != self.index["weights_hash"]:
                raise BitstreamError(
                    f"{self.root}: packed with weights {self.index['weights_hash']}, model has {self._codec.weights_hash()}"
                )
        return self._codec

    def _file(self, shard: int) -> Any:
        if self._pid != os.getpid():  # a forked worker: never share file offsets with the parent
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            self._files[shard] = open(self.root / self.index["shards"][shard]["name"], "rb")
        return self._files[shard]

    def blob(self, item: int) -> bytes:
        """The ``.ncf`` bytes of item number ``item``."""
        f = self._file(int(self._shard[item]))
        f.seek(int(self._offset[item]))
        data = f.read(int(self._size[item]))
        if len(data) != int(self._size[item]):
            raise BitstreamError(f"{self.root}: item {item} is truncated in its shard")
        return data

    def batch(self, items: Sequence[int]) -> dict[str, Any]:
        """Decode the given item numbers as one batch (the dict described in the class doc)."""
        items = [int(i) for i in items]
        blobs = [self.blob(i) for i in items]
        latents = decode_latents(self.codec, blobs, self.device)
        out: dict[str, Any] = {
            "latent": _stack_or_list(latents),
            "label": self.labels[items],
            "index": torch.tensor(items, dtype=torch.int64),
            "key": [self.keys[i] for i in items],
        }
        if self.return_media:
            out["media"] = _stack_or_list(decode_media(self.codec, blobs, latents))
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        batches = self._batches()
        info = get_worker_info()
        if info is not None:  # each worker takes every num_workers-th batch of one shared order
            batches = batches[info.id :: info.num_workers]
        for items in batches:
            yield self.batch(items)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = {}  # open files do not travel to worker processes
        return state
