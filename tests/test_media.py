"""Media I/O: images and audio to tensors and back, exactly where the format is lossless."""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image, ImageOps

from neuralcodec import MediaError
from neuralcodec.datasets import media
from neuralcodec.datasets.media import (
    atomic_output,
    audio_info,
    audio_writer,
    iter_audio,
    iter_video,
    modality_of,
    read_audio,
    read_image,
    read_media,
    read_video,
    write_audio,
    write_image,
    write_media,
    write_video,
)


def _levels(shape: tuple[int, ...], bit_depth: int, seed: int = 0) -> torch.Tensor:
    """Random values exactly on the grid of a bit depth, so lossless round trips are exact."""
    top = (1 << bit_depth) - 1
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, top + 1, shape, generator=g).double().div(top).float()


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("size", [(1, 1), (1, 7), (13, 5), (31, 64)])
def test_png_round_trip_is_exact(tmp_path, channels, bit_depth, size):
    x = _levels((channels, *size), bit_depth, seed=channels + bit_depth)
    path = tmp_path / "x.png"
    write_image(path, x, bit_depth=bit_depth)
    m = read_media(path)
    assert m.modality == "image"
    assert m.metadata == {"mode": {1: "L", 3: "RGB", 4: "RGBA"}[channels], "bit_depth": bit_depth, "format": "PNG", "source": "x.png"}
    assert m.data.dtype == torch.float32 and m.data.shape == x.shape
    assert torch.equal(m.data, x)


def test_16bit_png_is_readable_by_pillow(tmp_path):
    # An independent decoder agrees with our 16-bit PNG writer (Pillow keeps 16 bits for gray,
    # and reduces 16-bit RGB to the high byte).
    gray = _levels((1, 9, 11), 16, seed=1)
    write_image(tmp_path / "g.png", gray, bit_depth=16)
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode.startswith("I")
        assert np.array_equal(np.asarray(im).astype(np.int64), np.rint(gray[0].double().numpy() * 65535).astype(np.int64))
    rgb = _levels((3, 6, 10), 16, seed=2)
    write_image(tmp_path / "c.png", rgb, bit_depth=16)
    with Image.open(tmp_path / "c.png") as im:
        assert im.mode == "RGB"
        high = np.rint(rgb.double().numpy() * 65535).astype(np.int64).transpose(1, 2, 0) >> 8
        assert np.array_equal(np.asarray(im).astype(np.int64), high)


def test_pillow_16bit_gray_png_reads_as_16_bit(tmp_path):
    a = (np.arange(35, dtype=np.uint16).reshape(5, 7) * 1871).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "p.png")
    m = read_media(tmp_path / "p.png")
    assert m.metadata["bit_depth"] == 16 and m.metadata["mode"] == "L"
    assert np.array_equal(np.rint(m.data[0].numpy() * 65535).astype(np.uint16), a)


def test_modes_are_converted_to_l_rgb_rgba(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(16)
    palette.save(tmp_path / "p.png")
    assert read_media(tmp_path / "p.png").metadata["mode"] == "RGB"
    palette.save(tmp_path / "pt.png", transparency=0)
    assert read_media(tmp_path / "pt.png").metadata["mode"] == "RGBA"
    Image.fromarray(rgb).convert("LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").shape == (4, 6, 8)
    Image.fromarray(rgb).convert("1").save(tmp_path / "bw.png")
    bw = read_media(tmp_path / "bw.png")
    assert bw.metadata["mode"] == "L" and set(bw.data.unique().tolist()) <= {0.0, 1.0}
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert read_media(tmp_path / "cmyk.jpg").metadata["mode"] == "RGB"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    a = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif)
    with Image.open(tmp_path / "o.png") as reopened:
        expected = np.asarray(ImageOps.exif_transpose(reopened))
    got = np.rint(read_image(tmp_path / "o.png").numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    assert np.array_equal(got, expected)
    # the 16-bit path applies orientations with numpy: same result as Pillow
    assert np.array_equal(media._apply_orientation(a, orientation), expected)


@pytest.mark.parametrize("suffix", [".bmp", ".tiff", ".webp", ".jpg", ".ppm"])
def test_other_formats(tmp_path, suffix):
    x = _levels((3, 10, 12), 8, seed=3)
    write_image(tmp_path / f"x{suffix}", x)
    y = read_image(tmp_path / f"x{suffix}")
    assert y.shape == x.shape
    if suffix == ".jpg":  # lossy, written at high quality
        assert (y - x).abs().mean() < 0.2
    else:
        assert torch.equal(y, x)


def test_format_limits_warn_and_write_what_fits(tmp_path):
    with pytest.warns(UserWarning, match="alpha"):
        write_image(tmp_path / "a.jpg", torch.rand(4, 8, 8))
    assert read_image(tmp_path / "a.jpg").shape == (3, 8, 8)
    with pytest.warns(UserWarning, match="8 bits"):
        write_image(tmp_path / "b.bmp", torch.rand(1, 8, 8), bit_depth=16)
    assert read_media(tmp_path / "b.bmp").metadata["bit_depth"] == 8


def test_write_clamps_and_rounds(tmp_path):
    write_image(tmp_path / "c.png", torch.tensor([[[-0.5, 0.3 / 255, 0.7 / 255, 2.0]]]))
    assert (read_image(tmp_path / "c.png") * 255).round().flatten().tolist() == [0.0, 0.0, 1.0, 255.0]


def test_bad_images_raise_media_error(tmp_path):
    good = tmp_path / "good.png"
    write_image(good, torch.rand(3, 32, 32))
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.ones((3, 3), np.float32)).save(tmp_path / "float.tiff")
    (tmp_path / "folder.png").mkdir()
    for name in ("truncated.png", "junk.png", "empty.jpg", "float.tiff", "missing.png", "folder.png", "x.unknown"):
        with pytest.raises(MediaError, match=name.split(".")[0]):
            read_media(tmp_path / name)


def test_bad_writes_raise_media_error_and_leave_nothing(tmp_path):
    cases = [
        ("nan.png", torch.full((3, 2, 2), float("nan")), {}),
        ("two.png", torch.rand(2, 4, 4), {}),
        ("flat.png", torch.rand(3, 0, 4), {}),
        ("mode.png", torch.rand(3, 4, 4), {"mode": "L"}),
        ("depth.png", torch.rand(3, 4, 4), {"bit_depth": 12}),
        ("x.unknown", torch.rand(3, 4, 4), {}),
    ]
    for name, x, kwargs in cases:
        with pytest.raises(MediaError):
            write_image(tmp_path / name, x, **kwargs)
    with pytest.raises(MediaError):
        write_image(tmp_path / "no" / "such" / "dir.png", torch.rand(3, 4, 4))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("frames", [1, 2, 4097])
def test_audio_round_trip_is_exact(tmp_path, suffix, channels, frames):
    g = torch.Generator().manual_seed(frames)
    x = torch.randint(-32768, 32768, (channels, frames), generator=g).float() / 32768
    write_audio(tmp_path / f"a{suffix}", x, 44100)
    y, rate = read_audio(tmp_path / f"a{suffix}")
    assert rate == 44100 and y.dtype == torch.float32
    assert torch.equal(y, x)
    m = read_media(tmp_path / f"a{suffix}")
    assert m.modality == "audio" and m.metadata["subtype"] == "PCM_16"


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_silence_and_subtype_preserved(tmp_path, suffix):
    write_audio(tmp_path / f"s{suffix}", torch.zeros(2, 300), 48000, subtype="PCM_24")
    m = read_media(tmp_path / f"s{suffix}")
    assert m.metadata["subtype"] == "PCM_24" and m.metadata["sample_rate"] == 48000
    assert torch.equal(m.data, torch.zeros(2, 300))
    write_media(tmp_path / f"t{suffix}", m.data, "audio", m.metadata)
    assert read_media(tmp_path / f"t{suffix}").metadata["subtype"] == "PCM_24"


def test_audio_clips_pcm_and_keeps_float(tmp_path):
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.5, 2.0]])
    write_audio(tmp_path / "pcm.wav", x, 8000)
    assert read_audio(tmp_path / "pcm.wav")[0].abs().max() <= 1.0
    write_audio(tmp_path / "float.wav", x, 8000, subtype="FLOAT")
    assert torch.equal(read_audio(tmp_path / "float.wav")[0], x)
    # FLAC cannot hold floats: 24-bit PCM instead of the 16-bit default
    write_audio(tmp_path / "f.flac", x, 8000, subtype="FLOAT")
    assert read_media(tmp_path / "f.flac").metadata["subtype"] == "PCM_24"


def test_ogg_vorbis_reads(tmp_path):
    t = torch.arange(8000) / 8000
    x = 0.5 * torch.sin(2 * torch.pi * 440 * t).repeat(2, 1)
    write_audio(tmp_path / "a.ogg", x, 8000)
    y, rate = read_audio(tmp_path / "a.ogg")
    assert rate == 8000 and y.shape == (2, 8000)
    assert read_media(tmp_path / "a.ogg").metadata["subtype"] == "VORBIS"


def test_bad_audio_raises_media_error(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    (tmp_path / "empty.flac").write_bytes(b"")
    sf.write(tmp_path / "zero.wav", np.zeros((0, 2), np.float32), 8000)
    for name in ("junk.wav", "empty.flac", "zero.wav", "missing.wav"):
        with pytest.raises(MediaError, match=name.split(".")[0]):
            read_media(tmp_path / name)
    for x, rate in ((torch.zeros(2, 0), 8000), (torch.zeros(1, 4, 4), 8000), (torch.zeros(1, 4), 0), (torch.full((1, 4), float("inf")), 8000)):
        with pytest.raises(MediaError):
            write_audio(tmp_path / "out.wav", x, rate)
    assert not (tmp_path / "out.wav").exists()


def test_modality_of():
    assert modality_of("a/b/c.PNG") == "image"
    assert modality_of("x.flac") == "audio"
    assert modality_of("x.mkv") == "video"
    with pytest.raises(MediaError, match="unsupported"):
        modality_of("x.doc")


def test_atomic_output_cleans_up_and_respects_existing(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with pytest.raises(FileExistsError):
        with atomic_output(target, overwrite=False) as tmp:
            tmp.write_bytes(b"new")
    assert target.read_bytes() == b"old"
    fresh = tmp_path / "fresh.bin"
    with atomic_output(fresh, overwrite=False) as tmp:
        tmp.write_bytes(b"new")
    assert fresh.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["fresh.bin", "out.bin"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing noisy on the normal path
        write_image(tmp_path / "ok.png", torch.rand(3, 2, 2))


@pytest.mark.parametrize("suffix", [".mkv", ".avi"])
@pytest.mark.parametrize("shape,fps", [((3, 1, 4, 6), 25), ((3, 5, 7, 9), "30000/1001"), ((3, 3, 16, 10), 0.5)])
def test_lossless_video_round_trip(tmp_path, suffix, shape, fps):
    x = _levels(shape, 8, seed=shape[1])
    write_video(tmp_path / f"v{suffix}", x, fps)
    m = read_media(tmp_path / f"v{suffix}")
    assert m.modality == "video" and m.metadata["codec"] == "ffv1"
    assert m.metadata["frames"] == shape[1]
    assert Fraction(m.metadata["fps"]) == Fraction(fps)
    assert torch.equal(m.data, x)  # FFV1 in RGB is lossless
    chunks = list(iter_video(tmp_path / f"v{suffix}", chunk_frames=2))
    assert torch.equal(torch.cat(chunks, dim=1), x) and max(c.shape[1] for c in chunks) <= 2


def test_h264_video_keeps_size_rate_and_frames(tmp_path):
    t = torch.linspace(0, 1, 9)
    x = torch.stack(torch.meshgrid(t, torch.linspace(0, 1, 13), torch.linspace(0, 1, 11), indexing="ij")).mul(0.8).add(0.1)
    write_video(tmp_path / "v.mp4", x, "24000/1001")  # odd sides: written as 4:4:4
    y, meta = read_video(tmp_path / "v.mp4")
    assert y.shape == x.shape and meta["fps"] == "24000/1001" and meta["frames"] == 9
    assert (y - x).abs().mean() < 0.02  # CRF 12 on a smooth ramp


def test_bad_video(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 nothing else")
    write_audio(tmp_path / "sound.wav", torch.zeros(1, 100), 8000)
    (tmp_path / "sound.wav").rename(tmp_path / "noimage.mkv")  # a file without a video stream
    for name in ("junk.mp4", "noimage.mkv", "missing.avi"):
        with pytest.raises(MediaError, match=name.split(".")[0]):
            read_media(tmp_path / name)
    for x, fps in ((torch.rand(1, 2, 4, 4), 25), (torch.rand(3, 0, 4, 4), 25), (torch.rand(3, 2, 4, 4), 0), (torch.rand(3, 2, 4, 4), "x")):
        with pytest.raises(MediaError):
            write_video(tmp_path / "out.mkv", x, fps)
    assert not (tmp_path / "out.mkv").exists()


def test_streamed_audio_matches_whole_file(tmp_path):
    x = torch.randint(-32768, 32768, (2, 1000), generator=torch.Generator().manual_seed(5)).float() / 32768
    write_audio(tmp_path / "a.flac", x, 16000, subtype="PCM_16")
    info = audio_info(tmp_path / "a.flac")
    assert (info["frames"], info["channels"], info["sample_rate"]) == (1000, 2, 16000)
    chunks = list(iter_audio(tmp_path / "a.flac", chunk_frames=300, overlap=100))
    assert [c.shape[1] for c in chunks] == [300, 300, 300, 300, 200]
    assert torch.equal(torch.cat([chunks[0]] + [c[:, 100:] for c in chunks[1:]], dim=1), x)
    with audio_writer(tmp_path / "b.wav", 16000, channels=2) as w:
        for start in range(0, 1000, 333):
            w.write(x[:, start : start + 333])
    assert torch.equal(read_audio(tmp_path / "b.wav")[0], x)


def test_audio_writer_is_atomic(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with audio_writer(tmp_path / "a.wav", 8000, channels=1) as w:
            w.write(torch.zeros(1, 10))
            raise RuntimeError("boom")  # the caller's error passes through unchanged
    with pytest.raises(MediaError, match="channels|shape"):
        with audio_writer(tmp_path / "b.wav", 8000, channels=2) as w:
            w.write(torch.zeros(1, 10))
    with pytest.raises(MediaError, match="no samples"):
        with audio_writer(tmp_path / "c.wav", 8000, channels=2):
            pass
    assert list(tmp_path.iterdir()) == []
