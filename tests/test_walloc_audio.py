"""WaLLoC audio: round trips, lengths, channels, gain, sample rate, chunking, latents, errors, CLI.

The tiny test models keep all 16 wavelet packet coefficients (J=3, stereo) in 16 latent
channels with an orthogonal encoder and its exact linear inverse as decoder, so an untrained
model is already a good codec (only rounding of the latents): errors measured here are real
coding errors, not noise of a random network.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import neuralcodec
from neuralcodec import BitstreamError
from neuralcodec.codecs.walloc_audio import WaLLoCAudio, chunk_plan
from neuralcodec.entropy import Container
from neuralcodec.errors import ModelMismatchError

torch.set_num_threads(1)


def tiny(seed: int = 0, **kw) -> WaLLoCAudio:
    torch.manual_seed(seed)
    args = dict(latent_channels=16, levels=3, decoder_channels=8, decoder_blocks=1, context_hidden=8,
                init_step=0.02, chunk=1024, margin=32, crossfade=64)
    args.update(kw)
    return WaLLoCAudio(**args).eval()


def music(channels: int, frames: int, seed: int = 0, amplitude: float = 0.3) -> torch.Tensor:
    """A few sinusoids with a slow envelope and a little noise (a stand-in for music)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames, dtype=torch.float64) / 44100
    out = []
    for _ in range(channels):
        f = 80 + 2000 * torch.rand(4, generator=g, dtype=torch.float64)
        x = sum(torch.sin(2 * math.pi * fi * t + 6 * torch.rand(1, generator=g, dtype=torch.float64)) for fi in f)
        x = x * (0.6 + 0.4 * torch.sin(2 * math.pi * 3 * t)) + 0.05 * torch.randn(frames, generator=g, dtype=torch.float64)
        out.append(x)
    x = torch.stack(out).float()
    return amplitude * x / x.abs().max().clamp_min(1e-12)


def snr_db(x: torch.Tensor, y: torch.Tensor) -> float:
    return 10 * math.log10(float((x.double() ** 2).sum() / ((x.double() - y.double()) ** 2).sum().clamp_min(1e-30)))


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("frames", [1, 7, 1000, 1001, 5003])
def test_round_trip_channels_and_lengths(channels, frames):
    m = tiny()
    x = music(channels, frames, seed=frames)
    y = m.decompress(m.compress(x, metadata={"sample_rate": 44100}))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert bool(torch.isfinite(y).all())
    if frames >= 1000:
        assert snr_db(x, y) > 20.0
    else:  # a handful of samples: still the right values, loosely
        assert float((y - x).abs().max()) < 0.3 * float(x.abs().max()) + 1e-6


def test_mono_decodes_like_its_stereo_duplicate():
    m = tiny()
    x = music(1, 3000)
    mono = m.decompress(m.compress(x))
    stereo = m.decompress(m.compress(x.expand(2, -1).contiguous()))
    assert torch.allclose(mono[0], stereo.mean(0), atol=1e-6)


def test_silence_and_single_zero_sample_decode_to_exact_zeros():
    m = tiny()
    for x in (torch.zeros(2, 3000), torch.zeros(1, 1)):
        y = m.decompress(m.compress(x))
        assert y.shape == x.shape and torch.equal(y, torch.zeros_like(x))


def test_silent_chunk_inside_music_is_silent():
    m = tiny()
    x = music(2, 6000)
    x[:, 2500:5000] = 0  # longer than a chunk: at least one chunk is all zeros
    y = m.decompress(m.compress(x))
    assert torch.isfinite(y).all()
    assert snr_db(x, y) > 20.0


@pytest.mark.parametrize("amplitude", [1e-4, 0.01, 0.9])
def test_loudness_preserved(amplitude):
    m = tiny()
    x = music(2, 4000, amplitude=amplitude)
    y = m.decompress(m.compress(x))
    rms_in, rms_out = float(x.pow(2).mean().sqrt()), float(y.pow(2).mean().sqrt())
    assert abs(20 * math.log10(rms_out / rms_in)) < 0.2
    assert snr_db(x, y) > 20.0  # same relative quality at every level


def test_sample_rate_stored_and_resampled_only_when_needed():
    m = tiny()
    x = music(2, 2000)
    for rate, coded in ((44100, 44100), (48000, 48000), (16000, 44100)):
        blob = m.compress(x, metadata={"sample_rate": rate})
        c = Container.from_bytes(blob)
        assert c.metadata["sample_rate"] == rate and c.shape == (2, 2000)
        assert c.metadata["walloc_audio"]["coded_rate"] == coded
        y = m.decompress(blob)
        assert y.shape == x.shape
        if rate != coded:  # through a resampler twice: band-limited, but close
            assert snr_db(x, y) > 10.0


def test_chunk_plan_covers_signal_with_fixed_overlap():
    mult, chunk, overlap = 8, 1024, 128
    for frames in (1, 100, 1024, 5000, 12345):
        plan = chunk_plan(frames, chunk, overlap, mult)
        assert plan[0][0] == 0 and all(length % mult == 0 for _, length in plan)
        assert plan[-1][0] + plan[-1][1] >= 2 * mult + frames
        for (s0, l0), (s1, _) in zip(plan, plan[1:]):
            assert l0 == chunk and s1 - s0 == chunk - overlap


def test_chunked_decode_equals_overlap_add_of_independent_chunks():
    """The expected output built from scratch: every chunk coded alone, windows, overlap-add."""
    m = tiny()
    x = music(2, 5000)
    blob = m.compress(x)
    y = m.decompress(blob)
    plan = chunk_plan(5000, m.chunk, m.overlap, m.multiple)
    assert len(plan) >= 5
    padded = torch.cat([torch.zeros(2, m.multiple), x, torch.zeros(2, plan[-1][0] + plan[-1][1])], 1)
    expected = torch.zeros_like(padded)
    weight = torch.zeros(padded.shape[1])
    for k, (start, length) in enumerate(plan):
        piece = padded[:, start:start + length]
        rms = piece.double().pow(2).mean().sqrt()
        gain = 2 ** (round(16 * math.log2(float(rms) / 0.1)) / 16)  # the network sees the chunk at RMS 0.1
        q = torch.round(m.analysis((piece / gain)[None]))
        w = m._window(length, k == 0, k == len(plan) - 1, torch.device("cpu"))
        expected[:, start:start + length] += m.synthesis(q)[0] * gain * w
        weight[start:start + length] += w
    assert torch.allclose(weight[m.multiple:m.multiple + 5000], torch.ones(5000), atol=1e-6)
    expected = expected[:, m.multiple:m.multiple + 5000]
    assert torch.allclose(y, expected, atol=1e-5)
    # The crossfades (where chunks meet) are not worse than the rest.
    hop = m.chunk - m.overlap
    seams = torch.zeros(5000, dtype=torch.bool)
    for s, _ in plan[1:]:
        a = s + m.margin - m.multiple
        seams[max(a, 0):a + m.crossfade] = True
    assert snr_db(x[:, seams], y[:, seams]) > snr_db(x, y) - 3.0
    assert hop > 0


def test_stream_encoder_and_decoder_match_whole_signal_calls():
    m = tiny()
    x = music(2, 7777)
    blob = m.compress(x)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.integers(1, 7777, 12))
    blocks = [x[:, a:b] for a, b in zip([0, *cuts], [*cuts, 7777])]
    assert m.compress_stream(iter(blocks), 44100) == blob
    pieces = list(m.decompress_stream(blob))
    assert len(pieces) > 1 and max(p.shape[1] for p in pieces) <= m.chunk
    assert torch.equal(torch.cat(pieces, 1), m.decompress(blob))


def test_latents_equal_encoder_quantized_latents():
    m = tiny()
    for x in (music(2, 5000), music(1, 10), music(3, 3000)):
        blob = m.compress(x)
        lat = m.latents(blob)
        assert torch.equal(lat, m.quantized_latents(x))
        assert lat.shape[-2] == 16 and lat.shape[-1] == sum(b - a for a, b in [m._owned(k, len(p), l) for p in [m._plan(x.shape[1])] for k, (_, l) in enumerate(p)])
    assert m.quantized_latents(music(2, 5000)[None]).shape[0] == 1


def test_corrupted_truncated_and_tampered_files_raise_bitstream_error():
    m = tiny()
    blob = m.compress(music(2, 3000))
    for bad in (blob[:-1], blob[: len(blob) // 2], b"", b"not a file"):
        with pytest.raises(BitstreamError):
            m.decompress(bad)
    rng = np.random.default_rng(0)
    for _ in range(20):
        corrupt = bytearray(blob)
        pos = int(rng.integers(0, len(corrupt)))
        corrupt[pos] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(BitstreamError):
            m.decompress(bytes(corrupt))
    c = Container.from_bytes(blob)
    for change in ({"chunks": 1}, {"pairs": 2}, {"coded_frames": 10**12}, {"digests": ["00"]}, {"coded_rate": 8000}):
        meta = dict(c.metadata)
        meta["walloc_audio"] = {**meta["walloc_audio"], **change}
        forged = Container(c.codec, c.weights_hash, c.modality, c.shape, meta, c.sections).to_bytes()
        with pytest.raises(BitstreamError):
            m.decompress(forged)
    sections = dict(c.sections, data=c.sections["data"][:-1])
    with pytest.raises(BitstreamError):
        m.decompress(Container(c.codec, c.weights_hash, c.modality, c.shape, c.metadata, sections).to_bytes())
    sections = dict(c.sections, data=bytes(len(c.sections["data"])))  # valid lengths, garbage streams
    with pytest.raises(BitstreamError):
        m.decompress(Container(c.codec, c.weights_hash, c.modality, c.shape, c.metadata, sections).to_bytes())


def test_wrong_model_and_bad_input():
    a, b = tiny(0), tiny(1)
    blob = a.compress(music(2, 500))
    with pytest.raises(ModelMismatchError):
        b.decompress(blob)
    with pytest.raises(ValueError):
        a.compress(torch.full((2, 100), float("nan")))
    with pytest.raises(ValueError):
        a.compress(torch.zeros(2, 0))
    with pytest.raises(ValueError):
        a.compress_stream([music(2, 100)], 16000)


def test_cli_encode_decode_info_with_saved_tiny_model(tmp_path):
    from neuralcodec.apps.cli import main
    from neuralcodec.codecs.registry import save
    from neuralcodec.datasets.media import read_audio, write_audio

    m = tiny()
    m.name = "tiny-audio"
    card = save(m, tmp_path / "tiny-audio")
    x = music(2, 3001)
    write_audio(tmp_path / "in.wav", x, 44100, subtype="FLOAT")
    model = str(card) + ".json"
    assert main(["encode", str(tmp_path / "in.wav"), "-o", str(tmp_path / "a.ncf"), "--model", model, "-q"]) == 0
    assert main(["decode", str(tmp_path / "a.ncf"), "-o", str(tmp_path / "out.flac"), "--model", model, "-q"]) == 0
    assert main(["info", str(tmp_path / "a.ncf")]) == 0
    y, rate = read_audio(tmp_path / "out.flac")
    assert rate == 44100 and y.shape == x.shape and snr_db(x, y) > 20.0


def test_cli_streams_long_audio_with_the_same_bytes_as_whole_file_coding(tmp_path, monkeypatch):
    # The CLI codes audio block by block (bounded memory); the file must equal whole-file coding.
    from neuralcodec.apps import coding
    from neuralcodec.apps.cli import main
    from neuralcodec.codecs.registry import load, save
    from neuralcodec.datasets.media import read_media, write_audio

    monkeypatch.setattr(coding, "STREAM_FRAMES", 700)  # several blocks per codec chunk and across chunks
    m = tiny()
    m.name = "tiny-audio"
    model = str(save(m, tmp_path / "tiny-audio")) + ".json"
    x = music(2, 5003)
    write_audio(tmp_path / "in.wav", x, 44100, subtype="FLOAT")
    calls = []
    real = coding._encode_audio_stream
    monkeypatch.setattr(coding, "_encode_audio_stream", lambda *a: calls.append(1) or real(*a))
    assert main(["encode", str(tmp_path / "in.wav"), "-o", str(tmp_path / "a.ncf"), "--model", model, "-q"]) == 0
    assert calls, "audio at the model's rate must take the streaming path"
    codec = load(model)
    media = read_media(tmp_path / "in.wav")
    assert (tmp_path / "a.ncf").read_bytes() == codec.compress(media.data, metadata=media.metadata)
    assert main(["decode", str(tmp_path / "a.ncf"), "-o", str(tmp_path / "out.wav"), "--model", model, "-q"]) == 0
    y = read_media(tmp_path / "out.wav").data
    whole = codec.decompress((tmp_path / "a.ncf").read_bytes())
    assert y.shape == x.shape and torch.allclose(y, whole, atol=1e-6)


def test_train_function_exports_loadable_model(tmp_path):
    from neuralcodec.apps.train_walloc_audio import AudioTrainConfig, train_walloc_audio
    from neuralcodec.codecs.registry import load
    from neuralcodec.datasets.media import write_audio

    data = tmp_path / "music"
    data.mkdir()
    for i in range(2):
        write_audio(data / f"{i}.wav", music(2, 20000, seed=i), 44100)
    cfg = AudioTrainConfig(data=str(data), out=str(tmp_path / "run"), levels=3, latent_channels=8,
                           decoder_channels=8, decoder_blocks=1, steps=3, batch_size=2, crop=2048, threads=1,
                           pca_crops=8, checkpoint_every=2, entropy_steps=3, entropy_crop=2048, entropy_pool=4,
                           entropy_batch=2, model_config=dict(context_hidden=4, chunk=4096, margin=64, crossfade=128))
    path = train_walloc_audio(cfg, progress=False)
    model = load(str(path) + ".json")
    assert model.name == "walloc-audio" and model.modality == "audio"
    x = music(2, 3000)
    assert model.decompress(model.compress(x)).shape == (2, 3000)
    cfg.steps = 4
    train_walloc_audio(cfg, resume=True, progress=False)
    log = (tmp_path / "run" / "log.csv").read_text().strip().splitlines()
    assert log[0].startswith("step,") and log[-1].startswith("4,")


@pytest.mark.skipif("walloc-audio" not in neuralcodec.available(), reason="shipped model not present")
def test_shipped_model_codes_music_at_a_sane_rate():
    codec = neuralcodec.load("walloc-audio")
    x = music(2, 44100, seed=3)
    blob = codec.compress(x, metadata={"sample_rate": 44100})
    y = codec.decompress(blob)
    assert y.shape == x.shape and snr_db(x, y) > 5.0
    kbps = len(blob) * 8 / 1.0 / 1000
    assert 1 < kbps < 300
    assert torch.equal(codec.latents(blob), codec.quantized_latents(x))
    # the coding path feeds the network what it was trained on (chunks at target RMS): its
    # coded size is close to the model's own estimate on the same signal
    with torch.no_grad():
        y = torch.round(codec.analysis(x[None, :, :44032] * (codec.target_rms / x.pow(2).mean().sqrt())))
        estimate = float(-torch.log2(codec.entropy(y, y)).sum()) / 8
    assert len(blob) < 1.5 * estimate + 2000
