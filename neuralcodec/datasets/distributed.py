"""Distributed packing on Dask: the encoder mapped over shards in parallel.

The same shards as :func:`neuralcodec.datasets.pack` (byte for byte: the same item
numbering, shard boundaries, batching and tar writer), computed by Dask tasks, one task
per shard. Each task loads the model once per worker process, reads and encodes its
items and writes its shard (``.tmp`` then rename); the driver writes ``index.json``
after every wave of finished shards, so an interrupted run resumes like the local one.

Why Dask: it is a small pure-Python install, its local process scheduler needs no
cluster, and the same code runs on a multi-machine cluster unchanged: create a
``dask.distributed.Client`` (``pip install "dask[distributed]"``) and pass
``scheduler=client`` (the shards folder must then be on a shared file system).

>>> import tempfile, torch
>>> from neuralcodec.codecs.walloc import WaLLoC
>>> from neuralcodec.codecs.registry import save
>>> d = tempfile.mkdtemp()
>>> model = str(save(WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1,
...                         context_levels=2, context_hidden=8).eval(), d + "/tiny")) + ".json"
>>> items = [(torch.rand(3, 16, 16), i) for i in range(3)]
>>> pack_distributed(items, d + "/shards", model, shard_size=2, scheduler="sync", progress=False)["items"]
3
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import NeuralCodecError
from .shards import (
    PathLike,
    _new_index,
    _open_source,
    _progress,
    _resolve_codec,
    _start,
    _write_index,
    encode_items,
    shard_name,
    write_shard,
)

__all__ = ["pack_distributed"]

_WORKER_MODELS: dict[str, Any] = {}


def _worker_codec(model: str, threads: int | None) -> Any:
    """The model, loaded once per worker process."""
    if threads:
        torch.set_num_threads(threads)
    if model not in _WORKER_MODELS:
        _WORKER_MODELS[model] = _resolve_codec(model, "cpu")
    return _WORKER_MODELS[model]


def _pack_shard(model: str, items: list[Any], first: int, path: str, batch_size: int, threads: int | None) -> dict[str, Any]:
    codec = _worker_codec(model, threads)
    return write_shard(path, encode_items(codec, items, first, batch_size))


def pack_distributed(
    source: PathLike | Sequence[Any],
    out_dir: PathLike,
    model: str | os.PathLike = "walloc-image-16x",
    shard_size: int = 1000,
    *,
    resume: bool = True,
    labels_from_dirs: bool = False,
    batch_size: int = 1,
    num_workers: int = 2,
    scheduler: Any = "processes",
    threads_per_worker: int | None = 1,
    wave: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """:func:`~neuralcodec.datasets.pack` with the shards encoded by Dask tasks in parallel.

    Args:
        source: a media folder or a sequence (``len`` and indexing) of items, as for ``pack``.
        model: a shipped model name or a saved model's path (each worker loads it).
        num_workers: parallel workers of a local scheduler.
        scheduler: a Dask scheduler name (``"processes"``, ``"threads"``, ``"sync"``) or a
            ``dask.distributed.Client``.
        threads_per_worker: torch threads in each worker (``None``: leave as is).
        wave: shards submitted between index updates (default ``4 * num_workers``).
        Other arguments as for :func:`~neuralcodec.datasets.pack`.

    Returns the final index; the shards equal those of ``pack`` with the same arguments.
    """
    try:
        import dask
    except ImportError:  # pragma: no cover - depends on the environment
        raise NeuralCodecError('distributed packing needs Dask: pip install "neuralcodec[distributed]"') from None
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError("pack_distributed needs the model as a name or a saved model path (each worker loads it)")
    if shard_size < 1 or batch_size < 1 or num_workers < 1:
        raise ValueError("shard_size, batch_size and num_workers must be >= 1")
    model = str(model)
    out_dir = Path(out_dir)
    codec = _resolve_codec(model, "cpu")  # identity for the index, and an early clear error
    src = _open_source(source, labels_from_dirs)
    if src.sequence is None or src.total is None:
        raise TypeError("pack_distributed needs a folder or a sequence with len() and indexing (not a one-pass iterable)")
    index = _start(out_dir, _new_index(codec, src, shard_size), resume)
    if index["complete"]:
        return index
    total = src.total
    done_shards = len(index["shards"])
    starts = list(range(done_shards * shard_size, total, shard_size))
    wave = wave or 4 * num_workers
    compute_kwargs: dict[str, Any] = {"scheduler": scheduler}
    pool = None
    if scheduler == "processes":
        # One process pool for every wave (Dask would start a new pool per compute call);
        # spawn, not fork: the parent may hold torch threads.
        pool = ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn"))
        compute_kwargs["pool"] = pool
    elif scheduler == "threads":
        compute_kwargs["num_workers"] = num_workers
    bar = _progress(total, index["items"], progress, f"pack {out_dir.name}")
    try:
        for w in range(0, len(starts), wave):
            tasks = []
            for start in starts[w : w + wave]:
                number = start // shard_size
                items = src.sequence[start : start + shard_size]
                tasks.append(dask.delayed(_pack_shard, pure=False)(
                    model, list(items), start, str(out_dir / shard_name(number)), batch_size, threads_per_worker
                ))
            entries = dask.compute(*tasks, **compute_kwargs)
            for entry in entries:  # in shard order: the index stays a prefix of the dataset
                index["shards"].append(entry)
                index["items"] += entry["items"]
                bar.update(entry["items"])
            _write_index(out_dir, index)
        if index["items"] != total:
            raise NeuralCodecError(f"packed {index['items']} items, expected {total}")
        index["complete"] = True
        _write_index(out_dir, index)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return index
