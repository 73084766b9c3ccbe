"""Random spatio-temporal crops of a folder of videos, for training video codecs.

Every video is decoded once, chunk by chunk (:func:`~neuralcodec.datasets.media.iter_video`,
PyAV), so a full-resolution video never sits in memory: each chunk of frames is shrunk
(bicubic with antialiasing, by at least ``min_downscale``; further when the shorter side is
still above ``max_side``), optionally decimated in time (``frame_step``: keep every k-th
frame), and kept as 8-bit RGB ``(T, H, W, 3)`` arrays. ``skip_frames`` leaves out the start of
every video (e.g. the frames a benchmark evaluates on) and ``max_frames`` bounds the memory
per video. Downscaling lossy sources by 2 removes most of their coding artefacts, as for
:class:`~neuralcodec.datasets.images.ImageCropDataset`.

Crops are ``(3, frames, crop_h, crop_w)`` float32 in [0, 1]: a random video (weighted by its
number of crop positions), a random start frame and position, and with ``augment`` a random
horizontal flip. Randomness comes only from the generator you pass to :meth:`sample`, or, when
the dataset is iterated (a ``torch.utils.data.IterableDataset``), from ``seed``, the epoch
(:meth:`VideoCropDataset.set_epoch`) and the ``DataLoader`` worker id: the same seed, epoch
and number of workers give the same crops.

>>> import tempfile, os, torch, numpy as np
>>> from neuralcodec.datasets.media import write_video
>>> d = tempfile.mkdtemp()
>>> write_video(os.path.join(d, "a.mkv"), torch.rand(3, 12, 40, 48), 25)
>>> ds = VideoCropDataset(d, frames=4, crop=16, min_downscale=1.0)
>>> ds.sample(2, np.random.default_rng(0)).shape
torch.Size([2, 3, 4, 16, 16])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import MediaError
from .media import VIDEO_SUFFIXES, iter_video

__all__ = ["VideoCropDataset"]

_CHUNK = 16  # frames decoded (as float32) at a time


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"crop size must be positive, got {size!r}")
    return int(h), int(w)


def _target_size(h: int, w: int, min_downscale: float, max_side: int | None) -> tuple[int, int]:
    """Frame size after shrinking by ``max(min_downscale, shorter side / max_side, 1)``."""
    factor = max(min_downscale, 1.0, (min(h, w) / max_side) if max_side else 1.0)
    return max(1, round(h / factor)), max(1, round(w / factor))


class VideoCropDataset(IterableDataset):
    """All videos of a folder (recursively), resized and kept as uint8 ``(T, H, W, 3)`` arrays.

    Args:
        root: a folder of videos (MP4, MKV, AVI, MOV, WebM, ...), or a list of video files.
        frames: frames per crop (default for :meth:`sample` and iteration).
        crop: crop side, or ``(height, width)``.
        min_downscale: every frame is shrunk by at least this factor (1.0: keep the size).
        max_side: frames whose shorter side is still above this are shrunk further
            (``None``: no limit).
        frame_step: keep every ``frame_step``-th frame (lowers the frame rate by decimation).
        skip_frames: leave out the first frames of every video (counted before ``frame_step``).
        max_frames: keep at most this many frames of every video, after skipping and
            decimation (``None``: all; mind the memory: 300 frames of 640x360 are 207 MB).
        augment: random horizontal flips.
        seed: seed of iteration (see the module doc); :meth:`sample` uses the generator given.
        epoch_size: crops per epoch when iterated (``None``: an endless stream).

    Videos shorter than ``frames`` or smaller than the crop after resizing are skipped (listed
    in :attr:`skipped`); a folder with no usable video raises :class:`~neuralcodec.MediaError`,
    as does a file PyAV cannot decode.

    >>> import tempfile, os, torch, numpy as np
    >>> from neuralcodec.datasets.media import write_video
    >>> d = tempfile.mkdtemp()
    >>> write_video(os.path.join(d, "v.mkv"), torch.rand(3, 20, 64, 80), 25)
    >>> ds = VideoCropDataset(d, frames=3, crop=(8, 12), min_downscale=2.0, frame_step=2, epoch_size=4, seed=1)
    >>> ds.videos[0].shape  # 10 of 20 frames, 64x80 halved
    (10, 32, 40, 3)
    >>> [tuple(x.shape) for x in ds]
    [(3, 3, 8, 12), (3, 3, 8, 12), (3, 3, 8, 12), (3, 3, 8, 12)]
    """

    def __init__(self, root: str | os.PathLike | Sequence[str | os.PathLike], frames: int = 8,
                 crop: int | Sequence[int] = 64, *, min_downscale: float = 2.0, max_side: int | None = 768,
                 frame_step: int = 1, skip_frames: int = 0, max_frames: int | None = 300, augment: bool = True,
                 seed: int = 0, epoch_size: int | None = None) -> None:
        super().__init__()
        if frames < 1 or frame_step < 1 or skip_frames < 0 or (max_frames is not None and max_frames < 1):
            raise ValueError("need frames >= 1, frame_step >= 1, skip_frames >= 0 and max_frames >= 1 (or None)")
        if min_downscale <= 0 or (max_side is not None and max_side < 1):
            raise ValueError("min_downscale must be > 0 and max_side >= 1 (or None)")
        if epoch_size is not None and epoch_size < 1:
            raise ValueError("epoch_size must be >= 1 (or None)")
        self.frames, self.crop = frames, _pair(crop)
        self.min_downscale, self.max_side = float(min_downscale), max_side
        self.frame_step, self.skip_frames, self.max_frames = frame_step, skip_frames, max_frames
        self.augment, self.seed, self.epoch_size, self.epoch = augment, seed, epoch_size, 0
        if isinstance(root, (str, os.PathLike)):
            folder = Path(root)
            if not folder.is_dir():
                raise MediaError(f"{folder}: not a folder of videos")
            files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not files:
                raise MediaError(f"{folder}: no video files ({' '.join(VIDEO_SUFFIXES)})")
        else:
            files = [Path(p) for p in root]
            if not files:
                raise MediaError("no video files given")
        self.files: list[Path] = []
        self.videos: list[np.ndarray] = []
        self.skipped: list[str] = []
        for path in files:
            video = self._load(path)
            ch, cw = self.crop
            if video is None or video.shape[0] < frames or video.shape[1] < ch or video.shape[2] < cw:
                self.skipped.append(path.name)
                continue
            self.files.append(path)
            self.videos.append(video)
        if not self.videos:
            raise MediaError(f"no video has {frames} frames of at least {self.crop[0]}x{self.crop[1]} after resizing "
                             f"(skipped: {', '.join(self.skipped)})")
        self.weights = self._weights(frames, self.crop)

    def _load(self, path: Path) -> np.ndarray | None:
        """Decode, skip, decimate and resize one video to uint8 ``(T, H, W, 3)`` (None: no frames kept)."""
        kept: list[np.ndarray] = []
        index = 0  # frame number in the file
        size: tuple[int, int] | None = None
        chunks = iter_video(path, chunk_frames=_CHUNK)  # (3, t, H, W) float in [0, 1]
        try:
            for chunk in chunks:
                t = chunk.shape[1]
                pick = [i for i in range(t)
                        if index + i >= self.skip_frames and (index + i - self.skip_frames) % self.frame_step == 0]
                index += t
                if not pick:
                    continue
                x = chunk[:, pick].permute(1, 0, 2, 3)  # (t', 3, H, W)
                if size is None:
                    size = _target_size(x.shape[2], x.shape[3], self.min_downscale, self.max_side)
                if size != tuple(x.shape[2:]):
                    x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
                kept.append(x.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy())
                if self.max_frames is not None and sum(len(k) for k in kept) >= self.max_frames:
                    break
        finally:
            chunks.close()  # closes the file at once when we stop early
        if not kept:
            return None
        video = np.concatenate(kept)
        return video[: self.max_frames] if self.max_frames is not None else video

    def _weights(self, frames: int, crop: tuple[int, int]) -> np.ndarray:
        counts = np.array([max(v.shape[0] - frames + 1, 0) * max(v.shape[1] - crop[0] + 1, 0) * max(v.shape[2] - crop[1] + 1, 0)
                           for v in self.videos], dtype=np.float64)
        if counts.sum() == 0:
            raise MediaError(f"no video has {frames} frames of at least {crop[0]}x{crop[1]}")
        return counts / counts.sum()

    def __len__(self) -> int:
        """Crops per epoch when iterated (needs ``epoch_size``)."""
        if self.epoch_size is None:
            raise TypeError("an endless VideoCropDataset has no length (give epoch_size)")
        return self.epoch_size

    @property
    def num_frames(self) -> int:
        """Frames held in memory, all videos together."""
        return int(sum(v.shape[0] for v in self.videos))

    def sample(self, n: int, rng: np.random.Generator, frames: int | None = None,
               crop: int | Sequence[int] | None = None) -> torch.Tensor:
        """``n`` random crops ``(n, 3, frames, crop_h, crop_w)`` float32 in [0, 1].

        ``frames`` and ``crop`` override the dataset's (videos too small for them are skipped).
        """
        frames = frames or self.frames
        ch, cw = _pair(crop) if crop is not None else self.crop
        weights = self.weights if (frames, (ch, cw)) == (self.frames, self.crop) else self._weights(frames, (ch, cw))
        out = np.empty((n, frames, ch, cw, 3), dtype=np.uint8)
        for i, k in enumerate(rng.choice(len(self.videos), size=n, p=weights)):
            v = self.videos[k]
            t = int(rng.integers(0, v.shape[0] - frames + 1))
            top = int(rng.integers(0, v.shape[1] - ch + 1))
            left = int(rng.integers(0, v.shape[2] - cw + 1))
            patch = v[t : t + frames, top : top + ch, left : left + cw]
            out[i] = patch[:, :, ::-1] if self.augment and rng.random() < 0.5 else patch
        return torch.from_numpy(out).permute(0, 4, 1, 2, 3).float().div_(255.0)

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of ``epoch`` when iterated (call before each epoch)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, worker])
        if self.epoch_size is None:
            while True:
                yield self.sample(1, rng)[0]
        # The epoch's crops are split across DataLoader workers: worker w yields crops w, w+W, ...
        for _ in range(worker, self.epoch_size, workers):
            yield self.sample(1, rng)[0]
