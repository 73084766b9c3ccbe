"""Random crops of a folder of music for training audio codecs.

Every file is decoded once (soundfile: WAV/FLAC/OGG) and kept in memory as int16 (half of
float32: the 61 minutes of ``../shared/data/audio/train`` take about 650 MB), optionally only
the first ``max_seconds`` of each file. Crops are drawn uniformly over all samples, scaled to a
fixed RMS (as the codec codes every chunk) and, with ``augment``, left/right swapped at random.

>>> import tempfile, os, torch, numpy as np
>>> from neuralcodec.datasets.media import write_audio
>>> d = tempfile.mkdtemp()
>>> write_audio(os.path.join(d, "a.wav"), 0.1 * torch.randn(2, 5000), 44100)
>>> data = AudioCropDataset(d, crop=1024)
>>> data.sample(3, np.random.default_rng(0)).shape
torch.Size([3, 2, 1024])
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import MediaError

__all__ = ["AudioCropDataset", "AUDIO_TRAIN_SUFFIXES"]

AUDIO_TRAIN_SUFFIXES = (".wav", ".flac", ".ogg")


class AudioCropDataset:
    """In-memory int16 music corpus; :meth:`sample` draws normalized random crops.

    Args:
        folder: directory of audio files (searched recursively).
        crop: samples per crop (default for :meth:`sample`).
        sample_rate: rate of the crops; files at other rates are an error, or with ``resample``
            are resampled to it once on loading (torchaudio, band-limited sinc).
        channels: crops have this many channels (mono files are duplicated).
        max_seconds: keep at most this much of every file (``None``: all).
        target_rms: every crop is scaled to this RMS (near-silent crops are redrawn).
    """

    def __init__(self, folder: str | os.PathLike, crop: int = 65536, sample_rate: int = 44100, channels: int = 2,
                 max_seconds: float | None = None, target_rms: float = 0.1, augment: bool = True,
                 resample: bool = False) -> None:
        import soundfile as sf

        root = Path(folder)
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_TRAIN_SUFFIXES and p.is_file())
        if not files:
            raise MediaError(f"{folder}: no audio files ({', '.join(AUDIO_TRAIN_SUFFIXES)})")
        self.crop, self.channels, self.target_rms, self.augment = crop, channels, target_rms, augment
        self.tracks: list[np.ndarray] = []
        self.names: list[str] = []
        for path in files:
            info = sf.info(str(path))
            if info.samplerate != sample_rate and not resample:
                raise MediaError(f"{path}: {info.samplerate} Hz, expected {sample_rate} Hz (or pass resample=True)")
            frames = info.frames if max_seconds is None else min(info.frames, int(max_seconds * info.samplerate))
            if info.samplerate == sample_rate:
                a = sf.read(str(path), frames=frames, dtype="int16", always_2d=True)[0].T  # (C, T)
            else:
                import torchaudio.functional as AF

                x = torch.from_numpy(sf.read(str(path), frames=frames, dtype="float32", always_2d=True)[0].T.copy())
                x = AF.resample(x, info.samplerate, sample_rate)
                a = np.round(x.clamp(-1, 32767 / 32768).numpy() * 32768).astype(np.int16)
            if a.shape[0] < channels:
                a = np.repeat(a[:1], channels, 0)
            self.tracks.append(np.ascontiguousarray(a[:channels]))
            self.names.append(path.name)
        self.lengths = np.array([t.shape[1] for t in self.tracks], dtype=np.int64)
        self.samples = int(self.lengths.sum())
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.tracks)

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    def sample(self, n: int, rng: np.random.Generator, crop: int | None = None) -> torch.Tensor:
        """``(n, channels, crop)`` float32 crops at ``target_rms`` (tracks weighted by length)."""
        crop = crop or self.crop
        usable = np.maximum(self.lengths - crop, 0) + 1
        p = usable / usable.sum()
        out = np.zeros((n, self.channels, crop), dtype=np.float32)
        for i in range(n):
            for _ in range(20):  # redraw near-silent crops (a fade, a pause)
                t = int(rng.choice(len(self.tracks), p=p))
                start = int(rng.integers(0, usable[t]))
                piece = self.tracks[t][:, start:start + crop].astype(np.float32) / 32768.0
                rms = float(np.sqrt(np.mean(piece.astype(np.float64) ** 2)))
                if rms > 1e-3:
                    break
            if rms > 0:
                piece = piece * (self.target_rms / rms)
            if self.augment and rng.random() < 0.5:
                piece = piece[::-1]
            out[i, :, :piece.shape[1]] = piece
        return torch.from_numpy(out)
