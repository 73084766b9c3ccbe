"""Batched latent decoding of WaLLoC audio files (``neuralcodec.datasets.decode_latents``).

Every blob's latents from the batched path must equal ``codec.latents(blob)`` exactly, for
files of different lengths and channel counts (mono, stereo, three channels, several
chunks, silence), with the exact (batch-in-one-pass) and the float entropy model.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

import neuralcodec
from neuralcodec.codecs import registry
from neuralcodec.codecs.walloc_audio import WaLLoCAudio
from neuralcodec.datasets import decode_latents
from neuralcodec.datasets import latent as latent_module
from neuralcodec.errors import ModelMismatchError

torch.set_num_threads(1)


def tiny(entropy_model: str) -> WaLLoCAudio:
    torch.manual_seed(0)
    return WaLLoCAudio(latent_channels=16, levels=3, decoder_channels=8, decoder_blocks=1, context_hidden=8,
                       init_step=0.02, chunk=1024, margin=32, crossfade=64, entropy_model=entropy_model).eval()


def tone(channels: int, frames: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames) / 22050
    f = 100 + 3000 * torch.rand(channels, 1, generator=g)
    return 0.3 * torch.sin(2 * math.pi * f * t) + 0.02 * torch.randn(channels, frames, generator=g)


def blobs_of(codec: WaLLoCAudio) -> list[bytes]:
    clips = [tone(1, 1000, 0), tone(2, 3000, 1), tone(1, 1000, 2), torch.zeros(1, 600), tone(3, 1001, 3),
             tone(1, 7, 4), tone(2, 2500, 5), tone(1, 1003, 6)]
    return [codec.compress(x, sample_rate=22050) for x in clips]


@pytest.mark.parametrize("entropy_model", ["hierarchical_exact", "hierarchical"])
def test_batched_audio_latents_equal_single_file_latents(entropy_model, monkeypatch):
    codec = tiny(entropy_model)
    blobs = blobs_of(codec)
    batched = decode_latents(codec, blobs)
    assert len(batched) == len(blobs)
    for latent, blob in zip(batched, blobs):
        single = codec.latents(blob)
        assert latent.shape == single.shape and torch.equal(latent, single)
    # the silent clip's latents are exact zeros; several chunks were coded for the 3,000-frame clip
    assert not bool(batched[3].any())
    assert batched[1].shape[-1] > 1024 // codec.multiple
    # order and grouping do not matter
    again = decode_latents(codec, blobs[::-1])
    assert all(torch.equal(a, b) for a, b in zip(again[::-1], batched))
    # groups split into several calls (the memory bound of long files) decode alike
    monkeypatch.setattr(latent_module, "_AUDIO_POSITIONS_PER_CALL", 300)
    split = decode_latents(codec, blobs)
    assert all(torch.equal(a, b) for a, b in zip(split, batched))


def test_batched_audio_latents_refuse_a_corrupted_file():
    codec = tiny("hierarchical_exact")
    blobs = blobs_of(codec)[:3]
    bad = bytearray(blobs[1])
    bad[-5] ^= 0xFF
    with pytest.raises((neuralcodec.BitstreamError, ModelMismatchError)):
        decode_latents(codec, [blobs[0], bytes(bad), blobs[2]])


@pytest.mark.skipif("walloc-audio" not in neuralcodec.available(), reason="shipped model not present")
def test_shipped_walloc_audio_is_batch_exact_and_refuses_files_of_the_float_model():
    codec = neuralcodec.load("walloc-audio")
    assert getattr(codec.entropy, "batch_exact", False)
    clips = [tone(1, 22050 // 4, 0), tone(1, 22050 // 4, 1), tone(2, 22050 // 3, 2), torch.zeros(1, 4000)]
    blobs = [codec.compress(x, sample_rate=22050) for x in clips]
    for latent, blob in zip(decode_latents(codec, blobs), blobs):
        assert torch.equal(latent, codec.latents(blob))
    # the same tensors with the float entropy model (the model before the switch): its files
    # are refused with a clear error, never decoded into garbage
    card = registry.read_card("walloc-audio")
    config = {k: v for k, v in card["config"].items() if k not in ("entropy_model", "entropy_config")}
    float_model = registry.build(card["architecture"], config)
    float_model.load_state_dict(load_file(str(registry.WEIGHTS_DIR / "walloc-audio.safetensors")))
    float_model.name = "walloc-audio"
    float_model.eval()
    old = float_model.compress(clips[0], sample_rate=22050)
    with pytest.raises(ModelMismatchError):
        codec.latents(old)
    with pytest.raises(ModelMismatchError):
        decode_latents(codec, [blobs[0], old])
