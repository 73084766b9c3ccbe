"""The espeak-ng spoken-digit generator: layout, labels, voice split, determinism, packing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from neuralcodec.datasets import spoken_digits as sd
from neuralcodec.errors import MediaError

needs_espeak = pytest.mark.skipif(not sd.espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)")
VARIANTS = ["m1", "f2", "klatt", "Andy"]
ACCENTS = ["en-us", "en-gb-scotland"]


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    if not sd.espeak_available():
        pytest.skip("espeak-ng is not installed")
    out = tmp_path_factory.mktemp("digits")
    manifest = sd.make_spoken_digits(out, train_per_digit=2, test_per_digit=1, seed=3, duration=0.9,
                                     accents=ACCENTS, variants=VARIANTS, test_fraction=0.25, progress=False)
    return out, manifest


def test_split_variants_is_disjoint_seeded_and_complete() -> None:
    names = [f"v{i}" for i in range(20)]
    train, test = sd.split_variants(names, 0.2, seed=5)
    assert len(test) == 4 and not set(train) & set(test) and sorted(train + test) == sorted(names)
    assert sd.split_variants(names, 0.2, seed=5) == (train, test)
    assert sd.split_variants(names, 0.2, seed=6) != (train, test)
    with pytest.raises(ValueError):
        sd.split_variants(names, 1.0, seed=0)


def test_missing_espeak_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sd.shutil, "which", lambda name: None)
    assert not sd.espeak_available()
    with pytest.raises(MediaError, match="espeak-ng is not installed"):
        sd.make_spoken_digits(tmp_path, 1, 1, progress=False)
    assert not any(tmp_path.iterdir())


@needs_espeak
def test_synthesize_renders_a_word() -> None:
    x = sd.synthesize("seven", "en-us+f2", pitch=60, speed=160, amplitude=80)
    assert x.dtype == torch.float32 and x.shape[0] == 1 and 0.2 * sd.ESPEAK_RATE < x.shape[1] < 2 * sd.ESPEAK_RATE
    assert 0 < float(x.abs().max()) <= 1
    with pytest.raises(ValueError):
        sd.synthesize("seven", "en-us", pitch=120)


@needs_espeak
def test_layout_labels_and_voice_split(digits: tuple[Path, dict]) -> None:
    from neuralcodec.datasets.media import read_media
    from neuralcodec.datasets.shards import list_media_folder

    out, m = digits
    assert m["test_variants"] and not set(m["train_variants"]) & set(m["test_variants"])
    assert sorted(m["train_variants"] + m["test_variants"]) == sorted(VARIANTS)
    for split, per_digit in (("train", 2), ("test", 1)):
        files, classes = list_media_folder(out / split, labels_from_dirs=True)
        assert classes == [f"{d}-{w}" for d, w in enumerate(sd.DIGITS)]  # folder order is digit order
        assert len(files) == 10 * per_digit
        by_path = {c["path"]: c for c in m["clips"]}
        allowed = set(m[f"{split}_variants"])
        for rel, label in files:
            clip = by_path[f"{split}/{rel}"]
            assert clip["label"] == label and clip["word"] == sd.DIGITS[label] and clip["split"] == split
            assert clip["variant"] in allowed and clip["accent"] in ACCENTS
            assert sd.PITCH_RANGE[0] <= clip["pitch"] <= sd.PITCH_RANGE[1]
    clip = read_media(out / m["clips"][0]["path"])
    assert clip.metadata["sample_rate"] == sd.ESPEAK_RATE and clip.metadata["subtype"] == "PCM_16"
    assert tuple(clip.data.shape) == (1, round(0.9 * sd.ESPEAK_RATE))
    # The word is inside the window, with silence around it somewhere.
    assert float(clip.data.abs().max()) > 0.01 and float(clip.data[:, :10].abs().max()) + float(clip.data[:, -10:].abs().max()) < 0.05
    assert json.loads((out / "manifest.json").read_text())["clips"] == m["clips"]


@needs_espeak
def test_same_seed_same_bytes_other_seed_other_data(digits: tuple[Path, dict], tmp_path: Path) -> None:
    out, m = digits
    again = sd.make_spoken_digits(tmp_path / "a", train_per_digit=2, test_per_digit=1, seed=3, duration=0.9,
                                  accents=ACCENTS, variants=VARIANTS, test_fraction=0.25, progress=False)
    assert again == m
    assert _tree_digest(tmp_path / "a") == _tree_digest(out)
    other = sd.make_spoken_digits(tmp_path / "b", train_per_digit=2, test_per_digit=1, seed=4, duration=0.9,
                                  accents=ACCENTS, variants=VARIANTS, test_fraction=0.25, progress=False)
    assert [c["voice"] for c in other["clips"]] != [c["voice"] for c in m["clips"]]


@needs_espeak
def test_resampled_output(tmp_path: Path) -> None:
    from neuralcodec.datasets.media import audio_info

    m = sd.make_spoken_digits(tmp_path, train_per_digit=1, test_per_digit=0, seed=0, duration=0.8, sample_rate=44100,
                              accents=ACCENTS, variants=VARIANTS, fmt="flac", progress=False)
    info = audio_info(tmp_path / m["clips"][3]["path"])
    assert (info["sample_rate"], info["frames"], info["channels"], info["format"]) == (44100, round(0.8 * 44100), 1, "FLAC")


@needs_espeak
def test_pack_and_latent_dataset_keep_digit_labels(digits: tuple[Path, dict], tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    """The clips pack into audio shards (labels from the class folders) and read back as latents."""
    from neuralcodec.codecs.walloc_audio import WaLLoCAudio
    from neuralcodec.datasets import LatentDataset, pack

    out, _ = digits
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add overhead on a busy machine
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    codec = WaLLoCAudio(latent_channels=4, levels=3, decoder_channels=8, decoder_blocks=1, context_hidden=8,
                        context_levels=1, sample_rate=sd.ESPEAK_RATE, chunk=32768, margin=64, crossfade=64).eval()
    index = pack(out / "test", tmp_path / "shards", model=codec, labels_from_dirs=True, shard_size=4, progress=False)
    assert index["modality"] == "audio" and index["items"] == 10 and index["classes"][7] == "7-seven"
    ds = LatentDataset(tmp_path / "shards", model=codec, batch_size=10)
    (batch,) = list(ds)
    assert batch["label"].tolist() == list(range(10))
    frames = round(0.9 * sd.ESPEAK_RATE)
    # one chunk: the clip plus 2**J zeros at each end, at 2**-J of the rate
    assert tuple(batch["latent"].shape) == (10, 4, -(-(frames + 2 * 8) // 8))
    assert torch.equal(batch["latent"][0], codec.latents(ds.blob(0)))


def test_pack_audio_tensors_keep_their_sample_rate(tmp_path: Path) -> None:
    """An iterable of audio tensors gives each clip's rate in its metadata; the container keeps it."""
    from neuralcodec.codecs.walloc_audio import WaLLoCAudio
    from neuralcodec.datasets import pack, read_shard
    from neuralcodec.entropy import Container

    torch.manual_seed(0)
    codec = WaLLoCAudio(latent_channels=4, levels=3, decoder_channels=8, decoder_blocks=1, context_hidden=8,
                        chunk=8192, margin=64, crossfade=64).eval()  # a 44.1 kHz model
    clips = [(0.1 * torch.randn(1, 2205), {"label": 3, "sample_rate": 22050}), (0.1 * torch.randn(1, 4410), 4)]
    pack(clips, tmp_path / "s", model=codec, progress=False)
    first, second = read_shard(tmp_path / "s", "shard-00000.tar")
    assert (first.label, second.label) == (3, 4)
    assert Container.from_bytes(first.blob).metadata["sample_rate"] == 22050  # coded as 22.05 kHz audio
    assert Container.from_bytes(second.blob).metadata["sample_rate"] == 44100  # no rate given: the codec's
    assert codec.decompress(first.blob).shape == (1, 2205)
    with pytest.raises(ValueError, match="sample_rate"):
        pack([(torch.zeros(1, 100), {"sample_rate": "fast"})], tmp_path / "bad", model=codec, progress=False)
