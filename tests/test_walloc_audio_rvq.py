"""The WaLLoC-audio RVQ token codec: tokens, bit-exact decoding, bitrates, bad input, the CLI, training.

A tiny model (8 latent channels, J=3, 16-code codebooks) trained for a few steps on noise
keeps every test fast; the shipped model is exercised when its weights are present.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from neuralcodec import BitstreamError, ModelMismatchError
from neuralcodec.codecs.registry import build, save
from neuralcodec.codecs.walloc_audio_rvq import WaLLoCAudioRVQ
from neuralcodec.entropy import Container

TINY = dict(latent_channels=16, levels=3, decoder_channels=8, decoder_blocks=1, groups=2, num_quantizers=4,
            codebook_size=16, block_frames=64, margin_frames=8)


def _music(channels: int, frames: int, seed: int = 0, rate: int = 44100) -> torch.Tensor:
    """A few tones plus a little noise, different per channel, at about -20 dBFS RMS."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames) / rate
    out = []
    for c in range(channels):
        f = torch.tensor([220.0, 330.0, 550.0]) * (1 + 0.01 * c)
        tones = sum(torch.sin(2 * math.pi * fi * t + c) for fi in f) / 3
        out.append(0.15 * tones + 0.02 * torch.randn(frames, generator=g))
    return torch.stack(out)


@pytest.fixture(scope="module")
def tiny() -> WaLLoCAudioRVQ:
    torch.manual_seed(0)
    m = WaLLoCAudioRVQ(**TINY)
    # An untrained WaLLoC-audio is an orthogonal linear autoencoder: copy its analysis/synthesis.
    base = build("walloc-audio", dict(latent_channels=16, levels=3, decoder_channels=8, decoder_blocks=1,
                                      context_hidden=8, init_step=0.02))
    m.load_analysis_synthesis(base)
    # Train the codebooks briefly on latents of the test signal (k-means init, then EMA).
    with torch.no_grad():
        x = _music(2, 8192, seed=1)[None]
        y = m.analysis(x / x.pow(2).mean().sqrt() * 0.1)
        m.quantizer.train()
        m.quantizer(m._interleave(y), m.num_quantizers)
        for _ in range(5):
            m.quantize(y)
        m.quantizer.eval()
        # Skewed priors from the token counts, so entropy coding has something to save.
        _, tokens, _ = m.quantize(y)
        for q, prior in enumerate(m.priors):
            counts = torch.stack([torch.bincount(tokens[0, g, q], minlength=16) for g in range(2)])
            prior.set_from_counts(counts.double())
    m.eval()
    m.update()
    m.name = "tiny-rvq"
    return m


def test_tokens_are_the_quantizer_indices_and_decode_bit_exactly(tiny):
    x = _music(2, 403)  # 51 frames: one block
    x = x * (0.1 / x.pow(2).mean().sqrt())  # gain code 0: the network sees x itself
    blob = tiny.compress(x)
    tokens = tiny.tokens(blob)
    assert tokens.shape == (2, 4, 51) and tokens.dtype == torch.int64
    # The quantizer's own indices of the analysis of x with margin_frames of zeros on each side.
    m = tiny.margin_frames
    padded = torch.nn.functional.pad(x, (8 * m, 51 * 8 - 403 + 8 * m))[None]
    _, indices, _ = tiny.quantizer(tiny._interleave(tiny.analysis(padded)[..., m:m + 51]))
    assert torch.equal(tokens, indices[:, 0].permute(0, 2, 1))
    codes, info = tiny.tokens(blob, side_info=True)
    assert torch.equal(tiny.from_tokens(codes, **info), tiny.decompress(blob))
    assert torch.equal(tiny.latents(blob), tiny.dequantize(tokens[None])[0])


def test_round_trip_across_blocks_and_token_api(tiny):
    x = _music(2, 64 * 8 * 3 + 77, seed=3) * 0.5  # three blocks and a partial one
    blob = tiny.compress(x, num_quantizers=3)
    tokens, info = tiny.tokens(blob, side_info=True)
    assert tokens.shape[1] == 3
    assert torch.equal(tokens, tiny.encode_tokens(x, num_quantizers=3)[0][0])
    y = tiny.decompress(blob)
    assert y.shape == x.shape
    assert torch.equal(tiny.from_tokens(tokens, **info), y)
    # Without side info: the level-normalized signal, 8 samples per frame, stereo.
    assert tiny.from_tokens(tokens).shape == (2, tokens.shape[-1] * 8)


def test_fewer_quantizers_fewer_bytes_lower_error_with_more(tiny):
    x = _music(2, 6000, seed=4)
    blobs = [tiny.compress(x, num_quantizers=k) for k in range(1, 5)]
    sizes = [len(b) for b in blobs]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    errors = [float((tiny.decompress(b) - x).pow(2).mean()) for b in blobs]
    assert errors[-1] < errors[0]
    # Dropping streams gives the bytes of encoding with fewer quantizers.
    assert tiny.truncate(blobs[-1], 2) == blobs[1]
    with pytest.raises(ValueError):
        tiny.truncate(blobs[0], 3)
    with pytest.raises(ValueError):
        tiny.compress(x, num_quantizers=5)


def test_entropy_coded_size_follows_the_priors(tiny):
    x = _music(2, 8192, seed=1)
    blob = tiny.compress(x)
    c = Container.from_bytes(blob)
    tokens = tiny.tokens(blob)
    ideal_total = 0.0
    for i in range(tiny.num_quantizers):
        ideal = float(tiny.priors[i].bits(tokens[None, :, i]).detach())  # -sum log2 p under the prior
        assert 8 * len(c.sections[f"q{i}"]) <= 1.02 * ideal + 8 * 64  # the coder's overhead is small
        ideal_total += ideal
    assert ideal_total < tokens.numel() * math.log2(tiny.codebook_size)  # skewed priors beat raw indices


@pytest.mark.parametrize("channels,frames", [(1, 5000), (2, 1), (1, 7), (3, 2000), (2, 9)])
def test_mono_short_and_multichannel(tiny, channels, frames):
    x = _music(channels, frames, seed=channels + frames)
    blob = tiny.compress(x)
    y = tiny.decompress(blob)
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    tokens = tiny.tokens(blob)
    assert tokens.dim() == (4 if channels > 2 else 3)
    if channels == 1 and frames > 100:  # mono decodes to one averaged channel of the input's level
        assert float((y - x).pow(2).mean()) < float(x.pow(2).mean())


def test_silence_decodes_to_exact_zeros(tiny):
    x = torch.zeros(2, 4000)
    blob = tiny.compress(x)
    assert torch.equal(tiny.decompress(blob), x)
    tokens, info = tiny.tokens(blob, side_info=True)
    assert float(info["gain"][0]) == 0.0
    # One silent channel pair next to a loud one: each pair has its own gain.
    x3 = torch.cat([_music(2, 4000), torch.zeros(1, 4000)])
    y3 = tiny.decompress(tiny.compress(x3))
    assert torch.equal(y3[2], torch.zeros(4000)) and float(y3[:2].abs().max()) > 0


def test_other_sample_rate_and_batches(tiny):
    x = _music(2, 1600, rate=16000)
    blob = tiny.compress(x, sample_rate=16000)
    assert Container.from_bytes(blob).metadata["sample_rate"] == 16000
    assert tiny.decompress(blob).shape == x.shape
    batch = torch.stack([_music(2, 900, seed=s) for s in range(2)])
    blobs = tiny.compress(batch)
    assert isinstance(blobs, list) and len(blobs) == 2
    assert [tuple(y.shape) for y in tiny.decompress(blobs)] == [(2, 900)] * 2


def test_bad_input_is_a_clear_error(tiny):
    for bad in (torch.zeros(0, 10), torch.zeros(2, 0), torch.zeros(10)):
        with pytest.raises(ValueError):
            tiny.compress(bad)
    with pytest.raises(ValueError, match="NaN"):
        tiny.compress(torch.full((2, 100), float("nan")))
    with pytest.raises(ValueError):
        tiny.from_tokens(torch.full((2, 2, 5), 16))
    with pytest.raises(ValueError):
        tiny.from_tokens(torch.zeros(3, 2, 5, dtype=torch.long))


def test_corrupt_truncated_and_foreign_files(tiny):
    blob = tiny.compress(_music(2, 3000))
    for broken in (blob[:-1], blob[: len(blob) // 2], blob[:10], b"", blob[:40] + bytes([blob[40] ^ 1]) + blob[41:]):
        with pytest.raises(BitstreamError):
            tiny.decompress(broken)
    c = Container.from_bytes(blob)

    def rewrite(**changes) -> bytes:
        meta = json.loads(json.dumps(c.metadata))
        sections = dict(c.sections)
        for key, value in changes.items():
            if key == "sections":
                sections = value
            elif key == "shape":
                pass
            else:
                meta["walloc_audio_rvq"][key] = value
        shape = changes.get("shape", c.shape)
        return Container(c.codec, c.weights_hash, c.modality, shape, meta, sections).to_bytes()

    bad_files = [
        rewrite(quantizers=9),
        rewrite(quantizers=3),  # sections say 4
        rewrite(frames=10**9),
        rewrite(pairs=2),
        rewrite(coded_frames=2999),
        rewrite(shape=(2, 30_000_000), coded_frames=30_000_000, frames=-(-30_000_000 // 8)),  # huge claim, tiny streams
        rewrite(sections={k: v for k, v in c.sections.items() if k != "q3"}),
        rewrite(sections={**c.sections, "gain": b"\x00"}),
        rewrite(sections={**c.sections, "q1": c.sections["q1"][:3]}),
    ]
    for bad in bad_files:
        with pytest.raises(BitstreamError):
            tiny.decompress(bad)
    other = WaLLoCAudioRVQ(**TINY).eval()
    other.update()
    other.name = "tiny-rvq"
    with pytest.raises(ModelMismatchError):
        other.decompress(blob)


def test_cli_encode_decode_info(tiny, tmp_path):
    import soundfile as sf

    from neuralcodec.apps.cli import main

    model_path = save(tiny, tmp_path / "tiny-rvq")
    wav = tmp_path / "song.wav"
    x = _music(2, 5000).numpy().T
    sf.write(wav, x, 44100, subtype="FLOAT")
    for k in (1, 4):
        ncf = tmp_path / f"song{k}.ncf"
        assert main(["encode", str(wav), "-o", str(ncf), "--model", f"{model_path}.json", "--quantizers", str(k), "-q"]) == 0
        assert Container.from_bytes(ncf.read_bytes()).metadata["walloc_audio_rvq"]["quantizers"] == k
    assert (tmp_path / "song1.ncf").stat().st_size < (tmp_path / "song4.ncf").stat().st_size
    out = tmp_path / "song.wav.out.wav"
    assert main(["decode", str(tmp_path / "song4.ncf"), "-o", str(out), "--model", f"{model_path}.json", "-q"]) == 0
    y, rate = sf.read(out, always_2d=True)
    assert rate == 44100 and y.shape == (5000, 2)
    assert main(["info", str(tmp_path / "song4.ncf")]) == 0
    assert main(["train", "walloc-audio-rvq", "--help"]) == 0  # the recipe is a `codec train` preset
    # Too many quantizers, or --quantizers for a codec without them: a clear failure, no output file.
    bad = tmp_path / "bad.ncf"
    assert main(["encode", str(wav), "-o", str(bad), "--model", f"{model_path}.json", "--quantizers", "9", "-q"]) == 1
    assert not bad.exists()


def test_training_recipe_on_a_tiny_folder(tmp_path):
    import soundfile as sf

    from neuralcodec import load
    from neuralcodec.apps.train_walloc_audio_rvq import RVQTrainConfig, train_walloc_audio_rvq

    base = build("walloc-audio", dict(latent_channels=8, levels=3, decoder_channels=8, decoder_blocks=1,
                                      context_hidden=8, chunk=4096, margin=64, crossfade=64)).eval()
    base.update()
    save(base, tmp_path / "base")
    (tmp_path / "data").mkdir()
    for i in range(2):
        sf.write(tmp_path / "data" / f"a{i}.wav", _music(2, 12000, seed=i).numpy().T, 44100)
    cfg = RVQTrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "run"), name="tiny", base=str(tmp_path / "base.json"),
                         groups=2, num_quantizers=3, codebook_size=16, steps=6, batch_sequences=4, window=16,
                         init_vectors=512, decoder_steps=2, decoder_batch=2, decoder_window=16, prior_frames=1024)
    path = train_walloc_audio_rvq(cfg, progress=False)
    model = load(f"{path}.json")
    card = json.loads((tmp_path / "run" / "tiny.json").read_text())
    assert card["weights_hash"] == model.weights_hash()
    # Analysis copied from the base; the fine-tuned decoder moved away from it.
    assert torch.equal(model.encoder.weight, base.encoder.weight)
    assert card["training"]["codebook_steps"] == 6 and card["training"]["decoder_finetune"]["steps"] == 2
    stats = card["training"]["codebooks_on_training_latents"]
    assert len(stats) == 3 and len(stats[0]) == 2 and stats[0][0]["utilization"] > 0.5
    assert all(p.has_tables() for p in model.priors)
    x = _music(2, 2000, seed=5)
    assert model.decompress(model.compress(x)).shape == x.shape


def test_shipped_model_if_present():
    from neuralcodec import available, load

    if "walloc-audio-rvq" not in available():
        pytest.skip("walloc-audio-rvq weights not shipped")
    m = load("walloc-audio-rvq")
    x = _music(2, 44100 // 2, seed=7)
    errors, sizes = [], []
    for k in (1, m.num_quantizers):
        blob = m.compress(x, num_quantizers=k)
        tokens, info = m.tokens(blob, side_info=True)
        y = m.decompress(blob)
        assert torch.equal(m.from_tokens(tokens, **info), y)
        errors.append(float((y - x).pow(2).mean()))
        sizes.append(len(blob))
    assert sizes[0] < sizes[1] and errors[1] < errors[0]
    assert 10 * np.log10(float(x.pow(2).mean()) / errors[1]) > 3.0  # tones survive all quantizers
