"""AudioCropDataset: resampling files at other rates, seeded crops."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralcodec.datasets import AudioCropDataset
from neuralcodec.datasets.media import write_audio
from neuralcodec.errors import MediaError


def test_files_at_other_rates_are_resampled_on_request(tmp_path: Path) -> None:
    t = torch.arange(22050) / 22050
    write_audio(tmp_path / "tone.wav", 0.5 * torch.sin(2 * math.pi * 441 * t)[None], 22050)  # mono, 1 s
    with pytest.raises(MediaError, match="resample=True"):
        AudioCropDataset(tmp_path, crop=4096, sample_rate=44100)
    ds = AudioCropDataset(tmp_path, crop=4096, sample_rate=44100, resample=True, max_seconds=0.5)
    assert ds.tracks[0].shape == (2, 22050) and ds.tracks[0].dtype == np.int16  # 0.5 s at 44.1 kHz, mono doubled
    spectrum = np.abs(np.fft.rfft(ds.tracks[0][0].astype(np.float64)))
    assert int(np.argmax(spectrum)) * 44100 / 22050 == pytest.approx(441, abs=2)  # the pitch is kept
    a = ds.sample(3, np.random.default_rng(0))
    assert a.shape == (3, 2, 4096) and torch.equal(a, ds.sample(3, np.random.default_rng(0)))
    assert not torch.equal(a, ds.sample(3, np.random.default_rng(1)))
