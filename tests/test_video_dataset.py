"""VideoCropDataset: spatio-temporal crops, resizing, decimation, seeds, DataLoader workers, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from neuralcodec.datasets import VideoCropDataset
from neuralcodec.datasets.media import write_video
from neuralcodec.errors import MediaError

T, H, W = 12, 40, 48


def _ramp_video(frames: int = T, h: int = H, w: int = W) -> torch.Tensor:
    """R = 20 * frame, G = 5 * row, B = 5 * column (8-bit values): every crop tells where it came from."""
    t = torch.arange(frames).view(frames, 1, 1).expand(frames, h, w)
    y = torch.arange(h).view(1, h, 1).expand(frames, h, w)
    x = torch.arange(w).view(1, 1, w).expand(frames, h, w)
    return torch.stack([20 * t, 5 * y, 5 * x]).float() / 255.0


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    write_video(d / "ramp.mkv", _ramp_video(), 25)  # FFV1: lossless, so values are exact
    (d / "sub").mkdir()
    write_video(d / "sub" / "short.mkv", _ramp_video(frames=2), 25)  # too short for 4-frame crops
    (d / "notes.txt").write_text("not a video")
    return d


def _levels(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255).long()


def test_crops_are_contiguous_blocks_of_the_video(folder: Path) -> None:
    ds = VideoCropDataset(folder, frames=4, crop=(8, 12), min_downscale=1.0, augment=False)
    assert [p.name for p in ds.files] == ["ramp.mkv"] and ds.skipped == ["short.mkv"]
    assert ds.videos[0].shape == (T, H, W, 3) and ds.videos[0].dtype == np.uint8 and ds.num_frames == T
    x = ds.sample(16, np.random.default_rng(0))
    assert x.shape == (16, 3, 4, 8, 12) and x.dtype == torch.float32
    starts = set()
    for crop in _levels(x):
        r, g, b = crop
        t0, y0, x0 = int(r[0, 0, 0]) // 20, int(g[0, 0, 0]) // 5, int(b[0, 0, 0]) // 5
        starts.add((t0, y0, x0))
        assert torch.equal(r, 20 * (t0 + torch.arange(4)).view(4, 1, 1).expand(4, 8, 12))
        assert torch.equal(g, 5 * (y0 + torch.arange(8)).view(1, 8, 1).expand(4, 8, 12))
        assert torch.equal(b, 5 * (x0 + torch.arange(12)).view(1, 1, 12).expand(4, 8, 12))
        assert 0 <= t0 <= T - 4 and 0 <= y0 <= H - 8 and 0 <= x0 <= W - 12
    assert len(starts) > 8  # positions are random, not one fixed window


def test_flips_and_overrides(folder: Path) -> None:
    ds = VideoCropDataset(folder, frames=4, crop=8, min_downscale=1.0, augment=True)
    x = _levels(ds.sample(32, np.random.default_rng(1)))
    steps = (x[:, 2, :, :, 1] - x[:, 2, :, :, 0]).flatten(1)[:, 0]  # B along a row: +5, or -5 when flipped
    assert set(steps.tolist()) == {5, -5}
    assert ds.sample(2, np.random.default_rng(0), frames=6, crop=(10, 4)).shape == (2, 3, 6, 10, 4)
    with pytest.raises(MediaError):
        ds.sample(1, np.random.default_rng(0), frames=T + 1)


def test_resizing_decimation_and_skipping(folder: Path) -> None:
    ds = VideoCropDataset(folder, frames=2, crop=8, min_downscale=2.0, frame_step=3, skip_frames=2, augment=False)
    v = ds.videos[0]
    assert v.shape == (4, H // 2, W // 2, 3)  # frames 2, 5, 8, 11 of 12; sides halved
    assert v[:, 0, 0, 0].tolist() == [40, 100, 160, 220]  # R = 20 * frame number, untouched by resizing
    assert abs(int(v[0, 10, 10, 1]) - 5 * 20.5) <= 2  # G ramp halved: row 10 averages rows 20 and 21
    capped = VideoCropDataset(folder, frames=2, crop=8, min_downscale=1.0, max_side=20, max_frames=5)
    assert capped.videos[0].shape == (5, 20, 24, 3)  # shorter side 40 -> 20; at most 5 frames
    assert capped.skipped == []  # the 2-frame video is long enough for 2-frame crops


def test_fixed_seed_iteration_and_workers(folder: Path) -> None:
    def epoch(ds: VideoCropDataset, workers: int = 0) -> torch.Tensor:
        return torch.stack(list(DataLoader(ds, batch_size=None, num_workers=workers)))

    ds = VideoCropDataset(folder, frames=3, crop=8, min_downscale=1.0, seed=7, epoch_size=6)
    first = epoch(ds)
    assert first.shape == (6, 3, 3, 8, 8) and len(ds) == 6
    assert torch.equal(first, epoch(VideoCropDataset(folder, frames=3, crop=8, min_downscale=1.0, seed=7, epoch_size=6)))
    assert not torch.equal(first, epoch(VideoCropDataset(folder, frames=3, crop=8, min_downscale=1.0, seed=8, epoch_size=6)))
    ds.set_epoch(1)
    assert not torch.equal(first, epoch(ds))
    two = epoch(ds, workers=2)
    assert two.shape == first.shape and torch.equal(two, epoch(ds, workers=2))
    stream = iter(VideoCropDataset(folder, frames=3, crop=8, min_downscale=1.0))  # no epoch_size: endless
    assert all(next(stream).shape == (3, 3, 8, 8) for _ in range(20))
    with pytest.raises(TypeError):
        len(VideoCropDataset(folder, frames=3, crop=8, min_downscale=1.0))


def test_clear_errors(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no video files"):
        VideoCropDataset(tmp_path)
    with pytest.raises(MediaError, match="not a folder"):
        VideoCropDataset(tmp_path / "missing")
    with pytest.raises(MediaError, match="no video has"):
        VideoCropDataset(folder, frames=T + 1, crop=8, min_downscale=1.0)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    with pytest.raises(MediaError, match="bad.mp4"):
        VideoCropDataset([bad], frames=1, crop=4)
    with pytest.raises(ValueError):
        VideoCropDataset(folder, frames=0)
