"""RGB(A) images whose colour planes are identical: flagged in the header, decoded with identical planes."""

from __future__ import annotations

import pytest
import torch

from neuralcodec import BitstreamError
from neuralcodec.entropy import Container

from test_hyperprior import _model as hyperprior_model
from test_walloc import smooth_images, tiny


def _codecs():
    return {"walloc": tiny(), "hyperprior": hyperprior_model("mean")}


@pytest.fixture(scope="module")
def codecs():
    return _codecs()


def _info(blob: bytes, key: str) -> dict:
    return Container.from_bytes(blob).metadata[key]


@pytest.mark.parametrize("key", ["walloc", "hyperprior"])
def test_gray_rgb_decodes_to_identical_planes_equal_to_the_gray_decode(codecs, key):
    codec = codecs[key]
    gray = smooth_images(1, 40, 52)[:, :1]
    blob_rgb = codec.compress(gray.expand(-1, 3, -1, -1)[0])
    blob_l = codec.compress(gray[0])
    assert _info(blob_rgb, key)["gray"] is True
    assert "gray" not in _info(blob_l, key)  # mode L is gray already
    out_rgb, out_l = codec.decompress(blob_rgb), codec.decompress(blob_l)
    assert out_rgb.shape == (3, 40, 52)
    assert torch.equal(out_rgb[0], out_rgb[1]) and torch.equal(out_rgb[1], out_rgb[2])
    torch.testing.assert_close(out_rgb[0], out_l[0])  # same latents, same channel mean
    assert torch.equal(codec.latents(blob_rgb), codec.latents(blob_l))


@pytest.mark.parametrize("key", ["walloc", "hyperprior"])
def test_colour_and_mixed_batches_flag_only_the_gray_items(codecs, key):
    codec = codecs[key]
    colour = smooth_images(2, 32, 32, seed=3)
    batch = torch.cat([colour[:1], colour[1:, :1].expand(-1, 3, -1, -1)])
    alpha = torch.rand(2, 1, 32, 32)
    for x in (batch, torch.cat([batch, alpha], 1)):
        blobs = codec.compress(x)
        assert "gray" not in _info(blobs[0], key)
        assert _info(blobs[1], key)["gray"] is True
        out = codec.decompress(blobs[1])
        assert torch.equal(out[0], out[2])
        if x.shape[1] == 4:  # alpha is kept losslessly either way
            torch.testing.assert_close(out[3], torch.round(alpha[1, 0] * 255) / 255)


@pytest.mark.parametrize("key", ["walloc", "hyperprior"])
@pytest.mark.parametrize("value", [False, 1, "yes", None, [True]])
def test_a_malformed_gray_flag_is_refused(codecs, key, value):
    codec = codecs[key]
    gray = smooth_images(1, 32, 32)[0, :1].expand(3, -1, -1)
    c = Container.from_bytes(codec.compress(gray))
    meta = {key: {**c.metadata[key], "gray": value}}
    forged = Container(c.codec, c.weights_hash, c.modality, c.shape, meta, c.sections).to_bytes()
    with pytest.raises(BitstreamError):
        codec.decompress(forged)


@pytest.mark.parametrize("key", ["walloc", "hyperprior"])
def test_gray_flag_on_a_gray_mode_file_or_an_unknown_key_is_refused(codecs, key):
    codec = codecs[key]
    c = Container.from_bytes(codec.compress(smooth_images(1, 32, 32)[0, :1]))
    for extra in ({"gray": True}, {"colour": True}):
        meta = {key: {**c.metadata[key], **extra}}
        forged = Container(c.codec, c.weights_hash, c.modality, c.shape, meta, c.sections).to_bytes()
        with pytest.raises(BitstreamError):
            codec.decompress(forged)
