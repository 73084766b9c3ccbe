"""WaLLoC video: shapes, exactness of the latents, streaming, temporal coding, corrupted files, CLI.

Tiny random-initialised models on tiny synthetic clips (fast); one test uses the shipped
``walloc-video`` model on a 64x64 clip when it is installed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import neuralcodec
from neuralcodec import BitstreamError, ModelMismatchError
from neuralcodec.apps.cli import main
from neuralcodec.codecs.registry import save
from neuralcodec.codecs.walloc_video import WaLLoCVideo
from neuralcodec.datasets.media import read_video, write_video
from neuralcodec.entropy import Container

torch.set_num_threads(1)


def tiny(gop: int = 4, seed: int = 0) -> WaLLoCVideo:
    torch.manual_seed(seed)
    return WaLLoCVideo(latent_channels=4, decoder_channels=8, decoder_blocks=1, context_hidden=8,
                       temporal_hidden=8, gop=gop, init_step=0.2).eval()


def moving_clip(t: int, h: int, w: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """A smooth pattern (``scale`` stretches it) drifting by one pixel per frame, plus a little
    noise: (3, t, h, w) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    frames = []
    for k in range(t):
        base = torch.stack([torch.sin((xx - k) / (3.0 * scale)), torch.cos((yy + k) / (4.0 * scale)),
                            torch.sin((xx + yy) / (5.0 * scale))])
        frames.append(0.5 + 0.35 * base + 0.02 * torch.randn(3, h, w, generator=g))
    return torch.stack(frames, 1).clamp(0, 1)


@pytest.fixture(scope="module")
def model() -> WaLLoCVideo:
    return tiny()


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 1, 1), (5, 13, 17), (7, 9, 30), (4, 16, 16)])
def test_roundtrip_shapes_and_latents(model: WaLLoCVideo, shape: tuple[int, int, int]) -> None:
    t, h, w = shape
    x = moving_clip(t, h, w)
    blob = model.compress(x, metadata={"fps": "30000/1001"})
    y = model.decompress(blob)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    q = model.latents(blob)
    # T' = T, H' = ceil(H/8), W' = ceil(W/8); exactly the encoder's quantized latents
    assert q.shape == (4, t, math.ceil(h / 8), math.ceil(w / 8))
    assert torch.equal(q, model.quantized_latents(x))
    # decoding is the frame decoder applied to those latents
    ref = model.synthesis_frames(q.transpose(0, 1)).clamp(0, 1)[:, :, :h, :w].transpose(0, 1)
    assert torch.allclose(y, ref, atol=1e-5)
    c = Container.from_bytes(blob)
    assert c.shape == (3, t, h, w) and c.metadata["fps"] == "30000/1001" and c.metadata["frames"] == t


def test_batch_and_gop_override(model: WaLLoCVideo) -> None:
    x = torch.stack([moving_clip(3, 8, 16, seed=s) for s in range(2)])
    blobs = model.compress(x, fps=25)
    assert isinstance(blobs, list) and len(blobs) == 2
    assert torch.equal(model.decompress(blobs[1]), model.decompress(model.compress(x[1], fps=25)))
    blob = model.compress(x[0], fps=25, gop=1)  # all intra
    assert Container.from_bytes(blob).metadata["walloc_video"]["gop"] == 1
    assert torch.equal(model.latents(blob), model.quantized_latents(x[0]))


def test_streaming_matches_whole(model: WaLLoCVideo) -> None:
    x = moving_clip(9, 12, 20)
    whole = model.compress(x, fps=10)
    pieces = [x[:, :2], x[:, 2:3], x[:, 3:9]]  # chunks that do not follow the GOPs
    assert model.compress_stream(iter(pieces), "10/1") == whole
    parts = list(model.decompress_stream(whole))
    assert [p.shape[1] for p in parts] == [4, 4, 1]  # one GOP at a time
    assert torch.equal(torch.cat(parts, 1), model.decompress(whole))


def test_temporal_model_uses_previous_frame() -> None:
    """A static clip: frames after the first cost far less with the inter model than intra."""
    torch.manual_seed(0)
    m = WaLLoCVideo(latent_channels=4, decoder_channels=8, decoder_blocks=1, context_hidden=8,
                    temporal_hidden=8, gop=8, init_step=0.02).eval()  # fine steps: latents of ~10
    x = moving_clip(1, 64, 64).expand(3, 8, 64, 64).contiguous()
    inter = len(Container.from_bytes(m.compress(x, fps=25)).sections["data"])
    intra = len(Container.from_bytes(m.compress(x, fps=25, gop=1)).sections["data"])
    assert inter < 0.5 * intra


def test_bad_inputs(model: WaLLoCVideo) -> None:
    with pytest.raises(ValueError):
        model.compress(torch.rand(4, 2, 8, 8), fps=25)  # not RGB
    with pytest.raises(ValueError):
        model.compress(torch.rand(3, 2, 8, 8), fps=0)
    with pytest.raises(ValueError):
        model.compress(torch.full((3, 2, 8, 8), float("nan")), fps=25)
    with pytest.raises(ValueError):
        model.compress_stream(iter([]), 25)


def _rebuild(blob: bytes, **changes) -> bytes:
    c = Container.from_bytes(blob)
    meta = json.loads(json.dumps(c.metadata))
    sections = dict(c.sections)
    meta_change = changes.pop("meta", None)
    if meta_change:
        meta_change(meta)
    sections.update(changes.pop("sections", {}))
    for name in changes.pop("drop", ()):
        sections.pop(name)
    shape = changes.pop("shape", c.shape)
    return Container(c.codec, c.weights_hash, c.modality, shape, meta, sections).to_bytes()


def test_corrupted_and_truncated(model: WaLLoCVideo) -> None:
    x = moving_clip(6, 16, 24)
    blob = model.compress(x, fps=25)
    for bad in (blob[:-1], blob[: len(blob) // 2], blob[:20], b"", blob + b"\0"):
        with pytest.raises(BitstreamError):
            model.decompress(bad)
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x40
    with pytest.raises(BitstreamError):
        model.decompress(bytes(flipped))
    c = Container.from_bytes(blob)
    data = bytearray(c.sections["data"])
    data[len(data) // 3] ^= 0xFF  # a valid CRC around a corrupted rANS stream
    cases = [
        _rebuild(blob, sections={"data": bytes(data)}),
        _rebuild(blob, sections={"data": c.sections["data"][:-2]}),
        _rebuild(blob, sections={"index": c.sections["index"][:-1]}),
        _rebuild(blob, sections={"digest": c.sections["digest"][:-8]}),
        _rebuild(blob, sections={"digest": bytes(len(c.sections["digest"]))}),
        _rebuild(blob, drop=["digest"]),
        _rebuild(blob, meta=lambda m: m["walloc_video"].update(gop=0)),
        _rebuild(blob, meta=lambda m: m["walloc_video"].update(gop=3)),
        _rebuild(blob, meta=lambda m: m["walloc_video"].update(latent=[3, 3])),
        _rebuild(blob, meta=lambda m: m.update(fps="0/1")),
        _rebuild(blob, meta=lambda m: m.pop("walloc_video")),
        _rebuild(blob, shape=(3, 7, 16, 24)),
        _rebuild(blob, shape=(3, 6, 16)),
    ]
    for bad in cases:
        with pytest.raises(BitstreamError):
            model.decompress(bad)
        with pytest.raises(BitstreamError):
            model.latents(bad)


def test_other_weights_refused(model: WaLLoCVideo) -> None:
    blob = model.compress(moving_clip(2, 8, 8), fps=25)
    with pytest.raises(ModelMismatchError):
        tiny(seed=1).decompress(blob)


def test_cli_roundtrip_keeps_fps_and_frames(tmp_path: Path, model: WaLLoCVideo) -> None:
    save(model, tmp_path / "tiny-video")
    weights = str(tmp_path / "tiny-video.safetensors")
    for suffix, fps, frames, (h, w) in ((".avi", "30000/1001", 7, (18, 22)), (".mp4", "24/1", 1, (16, 24))):
        src = tmp_path / f"clip{suffix}"
        write_video(src, moving_clip(frames, h, w), fps)
        ncf, out = tmp_path / f"clip{suffix}.ncf", tmp_path / f"clip{suffix}.mkv"
        assert main(["encode", str(src), "-o", str(ncf), "--model", weights, "-q"]) == 0
        c = Container.from_bytes(ncf.read_bytes())
        assert c.shape == (3, frames, h, w) and c.metadata["fps"] == fps
        assert main(["decode", str(ncf), "-o", str(out), "--model", weights, "-q"]) == 0
        y, meta = read_video(out)
        assert meta["fps"] == fps and meta["frames"] == frames and tuple(y.shape) == (3, frames, h, w)
        # the file holds what decompress gives (FFV1 is lossless; 8-bit rounding only)
        expect = neuralcodec.load(weights).decompress(ncf.read_bytes())
        assert float((y - expect).abs().max()) <= 0.5 / 255 + 1e-5
        assert main(["info", str(ncf), "--json"]) == 0
    # a corrupted file: exit code 1 and no output file
    bad = tmp_path / "bad.ncf"
    raw = bytearray((tmp_path / "clip.avi.ncf").read_bytes())
    bad.write_bytes(bytes(raw[: len(raw) - 10]))
    assert main(["decode", str(bad), "-o", str(tmp_path / "bad.mkv"), "--model", weights, "-q"]) == 1
    assert not (tmp_path / "bad.mkv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad.mkv")]


@pytest.mark.skipif("walloc-video" not in neuralcodec.available(), reason="walloc-video is not shipped")
def test_shipped_model_small_clip() -> None:
    m = neuralcodec.load("walloc-video")
    x = moving_clip(5, 64, 64, scale=4.0)
    blob = m.compress(x, fps=25)
    y = m.decompress(blob)
    assert y.shape == x.shape
    psnr = -10 * math.log10(float(((y - x) ** 2).mean()))
    # well above the mean-colour floor of this clip
    floor = -10 * math.log10(float(((x - x.mean(dim=(1, 2, 3), keepdim=True)) ** 2).mean()))
    assert psnr > floor + 10
    assert torch.equal(m.latents(blob), m.quantized_latents(x))
    # the temporal model beats coding every frame intra on this slowly moving clip
    assert len(blob) < len(m.compress(x, fps=25, gop=1))


def test_training_recipe_smoke(tmp_path: Path) -> None:
    """A few steps of `codec train walloc-video` on tiny data: export, model card, resume."""
    import numpy as np
    from PIL import Image

    from neuralcodec.apps.train_walloc_video import VideoTrainConfig, train_walloc_video
    from neuralcodec.codecs.walloc import WaLLoC

    torch.manual_seed(0)
    image_model = WaLLoC(latent_channels=4, levels=3, decoder_channels=8, decoder_blocks=1, context_hidden=8).eval()
    save(image_model, tmp_path / "tiny-image")
    photos, videos = tmp_path / "photos", tmp_path / "videos"
    photos.mkdir()
    videos.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)).save(photos / f"p{k}.png")
    write_video(videos / "v.mkv", moving_clip(6, 24, 32), 10)
    cfg = VideoTrainConfig(images=str(photos), videos=str(videos), out=str(tmp_path / "run"),
                           init_from=str(tmp_path / "tiny-image.json"), temporal_hidden=8, steps=3, batch_size=2,
                           crop=4, holdout_frames=2, synth_clips_per_image=1, synth_frames=3, synth_size=64,
                           checkpoint_every=1, log_every=1)
    path = train_walloc_video(cfg, progress=False)
    card = json.loads(Path(str(path) + ".json").read_text())
    assert card["training"]["steps"] == 3 and card["training"]["data"]["videos"][0]["frames_used"] == "2..5"
    assert card["training"]["init_from_weights_hash"] == image_model.weights_hash()
    m = neuralcodec.load(str(path) + ".json")
    assert m.weights_hash() == card["weights_hash"]
    # the frame codec is the image model's (float16-rounded), so the latents agree almost everywhere
    x = moving_clip(2, 16, 16)
    assert m.decompress(m.compress(x, fps=10)).shape == x.shape
    cfg.steps = 5
    path = train_walloc_video(cfg, resume=True, progress=False)
    assert json.loads(Path(str(path) + ".json").read_text())["training"]["steps"] == 5
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 1 + 5
