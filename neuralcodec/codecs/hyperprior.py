"""Scale hyperprior (Ballé et al. 2018) and mean-scale hyperprior (Minnen et al. 2018) image codecs.

The networks have the shapes of CompressAI's ``bmshj2018-hyperprior`` (``variant="scale"``)
and ``mbt2018-mean`` (``variant="mean"``)::

    x ─ g_a (4× conv 5×5/2, GDN) ─▶ y ─ h_a ─▶ z ─ round ─▶ ẑ   (factorized prior: EntropyBottleneck)
    ẑ ─ h_s (fixed point, exact) ─▶ integer scale (and mean) of every element of y
    y ─ round(y − mean) ─▶ symbols (Gaussian tables chosen by scale: GaussianConditional)
    ŷ = symbols + mean ─ g_s (4× deconv 5×5/2, IGDN) ─▶ x̂

**Deterministic decoding.** The decoder must pick, for every element of ``y``, exactly the
Gaussian table (and mean) the encoder used, but both come from the hyper-synthesis ``h_s``,
whose floating-point output can differ between CPU and GPU or between thread counts (the
summation order of a convolution is not fixed). ``h_s`` here is an *integer network*
(Ballé et al. 2019, "Integer networks for data compression") in fixed point:
weights are integers at scale ``2**-weight_bits``, activations integers at scale
``2**-act_bits``, biases integers at the accumulator's scale, and every layer is
``floor((conv(A, W) + B) / 2**weight_bits)`` followed by an integer ReLU / leaky ReLU. At
coding time this is evaluated in float64 on integer-valued tensors: every product and every
partial sum is an integer below ``2**53``, so it is exact in any summation order, and the
division by a power of two and the floor are exact too. Every device and thread count thus
gets identical integers (cuDNN is disabled for these few small convolutions so no FFT or
Winograd algorithm enters, and the accumulators are rounded and range-checked as a guard).
The integer scales map to table indexes by integer comparisons with precomputed integer
thresholds. The network trains with the same fixed-point arithmetic simulated in float
(straight-through rounding), so no conversion step is needed after training.

The encoder still hashes the table indexes (and integer means) it used into the file; the
decoder recomputes them, compares before decoding ``y``, and raises
:class:`neuralcodec.ModelMismatchError` ("platform mismatch") rather than decoding garbage.

Bitstream (one ``.ncf`` container per image): sections ``z`` and ``y`` (rANS streams),
``alpha`` (zlib of the 8-bit alpha plane, RGBA only) and ``filter`` (optional: the
encoder-fitted restoration filter of :mod:`neuralcodec.codecs.post_filter`, applied to the
synthesis output); header metadata ``hyperprior``: mode (``L``/``RGB``/``RGBA``), latent size
(``4 * ceil(H/64)``, ``4 * ceil(W/64)``), the index digest and ``"gray": true`` for an RGB
image with identical planes.
Images of any size are padded (reflect) to a multiple of 64 and cropped back.

>>> import torch
>>> model = HyperpriorCodec(variant="mean", N=16, M=24).eval()
>>> model.update()
>>> blob = model.compress(torch.rand(3, 20, 30))
>>> model.decompress(blob).shape, model.latents(blob).shape
(torch.Size([3, 20, 30]), torch.Size([24, 4, 4]))
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from compressai.layers import GDN
from torch import Tensor, nn

from ..entropy import Container, EntropyBottleneck, GaussianConditional
from ..entropy.gaussian import FloorSTE, RoundSTE
from ..entropy.tables import tensor_hash
from ..errors import BitstreamError, ModelMismatchError
from ..transforms.wavelets import crop_to, pad_to_multiple
from . import post_filter
from .base import Codec
from .image_modes import (alpha_section, gray_content, image_header, open_image_container, restore_image_mode,
                          split_image_modes)
from .registry import register_architecture

__all__ = ["HyperpriorCodec", "FixedPointSynthesis", "VARIANTS"]

VARIANTS = ("scale", "mean")
_EXACT_LIMIT = float(2**52)  # float64 holds every integer below 2**53: keep a margin
_LEAKY_SHIFT = 6  # integer leaky ReLU: negative values divided by 2**6 (slope 1/64)
REFINE_LR = 5e-3  # Adam's starting step for encoder-side refinement (cosine-decayed)


def _conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def _deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)


# ----------------------------------------------------------------------------------------------
# The fixed-point hyper-synthesis
# ----------------------------------------------------------------------------------------------


class FixedPointSynthesis(nn.Module):
    """A stack of (transposed) convolutions in fixed point, exact when evaluated on integers.

    ``layers`` is a list of ``(kind, in, out, kernel, stride)`` with kind ``"deconv"`` or
    ``"conv"``; ``activation`` (``"relu"`` or ``"leaky"``) follows every layer but the last,
    and ``final_relu`` adds one after the last. ``forward(v)`` simulates the arithmetic in
    float with straight-through rounding (training); ``integer_forward(V)`` runs it exactly on
    integer-valued float64 tensors (coding). Both take and return values at scale
    ``2**-act_bits`` (``forward``: real values; ``integer_forward``: the integers).

    >>> net = FixedPointSynthesis([("deconv", 4, 8, 5, 2), ("conv", 8, 6, 3, 1)])
    >>> z = torch.round(torch.randn(1, 4, 3, 3) * 3)
    >>> exact = net.integer_forward(net.to_integers(z)) / 2**net.act_bits
    >>> bool((exact - net(z).double()).abs().max() < 0.05)
    True
    """

    def __init__(self, layers: Sequence[tuple[str, int, int, int, int]], activation: str = "relu",
                 final_relu: bool = False, weight_bits: int = 12, act_bits: int = 8) -> None:
        super().__init__()
        if activation not in ("relu", "leaky"):
            raise ValueError(f"activation must be 'relu' or 'leaky', got {activation!r}")
        self.kinds = [kind for kind, *_ in layers]
        self.convs = nn.ModuleList(
            [_deconv(i, o, k, s) if kind == "deconv" else _conv(i, o, k, s) for kind, i, o, k, s in layers]
        )
        self.activation = activation
        self.final_relu = final_relu
        self.weight_bits = int(weight_bits)
        self.act_bits = int(act_bits)

    def _conv_op(self, conv: nn.Module, a: Tensor, w: Tensor, b: Tensor) -> Tensor:
        if isinstance(conv, nn.ConvTranspose2d):
            return F.conv_transpose2d(a, w, b, conv.stride, conv.padding, conv.output_padding)
        return F.conv2d(a, w, b, conv.stride, conv.padding)

    def _activate(self, a: Tensor, last: bool, floor: Any) -> Tensor:
        if last:
            return a.clamp_min(0) if self.final_relu else a
        if self.activation == "relu":
            return a.clamp_min(0)
        return torch.where(a >= 0, a, floor(a / 2**_LEAKY_SHIFT))

    def forward(self, v: Tensor) -> Tensor:
        """Training path: the fixed-point network simulated in float (straight-through)."""
        sa, sw = 2.0**self.act_bits, 2.0**self.weight_bits
        rnd, flo = RoundSTE.apply, FloorSTE.apply
        a = rnd(v * sa)  # integers at scale 2**-act_bits
        for i, conv in enumerate(self.convs):
            w = rnd(conv.weight * sw) / sw
            b = rnd(conv.bias * (sa * sw)) / sw
            a = flo(self._conv_op(conv, a, w, b))
            a = self._activate(a, i == len(self.convs) - 1, flo)
        return a / sa

    def to_integers(self, v: Tensor) -> Tensor:
        """Real input values -> the integer input (float64) of :meth:`integer_forward`."""
        return torch.round(v.to(torch.float64) * 2.0**self.act_bits)

    def integer_weights(self) -> list[tuple[Tensor, Tensor]]:
        """(weight, bias) of every layer as integer-valued float64 tensors (weights at scale
        ``2**-weight_bits``, biases at ``2**-(weight_bits + act_bits)``)."""
        sw, sb = 2.0**self.weight_bits, 2.0 ** (self.weight_bits + self.act_bits)
        return [(torch.round(c.weight.detach().double() * sw), torch.round(c.bias.detach().double() * sb))
                for c in self.convs]

    @torch.no_grad()
    def integer_forward(self, a: Tensor) -> Tensor:
        """Exact fixed-point evaluation on integer-valued float64 tensors (any device).

        Raises ``OverflowError`` if an accumulator leaves the exactly representable range.
        """
        if a.dtype != torch.float64:
            raise TypeError("integer_forward takes integer-valued float64 tensors (see to_integers)")
        shift = 2.0**self.weight_bits
        # No cuDNN: its FFT/Winograd algorithms are not exact on integers; the native path
        # (im2col + GEMM) is products and sums only.
        with torch.backends.cudnn.flags(enabled=False):
            for i, (conv, (w, b)) in enumerate(zip(self.convs, self.integer_weights())):
                # A priori bound on every partial sum of every output: max|A| * (largest L1 norm
                # of one output channel's weights) + max|B|. Below 2**53 all sums are exact.
                per_output = w.abs().sum(dim=(0, 2, 3) if isinstance(conv, nn.ConvTranspose2d) else (1, 2, 3))
                a_max = float(a.abs().max()) if a.numel() else 0.0
                if a_max * float(per_output.max()) + float(b.abs().max()) >= _EXACT_LIMIT:
                    raise OverflowError("fixed-point hyper-synthesis overflow (input out of the trained range)")
                acc = self._conv_op(conv, a, w.to(a.device), b.to(a.device))
                acc = torch.round(acc)  # a no-op for exact arithmetic, a guard otherwise
                a = torch.floor(acc / shift)
                a = self._activate(a, i == len(self.convs) - 1, torch.floor)
        return a


# ----------------------------------------------------------------------------------------------
# The codec
# ----------------------------------------------------------------------------------------------


@register_architecture
class HyperpriorCodec(Codec):
    """Scale (``variant="scale"``) or mean-scale (``variant="mean"``) hyperprior image codec.

    Args:
        variant: ``"scale"`` (Ballé 2018, ``bmshj2018-hyperprior``) or ``"mean"``
            (Minnen 2018, ``mbt2018-mean``).
        N: channels of the transforms and of ``z``.
        M: channels of ``y``.
        weight_bits, act_bits: fixed-point fractional bits of the hyper-synthesis.
        lmbda: the rate-distortion weight it was trained with (used by :meth:`refine`).

    >>> m = HyperpriorCodec(variant="scale", N=16, M=24)
    >>> out = m(torch.rand(2, 3, 64, 64))
    >>> out["x_hat"].shape, out["y"].shape, sorted(out["likelihoods"])
    (torch.Size([2, 3, 64, 64]), torch.Size([2, 24, 4, 4]), ['y', 'z'])
    """

    architecture = "hyperprior"
    modality = "image"
    multiple = 64  # four stride-2 layers in g_a and two more in h_a

    def __init__(self, variant: str = "mean", N: int = 64, M: int = 96, weight_bits: int = 12, act_bits: int = 8,
                 lmbda: float | None = None) -> None:
        super().__init__(variant=variant, N=N, M=M, weight_bits=weight_bits, act_bits=act_bits, lmbda=lmbda)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant, self.N, self.M = variant, N, M
        self.lmbda = lmbda
        self.g_a = nn.Sequential(
            _conv(3, N), GDN(N), _conv(N, N), GDN(N), _conv(N, N), GDN(N), _conv(N, M),
        )
        self.g_s = nn.Sequential(
            _deconv(M, N), GDN(N, inverse=True), _deconv(N, N), GDN(N, inverse=True),
            _deconv(N, N), GDN(N, inverse=True), _deconv(N, 3),
        )
        if variant == "scale":
            self.h_a = nn.Sequential(
                _conv(M, N, 3, 1), nn.ReLU(inplace=True), _conv(N, N), nn.ReLU(inplace=True), _conv(N, N),
            )
            self.h_s = FixedPointSynthesis(
                [("deconv", N, N, 5, 2), ("deconv", N, N, 5, 2), ("conv", N, M, 3, 1)],
                activation="relu", final_relu=True, weight_bits=weight_bits, act_bits=act_bits,
            )
        else:
            self.h_a = nn.Sequential(
                _conv(M, N, 3, 1), nn.LeakyReLU(inplace=True), _conv(N, N), nn.LeakyReLU(inplace=True), _conv(N, N),
            )
            self.h_s = FixedPointSynthesis(
                [("deconv", N, M, 5, 2), ("deconv", M, M * 3 // 2, 5, 2), ("conv", M * 3 // 2, M * 2, 3, 1)],
                activation="leaky", final_relu=False, weight_bits=weight_bits, act_bits=act_bits,
            )
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        # Integer thresholds of the scale table: index = #{k < K-1 : S > thresholds[k]} for an
        # integer scale S at scale 2**-act_bits (the same rule as CompressAI's build_indexes).
        self.register_buffer("scale_thresholds", self._thresholds(), persistent=False)

    def _thresholds(self) -> Tensor:
        table = self.gaussian_conditional.scale_table.detach().to("cpu", torch.float64)
        return torch.floor(table[:-1] * 2.0**self.h_s.act_bits)

    # -- continuous path -----------------------------------------------------------------
    def analysis(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] (sizes a multiple of 64) -> continuous latent ``y``."""
        return self.g_a(x)

    def synthesis(self, y: Tensor) -> Tensor:
        """Latent ``y`` (quantized or not) -> ``(B, 3, H, W)`` reconstruction (not clamped)."""
        return self.g_s(y)

    def _hyper_params(self, hyper: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.variant == "mean":
            scales, means = hyper.chunk(2, dim=1)
            return scales, means
        return hyper, None

    def forward(self, x: Tensor) -> dict[str, Any]:
        """Training pass (CompressAI's): noisy ``z`` and ``y`` for the rates; the synthesis sees
        ``y`` rounded around the mean (straight-through), as at decoding."""
        y = self.g_a(x)
        z = self.h_a(torch.abs(y) if self.variant == "scale" else y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self._hyper_params(self.h_s(z_hat))
        _, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        centre = 0 if means is None else means
        y_hat = RoundSTE.apply(y - centre) + centre
        return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}, "y": y}

    def aux_loss(self) -> Tensor:
        """The EntropyBottleneck's quantile loss (train with its own optimizer, as CompressAI)."""
        return self.entropy_bottleneck.loss()

    def update(self, force: bool = True) -> None:
        """Build the integer tables of both entropy models (after training)."""
        self.entropy_bottleneck.update(force=force)
        self.gaussian_conditional.update(force=force)
        self.scale_thresholds = self._thresholds().to(self.scale_thresholds.device)
        self._hash_cache = None

    # -- exact coding parameters ----------------------------------------------------------
    @torch.no_grad()
    def coding_params(self, z_hat: Tensor) -> tuple[Tensor, Tensor | None]:
        """Table indexes (int32) and means (float32 or None) of ``y`` from the decoded ``ẑ``.

        Exact integer arithmetic (see the module docstring): the same on every device and
        thread count.
        """
        ints = self.h_s.integer_forward(self.h_s.to_integers(z_hat))
        scales_int, means_int = self._hyper_params(ints)
        thresholds = self.scale_thresholds.to(scales_int.device)
        # index = #{k : S > threshold_k}: the thresholds are sorted, so this is the left insertion
        # point of S (exact: integer-valued float64 compared with integer-valued float64).
        indexes = torch.searchsorted(thresholds, scales_int.contiguous(), right=False).to(torch.int32)
        means = None
        if means_int is not None:
            if means_int.numel() and float(means_int.abs().max()) >= 2**23:
                raise OverflowError("hyperprior mean out of range")
            means = (means_int / 2.0**self.h_s.act_bits).to(torch.float32)  # exact: |int| < 2**24
        return indexes, means

    @staticmethod
    def _digest(indexes: Tensor, means: Tensor | None) -> str:
        return tensor_hash(indexes.to(torch.int32), *([] if means is None else [means.to(torch.float32)]))

    # -- coding path ---------------------------------------------------------------------
    def _prepare(self, x: Tensor) -> tuple[Tensor, Tensor | None, str]:
        """(B, C, H, W) in [0,1] with C in {1, 3, 4} -> RGB for the network, alpha, mode."""
        return split_image_modes(x)

    def _check_ready(self) -> None:
        if not (self.entropy_bottleneck.has_tables() and self.gaussian_conditional.has_tables()):
            raise RuntimeError("call update() before compress (trained models ship with tables)")

    @torch.no_grad()
    def encode_latents(self, x: Tensor, refine_steps: int = 0, refine_lr: float = REFINE_LR) -> dict[str, Any]:
        """The encoder's quantities for ``(B, C, H, W)`` images in [0, 1] (any size):
        ``z_symbols``, ``z_hat``, ``indexes``, ``means``, ``y_symbols`` and ``y_hat`` (the
        quantized latent that :meth:`latents` returns). ``refine_steps``: see :meth:`refine`."""
        rgb, _, _ = self._prepare(x)
        rgb = rgb.float().clamp(0, 1)
        padded, _ = pad_to_multiple(rgb, self.multiple)
        y = self.g_a(padded)
        z = self.h_a(torch.abs(y) if self.variant == "scale" else y)
        if refine_steps:
            # gray items (mode L is expanded to equal planes) are scored on their channel mean
            y, z = self.refine(rgb, y, z, refine_steps, lr=refine_lr, gray=gray_content(rgb))
        z_symbols = self.entropy_bottleneck.symbols(z)
        z_hat = self.entropy_bottleneck.dequantize_symbols(z_symbols)
        indexes, means = self.coding_params(z_hat)
        centred = y if means is None else y - means
        y_symbols = torch.round(centred).to(torch.int32)
        y_hat = y_symbols.float() if means is None else y_symbols.float() + means
        return {"z_symbols": z_symbols, "z_hat": z_hat, "indexes": indexes, "means": means,
                "y_symbols": y_symbols, "y_hat": y_hat}

    def refine(self, rgb: Tensor, y: Tensor, z: Tensor, steps: int, lr: float = REFINE_LR,
               gray: Sequence[bool] | None = None) -> tuple[Tensor, Tensor]:
        """Encoder-side optimisation of the latents ``y`` and ``z`` of the images ``rgb``.

        The analysis transforms give latents that are good on average over the training set;
        this spends ``steps`` Adam steps (cosine-decayed learning rate from ``lr``) on *this*
        image's own rate-distortion loss, ``lmbda * 255**2 * MSE + bpp`` with the model's
        training ``lmbda``, through the real decoder: the rounding of ``y - mean`` and of
        ``z - median`` is straight-through, the hyper-synthesis is the same fixed-point network
        the decoder runs, and the distortion is that of the clamped output on the unpadded
        image (of the channel mean for ``gray`` items). The decoder and the file format are
        unchanged: a refined file decodes anywhere a plain one does. Returns the refined
        ``(y, z)`` (detached); items are optimised independently.

        >>> m = HyperpriorCodec(variant="mean", N=16, M=24, lmbda=0.01).eval(); m.update()
        >>> x = torch.rand(1, 3, 64, 64)
        >>> len(m.compress(x, refine_steps=3)) > 0
        True
        """
        if self.lmbda is None:
            raise ValueError("refinement needs the model's training lmbda (config 'lmbda' is not set)")
        if steps < 0:
            raise ValueError(f"refine steps must be >= 0, got {steps}")
        h, w = rgb.shape[2:]
        with torch.inference_mode(False), torch.enable_grad():
            target = rgb.detach().clone()
            y = y.detach().clone().requires_grad_(True)
            z = z.detach().clone().requires_grad_(True)
            grayish = torch.tensor([bool(g) for g in (gray or [False] * rgb.shape[0])], device=rgb.device)
            grayish = grayish.view(-1, 1, 1, 1)
            frozen = [p for p in self.parameters() if p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
            try:
                opt = torch.optim.Adam([y, z], lr=lr)
                schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
                for _ in range(steps):
                    loss = self._refine_loss(target, y, z, grayish, h, w)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    schedule.step()
            finally:
                for p in frozen:
                    p.requires_grad_(True)
        return y.detach(), z.detach()

    def _refine_loss(self, target: Tensor, y: Tensor, z: Tensor, gray: Tensor, h: int, w: int) -> Tensor:
        """Sum over the items of ``lmbda * 255**2 * MSE + bpp`` as the decoder would see them."""
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        median = eb._medians_like(z.dim(), z.device)
        z_hat = RoundSTE.apply(z - median) + median
        # CompressAI's factorized density works on (C, 1, N) rows
        rows = z_hat.transpose(0, 1).reshape(z_hat.shape[1], 1, -1)
        z_lik = eb.likelihood_lower_bound(eb._likelihood(rows)[0])
        scales, means = self._hyper_params(self.h_s(z_hat))
        centre = 0 if means is None else means
        y_hat = RoundSTE.apply(y - centre) + centre
        y_lik = gc.likelihood_lower_bound(gc._likelihood(y_hat, scales, means))
        x_hat = self.g_s(y_hat)[:, :, :h, :w].clamp(0, 1)
        x_hat = torch.where(gray, x_hat.mean(1, keepdim=True).expand_as(x_hat), x_hat)
        bits = -torch.log2(y_lik).flatten(1).sum(1) - torch.log2(z_lik).reshape(z.shape[1], z.shape[0], -1).sum((0, 2))
        mse = ((x_hat - target) ** 2).flatten(1).mean(1)
        return (self.lmbda * 255**2 * mse + bits / (h * w)).sum()

    @torch.no_grad()
    def compress(self, x: Tensor, metadata: dict[str, Any] | None = None, refine_steps: int = 0,
                 post_filter: bool = True) -> bytes | list[bytes]:
        """Images ``(B, C, H, W)`` or ``(C, H, W)`` in [0, 1] -> ``.ncf`` bytes (a list for a batch).

        ``C`` is 1 (gray, coded as RGB and averaged back), 3 (RGB) or 4 (RGBA: RGB through
        the network, alpha losslessly as zlib of 8-bit values). ``metadata`` goes into the
        container's header. ``refine_steps > 0`` optimises the latents for this image first
        (:meth:`refine`): smaller files at the same decoder, for that many forward and backward
        passes of the networks (e.g. 40 steps: about 20 s per 768x512 image on 2 CPU cores).
        ``post_filter`` (models with a training ``lmbda``): fit a 5x5 restoration filter to the
        decoder's output (:mod:`~neuralcodec.codecs.post_filter`) and send it (84 bytes, a
        ``filter`` section) when ``lmbda * 255**2 * MSE + bpp`` says it pays; this runs the
        synthesis once at the encoder.
        """
        self._check_ready()
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 4 or min(x.shape[2:]) < 1:
            raise ValueError(f"expected (B, C, H, W) or (C, H, W) images, got shape {tuple(x.shape)}")
        x = x.to(self.device)
        rgb, alpha, mode = self._prepare(x)
        gray = gray_content(rgb)
        enc = self.encode_latents(x, refine_steps=refine_steps)
        z_streams = self.entropy_bottleneck._encode_batch(
            enc["z_symbols"], self.entropy_bottleneck.build_indexes(enc["z_symbols"].shape, enc["z_symbols"].device))
        y_streams = self.gaussian_conditional._encode_batch(enc["y_symbols"], enc["indexes"])
        filters = self._fit_filters(enc["y_hat"], rgb, gray) if post_filter and self.lmbda else [None] * len(gray)
        blobs = []
        for b in range(x.shape[0]):
            sections = {"z": z_streams[b], "y": y_streams[b]}
            if filters[b] is not None:
                sections["filter"] = filters[b]
            if alpha is not None:
                sections["alpha"] = alpha_section(alpha[b])
            meta = dict(metadata or {})
            means_b = None if enc["means"] is None else enc["means"][b]
            meta["hyperprior"] = image_header(mode, list(enc["y_symbols"].shape[2:]),
                                              self._digest(enc["indexes"][b], means_b), gray[b])
            blobs.append(
                Container(self.name, self.weights_hash(), self.modality, tuple(x.shape[1:]), meta, sections).to_bytes()
            )
        return blobs[0] if single else blobs

    @staticmethod
    def _finish(decoded: Tensor, gray: bool, coefs: Tensor | None) -> Tensor:
        """One item's synthesis output ``(3, H, W)`` -> the RGB the decoder shows: filtered,
        clamped, and for gray items (mode L or ``"gray"``) the channel mean."""
        item = (decoded if coefs is None else post_filter.apply(decoded, coefs)).clamp(0, 1)
        return item.mean(0, keepdim=True).expand(3, -1, -1) if gray else item

    def _fit_filters(self, y_hat: Tensor, rgb: Tensor, gray: Sequence[bool]) -> list[bytes | None]:
        """Per item: the ``filter`` section, or None where it does not lower the RD loss.

        ``gray``: :func:`gray_content` of ``rgb`` (true for mode L too, whose planes are equal)."""
        decoded = crop_to(self.g_s(y_hat), tuple(rgb.shape[2:]))
        target = rgb.float().clamp(0, 1)
        bits_per_pixel = 8 * post_filter.SECTION_BYTES / (rgb.shape[2] * rgb.shape[3])
        out: list[bytes | None] = []
        for b in range(rgb.shape[0]):
            coefs = post_filter.quantize(post_filter.fit(decoded[b], target[b]))
            mse_plain = ((self._finish(decoded[b], gray[b], None) - target[b]) ** 2).mean()
            mse_filtered = ((self._finish(decoded[b], gray[b], coefs) - target[b]) ** 2).mean()
            gain = self.lmbda * 255**2 * float(mse_plain - mse_filtered)
            out.append(post_filter.to_bytes(coefs) if gain > bits_per_pixel else None)
        return out

    def _open(self, blob: bytes) -> tuple[Container, dict[str, Any]]:
        m = self.multiple
        c, info = open_image_container(
            self, blob, "hyperprior", "hyperprior", lambda h, w: [-(-h // m) * 4, -(-w // m) * 4]
        )
        allowed = {"z", "y"} | ({"alpha"} if info["mode"] == "RGBA" else set())
        if set(c.sections) - {"filter"} != allowed:
            raise BitstreamError(f"unexpected sections {sorted(c.sections)}; expected {sorted(allowed)}")
        return c, info

    @torch.no_grad()
    def _latents_one(self, blob: bytes) -> tuple[Tensor, Container, dict[str, Any]]:
        self._check_ready()
        c, info = self._open(blob)
        h, w = info["latent"]
        device = self.device
        z_shape = (1, self.N, h // 4, w // 4)
        z_symbols = self.entropy_bottleneck._decode(
            c.sections["z"], self.entropy_bottleneck.build_indexes(z_shape, device)).to(device)
        z_hat = self.entropy_bottleneck.dequantize_symbols(z_symbols)
        try:
            indexes, means = self.coding_params(z_hat)
        except OverflowError as e:
            raise BitstreamError(f"corrupted hyper-latent: {e}") from None
        if self._digest(indexes[0], None if means is None else means[0]) != info["digest"]:
            raise ModelMismatchError(
                "platform mismatch: the hyperprior's table indexes recomputed here differ from the encoder's "
                "(different hyper-synthesis weights or arithmetic); refusing to decode into garbage"
            )
        y_symbols = self.gaussian_conditional._decode(c.sections["y"], indexes).to(device)
        y_hat = y_symbols.float() if means is None else y_symbols.float() + means
        return y_hat[0], c, info

    @torch.no_grad()
    def latents(self, blob: bytes | list[bytes]) -> Tensor | list[Tensor]:
        """Quantized latent ``ŷ`` ``(M, h, w)`` of a file by entropy decoding only: ``z``, the
        integer hyper-synthesis for the tables (and means), then ``y``; no synthesis transform."""
        if isinstance(blob, (list, tuple)):
            return [self._latents_one(b)[0] for b in blob]
        return self._latents_one(blob)[0]

    @torch.no_grad()
    def decompress(self, blob: bytes | list[bytes]) -> Tensor | list[Tensor]:
        """``.ncf`` bytes -> image ``(C, H, W)`` in [0, 1] with the encoder input's C, H, W."""
        if isinstance(blob, (list, tuple)):
            return [self.decompress(b) for b in blob]  # type: ignore[misc]
        y_hat, c, info = self._latents_one(blob)
        chans, h, w = c.shape
        coefs = post_filter.from_bytes(c.sections["filter"]) if "filter" in c.sections else None
        # the same filter-then-clamp the encoder scored; the mode's gray mean comes next
        rgb = self._finish(crop_to(self.g_s(y_hat.unsqueeze(0)), (h, w))[0], False, coefs)
        return restore_image_mode(rgb, info["mode"], c, gray=info.get("gray", False))
