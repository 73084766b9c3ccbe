"""The ``codec encode / decode / info`` commands, with a tiny test-only codec.

The toy codec quantizes to 8 bits (images) or 16 bits (audio) and deflates the result
into a real ``.ncf`` container, so the CLI is tested end to end without a trained model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import neuralcodec
from neuralcodec import BitstreamError, ModelMismatchError
from neuralcodec.apps.cli import main
from neuralcodec.codecs import Codec, register_architecture
from neuralcodec.codecs.registry import save
from neuralcodec.datasets.media import read_media, write_audio, write_image, write_video
from neuralcodec.entropy.container import Container

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "neuralcodec" / "samples" / "astronaut.png"


class _ToyCodec(Codec):
    """Uniform quantization + zlib; ``offset`` is a weight, so two toys can differ."""

    levels = 255

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__(offset=offset)
        self.register_buffer("offset", torch.tensor([offset], dtype=torch.float32))

    def compress(self, x: torch.Tensor, metadata: dict | None = None) -> bytes:
        q = torch.round(x.float().cpu() * self.levels).to(torch.int32).numpy()
        dtype = np.uint8 if self.levels == 255 else np.int16
        payload = zlib.compress(q.astype(dtype).tobytes())
        return Container(self.name, self.weights_hash(), self.modality, tuple(x.shape), dict(metadata or {}), {"data": payload}).to_bytes()

    def decompress(self, blob: bytes) -> torch.Tensor:
        c = Container.from_bytes(blob)
        if c.weights_hash != self.weights_hash():
            raise ModelMismatchError("toy: weights differ")
        try:
            raw = zlib.decompress(c.sections["data"])
        except (zlib.error, KeyError) as e:
            raise BitstreamError(f"toy: bad payload: {e}") from None
        dtype = np.uint8 if self.levels == 255 else np.int16
        q = np.frombuffer(raw, dtype=dtype)
        if q.size != int(np.prod(c.shape)):
            raise BitstreamError("toy: payload size does not match the shape")
        return torch.from_numpy(q.astype(np.float32).reshape(c.shape) / self.levels)


@register_architecture
class ToyImageCodec(_ToyCodec):
    architecture = "test-toy-image"
    modality = "image"


@register_architecture
class ToyAudioCodec(_ToyCodec):
    architecture = "test-toy-audio"
    modality = "audio"
    levels = 32767


@register_architecture
class ToyVideoCodec(_ToyCodec):
    architecture = "test-toy-video"
    modality = "video"


@pytest.fixture
def toy(tmp_path: Path) -> dict[str, str]:
    """Saved toy models: two image codecs with different weights, an audio and a video codec."""
    paths = {}
    models = (("image", ToyImageCodec()), ("other", ToyImageCodec(offset=1.0)), ("audio", ToyAudioCodec()), ("video", ToyVideoCodec()))
    for key, model in models:
        paths[key] = str(save(model, tmp_path / "models" / f"toy-{key}")) + ".safetensors"
    return paths


def _image(path: Path, channels: int = 3, h: int = 13, w: int = 17, bit_depth: int = 8, seed: int = 0) -> torch.Tensor:
    x = torch.rand(channels, h, w, generator=torch.Generator().manual_seed(seed))
    write_image(path, x, bit_depth=bit_depth)
    return read_media(path).data


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


@pytest.mark.parametrize("channels,bit_depth", [(1, 8), (3, 8), (4, 8), (3, 16), (1, 16)])
def test_image_round_trip(tmp_path, toy, channels, bit_depth):
    src = tmp_path / "photo.png"
    x = _image(src, channels, bit_depth=bit_depth)
    assert main(["encode", str(src), "-o", str(tmp_path / "photo.ncf"), "--model", toy["image"], "-q"]) == 0
    assert main(["decode", str(tmp_path / "photo.ncf"), "-o", str(tmp_path / "out.png"), "--model", toy["image"], "-q"]) == 0
    out = read_media(tmp_path / "out.png")
    assert out.metadata["mode"] == read_media(src).metadata["mode"]
    assert out.metadata["bit_depth"] == bit_depth  # the file is written back as it came
    assert out.data.shape == x.shape
    assert (out.data - x).abs().max() <= 0.5 / 255 + 1e-6  # the toy's 8-bit quantization


def test_image_coding_does_not_need_pyav(tmp_path, toy, monkeypatch):
    # PyAV is only for video; a machine whose PyAV is broken or absent still codes images.
    src = tmp_path / "photo.png"
    _image(src)
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    assert main(["encode", str(src), "-o", str(tmp_path / "photo.ncf"), "--model", toy["image"], "-q"]) == 0
    assert main(["decode", str(tmp_path / "photo.ncf"), "-o", str(tmp_path / "out.png"), "-q",
                 "--model", toy["image"]]) == 0
    assert (tmp_path / "out.png").is_file()


def test_decode_uses_the_model_named_in_the_file(tmp_path, toy, monkeypatch):
    # Without --model, decode loads the container's codec name through neuralcodec.load.
    loaded = []
    real_load = neuralcodec.load

    def fake_load(name, device=None):
        loaded.append(name)
        return real_load(toy["image"], device=device)

    src = tmp_path / "a.png"
    _image(src)
    assert main(["encode", str(src), "-o", str(tmp_path / "a.ncf"), "--model", toy["image"], "-q"]) == 0
    monkeypatch.setattr(neuralcodec, "load", fake_load)
    monkeypatch.setattr(neuralcodec, "available", lambda: ["toy-image"])  # as if it were shipped
    assert main(["decode", str(tmp_path / "a.ncf"), "-o", str(tmp_path / "b.png"), "-q"]) == 0
    assert loaded == ["toy-image"]  # the name recorded in the container by the saved model


def test_a_file_cannot_make_decode_load_a_model_from_a_path(tmp_path, toy, capsys):
    # The codec name inside a file is untrusted: decode loads only shipped names from it.
    c = Container.from_bytes(ToyImageCodec().compress(torch.rand(3, 4, 4)))
    c.codec = toy["image"]
    (tmp_path / "sneaky.ncf").write_bytes(c.to_bytes())
    assert main(["decode", str(tmp_path / "sneaky.ncf"), "-o", str(tmp_path / "s.png")]) == 1
    assert "not installed" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_audio_round_trip_wav_and_flac(tmp_path, toy):
    x = (torch.rand(2, 1001, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.9
    write_audio(tmp_path / "song.flac", x, 22050, subtype="PCM_24")
    assert main(["encode", str(tmp_path / "song.flac"), "-o", str(tmp_path / "song.ncf"), "--model", toy["audio"], "-q"]) == 0
    for name in ("out.wav", "out.flac"):
        assert main(["decode", str(tmp_path / "song.ncf"), "-o", str(tmp_path / name), "--model", toy["audio"], "-q"]) == 0
        out = read_media(tmp_path / name)
        assert out.metadata["sample_rate"] == 22050
        assert out.metadata["subtype"] == "PCM_24"
        assert out.data.shape == (2, 1001)
        assert (out.data - read_media(tmp_path / "song.flac").data).abs().max() < 1e-4


def test_video_round_trip_and_info(tmp_path, toy, capsys):
    x = torch.randint(0, 256, (3, 4, 9, 7), generator=torch.Generator().manual_seed(3)).float() / 255
    write_video(tmp_path / "clip.mkv", x, "30000/1001")
    assert main(["encode", str(tmp_path / "clip.mkv"), "-o", str(tmp_path / "clip.ncf"), "--model", toy["video"], "-q"]) == 0
    assert main(["decode", str(tmp_path / "clip.ncf"), "--model", toy["video"], "-q", "--format", "avi"]) == 0
    out = read_media(tmp_path / "clip.avi")  # named after the input, in the format asked for
    assert out.metadata["fps"] == "30000/1001" and out.metadata["frames"] == 4
    assert torch.equal(out.data, x)  # toy 8-bit quantization and FFV1 are both exact here
    capsys.readouterr()
    assert main(["info", "--json", str(tmp_path / "clip.ncf")]) == 0
    d = json.loads(capsys.readouterr().out)
    size = (tmp_path / "clip.ncf").stat().st_size
    assert d["duration_s"] == pytest.approx(4 * 1001 / 30000) and d["bpp"] == pytest.approx(8 * size / (4 * 9 * 7))


def test_directory_in_directory_out_mirrors_names(tmp_path, toy):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    _image(src / "a.png", seed=1)
    _image(src / "sub" / "b.png", channels=1, seed=2)
    (src / "notes.txt").write_text("not media, skipped by the directory walk")
    assert main(["encode", str(src), "-o", str(tmp_path / "enc"), "--model", toy["image"], "-q"]) == 0
    assert sorted(p.relative_to(tmp_path / "enc").as_posix() for p in (tmp_path / "enc").rglob("*.ncf")) == ["a.ncf", "sub/b.ncf"]
    assert main(["decode", str(tmp_path / "enc"), "-o", str(tmp_path / "dec"), "--model", toy["image"], "-q", "--format", "tiff"]) == 0
    for rel, channels in (("a.tiff", 3), ("sub/b.tiff", 1)):
        out = read_media(tmp_path / "dec" / rel)
        assert out.data.shape[0] == channels


def test_one_bad_file_is_reported_and_the_others_go_on(tmp_path, toy, capsys):
    _image(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    rc = main(["encode", str(tmp_path / "bad.png"), str(tmp_path / "good.png"), "-o", str(tmp_path / "out"), "--model", toy["image"], "-q"])
    assert rc == 1
    assert (tmp_path / "out" / "good.ncf").is_file()
    assert not (tmp_path / "out" / "bad.ncf").exists()
    assert "bad.png" in capsys.readouterr().err
    assert _leftovers(tmp_path / "out") == []


def test_corrupted_file_fails_and_leaves_no_output(tmp_path, toy, capsys):
    _image(tmp_path / "a.png")
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.ncf"), "--model", toy["image"], "-q"]) == 0
    blob = bytearray((tmp_path / "a.ncf").read_bytes())
    blob[len(blob) // 2] ^= 0x40
    (tmp_path / "bad.ncf").write_bytes(bytes(blob))
    (tmp_path / "short.ncf").write_bytes(bytes(blob[: len(blob) // 3]))
    (tmp_path / "junk.ncf").write_bytes(b"hello world")
    lying = Container.from_bytes(bytes((tmp_path / "a.ncf").read_bytes()))
    lying.metadata["mode"] = "L"  # a valid container whose metadata contradicts its shape
    (tmp_path / "lying.ncf").write_bytes(lying.to_bytes())
    for name in ("bad", "short", "junk", "lying"):
        rc = main(["decode", str(tmp_path / f"{name}.ncf"), "-o", str(tmp_path / f"{name}.png"), "--model", toy["image"]])
        assert rc == 1, name
        assert not (tmp_path / f"{name}.png").exists()
        assert f"{name}.ncf" in capsys.readouterr().err
    assert _leftovers(tmp_path) == []


def test_foreign_model_is_refused(tmp_path, toy, capsys):
    _image(tmp_path / "a.png")
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.ncf"), "--model", toy["image"], "-q"]) == 0
    assert main(["decode", str(tmp_path / "a.ncf"), "-o", str(tmp_path / "b.png"), "--model", toy["other"]]) == 1
    assert "weights" in capsys.readouterr().err
    assert not (tmp_path / "b.png").exists()
    # an audio model cannot encode an image
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "c.ncf"), "--model", toy["audio"]]) == 1
    assert "codes audio" in capsys.readouterr().err


def test_missing_model_lists_the_available_ones(tmp_path, toy, capsys):
    _image(tmp_path / "a.png")
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.ncf"), "--model", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert "no-such-model" in err and "available" in err
    assert not (tmp_path / "a.ncf").exists()
    # a broken model card is a clear error, not a traceback
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "broken.safetensors").write_bytes(b"")
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.ncf"), "--model", str(tmp_path / "broken.json")]) == 1
    assert "cannot load model" in capsys.readouterr().err
    # a file made by a model that is not installed: the error names it
    blob = Container("walloc-from-the-future", "00", "image", (3, 2, 2), {}, {"data": b""}).to_bytes()
    (tmp_path / "f.ncf").write_bytes(blob)
    assert main(["decode", str(tmp_path / "f.ncf"), "-o", str(tmp_path / "f.png")]) == 1
    assert "walloc-from-the-future" in capsys.readouterr().err


def test_existing_output_is_refused_unless_overwrite(tmp_path, toy, capsys):
    _image(tmp_path / "a.png")
    target = tmp_path / "a.ncf"
    target.write_bytes(b"keep me")
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(target), "--model", toy["image"]]) == 1
    assert "overwrite" in capsys.readouterr().err
    assert target.read_bytes() == b"keep me"
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(target), "--model", toy["image"], "-f", "-q"]) == 0
    assert Container.from_bytes(target.read_bytes()).modality == "image"


def test_decode_to_a_format_that_cannot_hold_the_original_warns(tmp_path, toy, capsys):
    _image(tmp_path / "a.png", channels=4, bit_depth=16)
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.ncf"), "--model", toy["image"], "-q"]) == 0
    assert main(["decode", str(tmp_path / "a.ncf"), "-o", str(tmp_path / "a.jpg"), "--model", toy["image"]]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "8-bit" in err and "alpha" in err
    assert read_media(tmp_path / "a.jpg").metadata["mode"] == "RGB"


def test_default_output_names_and_no_clobbering_the_source(tmp_path, toy, capsys):
    _image(tmp_path / "a.png")
    assert main(["encode", str(tmp_path / "a.png"), "--model", toy["image"], "-q"]) == 0
    assert (tmp_path / "a.ncf").is_file()
    # decoding next to the original would replace it: refused
    before = (tmp_path / "a.png").read_bytes()
    assert main(["decode", str(tmp_path / "a.ncf"), "--model", toy["image"]]) == 1
    assert (tmp_path / "a.png").read_bytes() == before


def test_info_text_and_json(tmp_path, toy, capsys):
    _image(tmp_path / "a.png", channels=4, h=8, w=16)
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.ncf"), "--model", toy["image"], "-q"]) == 0
    size = (tmp_path / "a.ncf").stat().st_size
    capsys.readouterr()
    assert main(["info", str(tmp_path / "a.ncf"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["codec"] == "toy-image" and d["modality"] == "image" and d["shape"] == [4, 8, 16]
    assert d["file_bytes"] == size and d["bpp"] == pytest.approx(8 * size / 128)
    assert d["metadata"]["mode"] == "RGBA" and d["metadata"]["source"] == "a.png"
    assert set(d["sections"]) == {"data"} and d["crc_ok"] is True
    assert main(["info", str(tmp_path / "a.ncf")]) == 0
    text = capsys.readouterr().out
    assert "toy-image" in text and "bpp" in text and "4×8×16" in text


def test_info_audio_kbps_and_corrupted(tmp_path, toy, capsys):
    write_audio(tmp_path / "s.wav", torch.zeros(1, 8000), 8000)  # silence, 1 second
    assert main(["encode", str(tmp_path / "s.wav"), "-o", str(tmp_path / "s.ncf"), "--model", toy["audio"], "-q"]) == 0
    size = (tmp_path / "s.ncf").stat().st_size
    capsys.readouterr()
    assert main(["info", str(tmp_path / "s.ncf"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["duration_s"] == pytest.approx(1.0) and d["kbps"] == pytest.approx(8 * size / 1000)
    blob = bytearray((tmp_path / "s.ncf").read_bytes())
    blob[-10] ^= 1
    (tmp_path / "s.ncf").write_bytes(bytes(blob))
    assert main(["info", str(tmp_path / "s.ncf")]) == 1  # described, but flagged
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.out and "checksum" in captured.err


def test_unreadable_inputs_and_bad_device(tmp_path, toy, capsys):
    assert main(["encode", str(tmp_path / "missing.png"), "--model", toy["image"]]) == 1
    assert "missing.png" in capsys.readouterr().err
    (tmp_path / "x.xyz").write_text("?")
    assert main(["encode", str(tmp_path / "x.xyz"), "--model", toy["image"]]) == 1
    assert "unsupported file type" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["encode", str(tmp_path / "x.xyz"), "--device", "cuda"]) == 1
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "x.xyz"), "--device", "toaster"]) == 2


def test_interrupt_leaves_no_partial_output(tmp_path, toy, monkeypatch):
    _image(tmp_path / "a.png")
    real_write_bytes = Path.write_bytes

    def interrupted(self, data):  # Ctrl-C in the middle of writing the output
        real_write_bytes(self, data[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", interrupted)
    rc = main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.ncf"), "--model", toy["image"], "-q"])
    monkeypatch.undo()
    assert rc == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "models"]


def test_bundled_sample_exists_and_is_small():
    assert SAMPLE.is_file() and SAMPLE.stat().st_size < 400_000
    m = read_media(SAMPLE)
    assert m.metadata["mode"] == "RGB" and tuple(m.data.shape) == (3, 384, 512)
    assert (SAMPLE.parent / "SOURCES.md").is_file()


def test_console_script(tmp_path, toy):
    # The installed `codec` script in a fresh process (one process: it pays torch's import):
    # a good file is described as JSON, a bad one is reported on stderr, and the exit code is 1.
    _image(tmp_path / "a.png")
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.ncf"), "--model", toy["image"], "-q"]) == 0
    (tmp_path / "bad.ncf").write_bytes(b"\x89NCF garbage")
    script = shutil.which("codec")
    command = [script] if script else [sys.executable, "-m", "neuralcodec"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        command + ["info", "--json", str(tmp_path / "a.ncf"), str(tmp_path / "bad.ncf")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 1, run.stderr
    assert json.loads(run.stdout)["codec"] == "toy-image"
    assert "bad.ncf" in run.stderr and "a.ncf" not in run.stderr


def test_name_collisions_and_format_mismatch(tmp_path, toy, capsys):
    _image(tmp_path / "photo.png")
    Image.open(tmp_path / "photo.png").save(tmp_path / "photo.bmp")
    rc = main(["encode", str(tmp_path / "photo.png"), str(tmp_path / "photo.bmp"), "-o", str(tmp_path / "out"), "--model", toy["image"], "-q"])
    assert rc == 1  # both map to out/photo.ncf: the second is refused, the first is written
    assert "same output" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["photo.ncf"]
    assert main(["decode", str(tmp_path / "out"), "-o", str(tmp_path / "dec"), "--format", "wav", "--model", toy["image"]]) == 1
    assert "cannot hold image" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "out"), "--format", "docx"]) == 2
    assert main(["info", str(tmp_path / "photo.png")]) == 1  # not an .ncf file
    assert "bad magic" in capsys.readouterr().err


@pytest.mark.skipif("walloc-image-16x" not in neuralcodec.available(), reason="walloc-image-16x is not shipped yet")
def test_readme_first_command_with_the_default_model(tmp_path, capsys):
    # What the README's first command does, in-process: the bundled sample with the default model.
    assert main(["encode", str(SAMPLE), "-o", str(tmp_path / "sample.ncf"), "-q"]) == 0
    assert main(["decode", str(tmp_path / "sample.ncf"), "-o", str(tmp_path / "sample.png"), "-q"]) == 0
    capsys.readouterr()
    assert main(["info", "--json", str(tmp_path / "sample.ncf")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codec"] == "walloc-image-16x" and info["shape"] == [3, 384, 512]
    x, y = read_media(SAMPLE).data, read_media(tmp_path / "sample.png").data
    psnr = -10 * torch.log10(((x - y) ** 2).mean())
    assert psnr > 25, f"decoded sample is {psnr:.1f} dB: not a working codec"
    assert info["bpp"] < 4


def test_damaged_files_never_crash_the_cli(tmp_path, toy, capsys):
    # Random byte flips, truncations and extensions: always a clean exit code and no output.
    _image(tmp_path / "a.png", h=6, w=5)
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.ncf"), "--model", toy["image"], "-q"]) == 0
    good = (tmp_path / "a.ncf").read_bytes()
    rng = np.random.default_rng(0)
    for i in range(40):
        blob = bytearray(good)
        kind = i % 3
        if kind == 0:
            for pos in rng.integers(0, len(blob), size=int(rng.integers(1, 4))):
                blob[pos] ^= int(rng.integers(1, 256))
        elif kind == 1:
            blob = blob[: int(rng.integers(0, len(blob)))]
        else:
            blob += bytes(rng.integers(0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8))
        path = tmp_path / f"d{i}.ncf"
        path.write_bytes(bytes(blob))
        assert main(["decode", str(path), "-o", str(tmp_path / f"d{i}.png"), "--model", toy["image"], "-q"]) == 1
        assert main(["info", str(path)]) == 1
        assert not (tmp_path / f"d{i}.png").exists()
    capsys.readouterr()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
@pytest.mark.parametrize("recipe", ["walloc-image", "walloc-image-entropy", "walloc-audio", "walloc-video", "hyperprior"])
def test_training_on_a_missing_gpu_is_a_clear_error(tmp_path, recipe, capsys):
    from click.testing import CliRunner

    from neuralcodec.apps.cli import cli

    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(data / "a.png")
    write_audio(data / "a.wav", torch.zeros(2, 4096), 44100)
    source = ["--images", str(data)] if recipe == "walloc-video" else ["--data", str(data)]
    result = CliRunner().invoke(cli, ["train", recipe, *source, "--out", str(tmp_path / "run"), "--device", "cuda"])
    assert result.exit_code != 0
    assert "no CUDA device is available" in result.output
