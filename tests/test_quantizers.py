"""Tests of the vector quantizers: shapes, gradients, exact index round trips, no collapse, bitrate scalability."""

from __future__ import annotations

import itertools

import pytest
import torch

from neuralcodec.codecs import FSQ, GroupedResidualVQ, ResidualVQ, VectorQuantizer
from neuralcodec.codecs.quantizers import codebook_stats, usage_counts

torch.set_num_threads(1)

DIM = 8

# Every quantizer, built for a given layout.
QUANTIZERS = {
    "vq": lambda cl: VectorQuantizer(DIM, 32, channel_last=cl),
    "vq-cosine-lowdim-rotation": lambda cl: VectorQuantizer(
        DIM, 32, codebook_dim=4, use_cosine_sim=True, rotation_trick=True, channel_last=cl
    ),
    "vq-learned-codebook": lambda cl: VectorQuantizer(DIM, 32, ema_update=False, channel_last=cl),
    "vq-kmeans": lambda cl: VectorQuantizer(DIM, 32, kmeans_init=True, kmeans_iters=3, channel_last=cl),
    "simvq": lambda cl: VectorQuantizer(DIM, 32, sim_vq=True, channel_last=cl),
    "rvq": lambda cl: ResidualVQ(dim=DIM, num_quantizers=3, codebook_size=16, quantize_dropout=True, channel_last=cl),
    "rvq-lowdim": lambda cl: ResidualVQ(
        dim=DIM, num_quantizers=2, codebook_size=16, codebook_dim=4, rotation_trick=True, channel_last=cl
    ),
    "grvq": lambda cl: GroupedResidualVQ(
        dim=DIM, groups=2, num_quantizers=3, codebook_size=16, quantize_dropout=0.5, channel_last=cl
    ),
    "fsq": lambda cl: FSQ(levels=[8, 5, 5, 5], dim=DIM, channel_last=cl),
    "fsq-nodim": lambda cl: FSQ(levels=[4, 3, 5], channel_last=cl),
}

# (input shape, channel_last, shape of the indices of a single-codebook quantizer)
LAYOUTS = {
    "sequence (b,n,d)": ((2, 7, DIM), True, (2, 7)),
    "channel-first 1D (b,d,t)": ((2, DIM, 7), False, (2, 7)),
    "channel-first 2D (b,d,h,w)": ((2, DIM, 5, 6), False, (2, 5, 6)),
    "channel-first 3D (b,d,t,h,w)": ((2, DIM, 2, 3, 4), False, (2, 2, 3, 4)),
}


def _input_dim(name: str) -> int:
    return 3 if name == "fsq-nodim" else DIM


def _shape_for(name: str, shape: tuple[int, ...], channel_last: bool) -> tuple[int, ...]:
    shape = list(shape)
    shape[-1 if channel_last else 1] = _input_dim(name)
    return tuple(shape)


def _expected_index_shape(quantizer, index_shape, n_quantizers=None):
    if isinstance(quantizer, GroupedResidualVQ):
        return (quantizer.groups, *index_shape, n_quantizers or quantizer.num_quantizers)
    if isinstance(quantizer, ResidualVQ):
        return (*index_shape, n_quantizers or quantizer.num_quantizers)
    return index_shape


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", QUANTIZERS)
@pytest.mark.parametrize("training", [True, False])
def test_shapes_for_every_layout(name, layout, training):
    torch.manual_seed(0)
    shape, channel_last, index_shape = LAYOUTS[layout]
    shape = _shape_for(name, shape, channel_last)
    quantizer = QUANTIZERS[name](channel_last).train(training)
    quantized, indices, loss = quantizer(torch.randn(shape))
    assert quantized.shape == shape
    assert indices.shape == _expected_index_shape(quantizer, index_shape)
    assert indices.dtype == torch.long
    assert loss.shape == () and torch.isfinite(loss)
    assert int(indices.max()) < quantizer.codebook_size


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", QUANTIZERS)
def test_eval_indices_reproduce_output_bit_for_bit(name, layout):
    torch.manual_seed(1)
    shape, channel_last, _ = LAYOUTS[layout]
    shape = _shape_for(name, shape, channel_last)
    quantizer = QUANTIZERS[name](channel_last)
    for _ in range(3):  # train a little first, so codebooks and projections are not at their init
        quantizer(torch.randn(shape))
    quantizer.eval()
    x = torch.randn(shape)
    quantized, indices, _ = quantizer(x)
    assert torch.equal(quantizer.decode_indices(indices), quantized)
    if isinstance(quantizer, (ResidualVQ, GroupedResidualVQ)):
        quantized, indices, _ = quantizer(x, n_quantizers=1)
        assert indices.shape[-1] == 1
        assert torch.equal(quantizer.decode_indices(indices), quantized)


@pytest.mark.parametrize("name", QUANTIZERS)
@pytest.mark.parametrize("rotation", [False, True])
def test_gradient_reaches_the_encoder_input(name, rotation):
    if rotation and name.startswith("fsq"):
        pytest.skip("FSQ rounds with a straight-through estimator only")
    torch.manual_seed(2)
    quantizer = QUANTIZERS[name](True)
    if rotation:
        targets = quantizer.rvqs if isinstance(quantizer, GroupedResidualVQ) else [quantizer]
        for target in targets:
            target.use_rotation_trick = True
    encoder = torch.nn.Linear(_input_dim(name), _input_dim(name))
    quantized, _, loss = quantizer(encoder(torch.randn(4, 9, _input_dim(name))))
    (quantized.square().mean() + loss).backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0


def test_straight_through_gradient_is_identity():
    vq = VectorQuantizer(4, 16)
    x = torch.randn(2, 5, 4, requires_grad=True)
    quantized, _, _ = vq(x)
    quantized.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_rotation_trick_gradient_differs_from_straight_through():
    torch.manual_seed(3)
    x = torch.randn(2, 5, 4)
    grads = []
    for rotation in (False, True):
        vq = VectorQuantizer(4, 16, rotation_trick=rotation, dead_code_patience=None)
        torch.manual_seed(4)
        vq.embed.copy_(torch.randn(16, 4))
        vq.embed_avg.copy_(vq.embed)
        xin = x.clone().requires_grad_(True)
        quantized, _, _ = vq(xin)
        (quantized * torch.arange(4.0)).sum().backward()
        grads.append(xin.grad)
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("kwargs", [dict(ema_update=False), dict(sim_vq=True)])
def test_gradient_reaches_a_learned_codebook(kwargs):
    torch.manual_seed(5)
    vq = VectorQuantizer(DIM, 32, **kwargs)
    quantized, _, loss = vq(torch.randn(4, 9, DIM))
    (quantized.square().mean() + loss).backward()
    if kwargs.get("sim_vq"):
        assert vq.codebook_transform.weight.grad.abs().sum() > 0
        assert not vq.frozen_codebook.requires_grad  # the random codebook stays frozen
    else:
        assert vq.embed.grad.abs().sum() > 0


def test_ema_codebook_is_not_a_parameter_and_moves_in_training_only():
    vq = VectorQuantizer(DIM, 32)
    assert "embed" not in dict(vq.named_parameters())
    before = vq.embed.clone()
    vq.eval()(torch.randn(2, 10, DIM))
    assert torch.equal(vq.embed, before)
    vq.train()(torch.randn(2, 10, DIM))
    assert not torch.equal(vq.embed, before)


def test_training_output_uses_the_codes_chosen_before_the_update():
    torch.manual_seed(11)
    vq = VectorQuantizer(4, 16)
    before = vq.embed.clone()
    quantized, indices, _ = vq(torch.randn(2, 30, 4))  # no grad: the output is the codes themselves
    assert not torch.equal(vq.embed, before)  # the EMA step moved the codebook...
    assert torch.equal(quantized, before[indices])  # ...after the codes were chosen


def test_rvq_learned_codebook_gets_output_gradient():
    torch.manual_seed(6)
    rvq = ResidualVQ(dim=DIM, num_quantizers=2, codebook_size=16, ema_update=False)
    quantized, _, _ = rvq(torch.randn(3, 8, DIM))
    quantized.square().sum().backward()  # no loss term: the gradient comes through the output
    assert all(layer.embed.grad.abs().sum() > 0 for layer in rvq.layers)


# -- no collapse on a toy problem ----------------------------------------------------------------


def _mixture(n, generator, centers, std=0.2):
    pick = torch.randint(len(centers), (n,), generator=generator)
    return centers[pick] + std * torch.randn(n, centers.shape[1], generator=generator)


def _trained_utilization(**kwargs) -> tuple[float, float]:
    """Quantize a 1024-component Gaussian mixture in 16-D with a 1024-code codebook for 200 steps."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    centers = 2.0 * torch.randn(1024, 16, generator=generator)
    vq = VectorQuantizer(16, 1024, **kwargs)
    for _ in range(200):
        vq(_mixture(1024, generator, centers).unsqueeze(0))
    train_utilization = vq.stats()["utilization"]
    vq.eval()
    _, indices, _ = vq(_mixture(16384, generator, centers).unsqueeze(0))
    return codebook_stats(usage_counts(indices, 1024))["utilization"], train_utilization


def test_default_codebook_does_not_collapse_while_plain_vq_does():
    default_util, default_train_util = _trained_utilization()
    plain_util, _ = _trained_utilization(dead_code_patience=None, threshold_ema_dead_code=0, kmeans_init=False)
    assert default_util >= 0.90, default_util
    assert plain_util <= 0.75, plain_util  # the toy really collapses without replacement
    assert default_util - plain_util >= 0.2
    assert default_train_util >= 0.90  # the statistics see it during training too


def test_vqp_style_ema_threshold_also_replaces_dead_codes():
    util, _ = _trained_utilization(dead_code_patience=None, threshold_ema_dead_code=0.05)
    assert util >= 0.90, util


def test_stats_report_usage_and_replacements():
    vq = VectorQuantizer(4, 64)
    for _ in range(20):
        vq(10 + torch.randn(1, 64, 4))  # far from the initial codebook: most codes die and are replaced
    stats = vq.stats()
    assert stats["replaced_codes"] > 0
    assert stats["vectors"] == 20 * 64
    assert 1 <= stats["perplexity"] <= 64
    assert stats["used_codes"] + stats["dead_codes"] == 64
    vq.reset_stats()
    assert vq.stats()["vectors"] == 0


def test_kmeans_init_runs_once_on_the_first_training_batch():
    x = torch.randn(1, 512, 4)
    vq = VectorQuantizer(4, 16, kmeans_init=True)
    vq.eval()(x)
    assert not bool(vq.initted)  # eval does not initialise
    vq.train()(x)
    assert bool(vq.initted)
    first = vq.embed.clone()
    assert torch.cdist(first, x[0]).min(dim=1).values.max() < 3  # codes sit among the data
    vq.load_state_dict(vq.state_dict())  # a loaded trained model does not re-run k-means
    assert bool(vq.initted)


# -- residual VQ: quantizer dropout and bitrate scalability ---------------------------------------


def test_quantizer_dropout_is_per_example():
    torch.manual_seed(7)
    rvq = ResidualVQ(dim=DIM, num_quantizers=6, codebook_size=16, quantize_dropout=True)
    _, indices, _ = rvq(torch.randn(64, 5, DIM))
    used = (indices >= 0).sum(-1)  # (b, n): quantizers used per vector
    assert torch.all(used == used[:, :1])  # one count per example
    assert len(used[:, 0].unique()) > 3  # different examples, different counts
    assert torch.all(indices[..., 0] >= 0)  # the first quantizer is always used
    rvq.eval()
    _, indices, _ = rvq(torch.randn(64, 5, DIM))
    assert torch.all(indices >= 0)  # no dropout at inference


def test_quantizer_dropout_gives_usable_lower_bitrates():
    torch.manual_seed(8)
    generator = torch.Generator().manual_seed(8)
    mixing = torch.randn(16, 16, generator=generator)
    rvq = ResidualVQ(dim=16, num_quantizers=4, codebook_size=64, quantize_dropout=True)
    for _ in range(150):
        rvq(torch.randn(32, 16, 16, generator=generator) @ mixing)
    rvq.eval()
    x = torch.randn(64, 16, 16, generator=generator) @ mixing
    errors = []
    for n in range(1, 5):
        quantized, indices, _ = rvq(x, n_quantizers=n)
        assert indices.shape[-1] == n
        errors.append(float((quantized - x).square().mean()))
    zero_bitrate_error = float(x.square().mean())
    assert errors[0] < 0.7 * zero_bitrate_error  # one quantizer is already much better than nothing
    assert all(a > b for a, b in zip(errors, errors[1:])), errors  # each quantizer lowers the error
    # The same codes decode at the lower rate from a prefix of the full-rate indices.
    _, full, _ = rvq(x)
    low, _, _ = rvq(x, n_quantizers=2)
    assert torch.equal(rvq.decode_indices(full[..., :2]), low)


def test_grvq_uses_one_count_per_example_in_all_groups():
    torch.manual_seed(9)
    grvq = GroupedResidualVQ(dim=DIM, groups=4, num_quantizers=5, codebook_size=8, quantize_dropout=True)
    _, indices, _ = grvq(torch.randn(32, 3, DIM))
    used = (indices >= 0).sum(-1)  # (g, b, n)
    assert torch.all(used == used[:1, :, :1])


def test_grvq_groups_quantize_their_own_channels():
    grvq = GroupedResidualVQ(dim=4, groups=2, num_quantizers=1, codebook_size=4).eval()
    x = torch.randn(1, 6, 4)
    quantized, indices, _ = grvq(x)
    x2 = x.clone()
    x2[..., 2:] += 100.0  # moving group 1 changes nothing in group 0
    quantized2, indices2, _ = grvq(x2)
    assert torch.equal(quantized[..., :2], quantized2[..., :2])
    assert torch.equal(indices[0], indices2[0])


# -- FSQ ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 5, 5, 5, 5], [4, 4, 3], [2, 3]])
def test_fsq_indices_and_codes_are_a_bijection(levels):
    fsq = FSQ(levels=levels)
    indices = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(indices)
    assert len(torch.unique(codes, dim=0)) == fsq.codebook_size
    assert torch.equal(fsq.codes_to_indices(codes), indices)
    assert codes.min() >= -1 and codes.max() <= 1
    # Every grid point is reachable from the continuous input.
    assert len(codes) == len(list(itertools.product(*[range(level) for level in levels])))
    _, reached, _ = fsq.eval()(torch.linspace(-6, 6, 801)[:, None, None].expand(801, 1, len(levels)).contiguous())
    for axis in range(len(levels)):
        digits = (codes[reached.reshape(-1)][:, axis] * (levels[axis] // 2) + levels[axis] // 2).round()
        assert len(digits.unique()) == levels[axis]


def test_fsq_straight_through_gradient_and_bounds():
    fsq = FSQ(levels=[8, 5, 5, 5])
    x = (10 * torch.randn(3, 20, 4)).requires_grad_(True)
    quantized, _, loss = fsq(x)
    assert quantized.abs().max() <= 1
    assert float(loss) == 0.0
    quantized.sum().backward()
    assert x.grad.abs().sum() > 0


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", QUANTIZERS)
def test_wrong_channel_count_is_a_clear_error(name):
    quantizer = QUANTIZERS[name](True)
    with pytest.raises(ValueError, match="dim"):
        quantizer(torch.randn(2, 5, _input_dim(name) + 1))
    with pytest.raises(ValueError):
        quantizer(torch.randn(_input_dim(name)))


def test_out_of_range_indices_are_a_clear_error():
    with pytest.raises(ValueError, match="indices"):
        VectorQuantizer(4, 8).decode_indices(torch.tensor([[8]]))
    with pytest.raises(ValueError, match="indices"):
        ResidualVQ(dim=4, num_quantizers=2, codebook_size=8).decode_indices(torch.tensor([[[0, 1, 2]]]))
    with pytest.raises(ValueError, match="indices"):
        FSQ(levels=[3, 3]).decode_indices(torch.tensor([[9]]))
    with pytest.raises(ValueError, match="integer"):
        VectorQuantizer(4, 8).decode_indices(torch.tensor([[1.0]]))
    with pytest.raises(ValueError, match="n_quantizers"):
        ResidualVQ(dim=4, num_quantizers=2, codebook_size=8)(torch.randn(1, 3, 4), n_quantizers=3)


def test_bad_construction_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible"):
        GroupedResidualVQ(dim=10, groups=3, num_quantizers=1, codebook_size=4)
    with pytest.raises(ValueError, match="levels"):
        FSQ(levels=[1, 4])
    with pytest.raises(ValueError, match="sim_vq"):
        VectorQuantizer(4, 8, sim_vq=True, kmeans_init=True)


def test_state_dict_roundtrip_keeps_eval_output():
    torch.manual_seed(10)
    rvq = ResidualVQ(dim=DIM, num_quantizers=2, codebook_size=16, codebook_dim=4)
    rvq(torch.randn(4, 8, DIM))
    rvq.eval()
    clone = ResidualVQ(dim=DIM, num_quantizers=2, codebook_size=16, codebook_dim=4).eval()
    clone.load_state_dict(rvq.state_dict())
    x = torch.randn(2, 5, DIM)
    assert torch.equal(clone(x)[0], rvq(x)[0])
