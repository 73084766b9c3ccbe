"""Vector quantization with a codebook that does not collapse.

:class:`VectorQuantizer` maps every vector to its nearest codebook entry. By default the
codebook follows the data by exponential moving averages (VQ-VAE-2 / SoundStream) and codes
that stop being used are replaced by random vectors of the current batch (dead-code
replacement, on by default), which is what keeps a large codebook in use. Options:

* ``kmeans_init``: initialise the codebook by k-means on the first training batch;
* ``use_cosine_sim``: l2-normalised vectors and codes, nearest by cosine similarity;
* ``codebook_dim``: search in a low-dimensional space behind learned in/out projections;
* ``rotation_trick``: gradients by the rotation trick (Fifty et al., 2024) instead of the
  straight-through estimator;
* ``ema_update=False``: a codebook learned by gradient descent (VQ-VAE codebook loss);
* ``sim_vq``: SimVQ (Zhu et al., 2024), a frozen random codebook behind a learned linear map.

The constructor arguments are named as in vector-quantize-pytorch, so switching is a
change of import. Differences worth knowing: ``forward`` returns ``(quantized, indices, loss)``
with ``loss`` a scalar (commitment loss times ``commitment_weight``, plus the codebook loss
when the codebook is learned by gradient), and dead-code replacement is on by default.

Bit-exact decoding: in eval mode ``forward`` builds its output from the indices by the same
code as :meth:`VectorQuantizer.decode_indices`, so ``decode_indices(indices)`` equals the
output bit for bit. In training mode the output carries the gradient estimator and equals
the codes only up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ._layout import from_sequence, indices_to_sequence, indices_to_spatial, resolve_channel_last, to_sequence
from .stats import codebook_stats

# Distances are computed in row blocks so a large batch does not allocate n x codebook_size at once.
_DISTANCE_BLOCK_ROWS = 16384


def l2norm(t: Tensor, eps: float = 1e-6) -> Tensor:
    """Unit vectors along the last axis."""
    return F.normalize(t, dim=-1, eps=eps)


def nearest_code(vectors: Tensor, codebook: Tensor, cosine: bool = False) -> Tensor:
    """Index of the nearest code for every row of ``vectors`` (Euclidean, or cosine for unit vectors).

    Example:
        >>> nearest_code(torch.tensor([[0.9, 0.1], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])).tolist()
        [0, 1]
    """
    if cosine:
        codebook_sq = None
    else:
        # ||x - e||^2 = ||x||^2 - 2 x.e + ||e||^2; ||x||^2 does not change the argmin.
        codebook_sq = (codebook * codebook).sum(-1)
    out = []
    for block in vectors.split(_DISTANCE_BLOCK_ROWS):
        if cosine:
            out.append((block @ codebook.t()).argmax(-1))
        else:
            out.append(torch.addmm(codebook_sq, block, codebook.t(), alpha=-2.0).argmin(-1))
    return torch.cat(out) if out else vectors.new_zeros(0, dtype=torch.long)


def straight_through(z: Tensor, q: Tensor) -> Tensor:
    """Value of ``q``, gradient of the identity to ``z`` (van den Oord et al., 2017)."""
    return z + (q - z).detach()


def rotation_trick(z: Tensor, q: Tensor, eps: float = 1e-6) -> Tensor:
    """Value of ``q``, gradient through the rotation and rescaling that takes ``z`` to ``q``.

    The rotation trick (Fifty et al., 2024, "Restructuring Vector Quantization with the Rotation
    Trick"): ``q = (|q| / |z|) R z`` with ``R`` the rotation taking the direction of ``z`` to that of
    ``q``, where ``R`` and the scale are treated as constants. With unit vectors ``u = z/|z|``,
    ``w = q/|q|`` and ``r = (u + w)/|u + w|``, ``R = I - 2 r r^T + 2 w u^T``.

    Example:
        >>> z = torch.tensor([[1.0, 0.0]], requires_grad=True)
        >>> torch.allclose(rotation_trick(z, torch.tensor([[0.0, 2.0]])), torch.tensor([[0.0, 2.0]]), atol=1e-6)
        True
    """
    z_norm = z.norm(dim=-1, keepdim=True).clamp_min(eps)
    q_norm = q.norm(dim=-1, keepdim=True).clamp_min(eps)
    u = (z / z_norm).detach()
    w = (q / q_norm).detach()
    r = l2norm(u + w, eps)
    rotated = z - 2 * (z * r).sum(-1, keepdim=True) * r + 2 * (z * u).sum(-1, keepdim=True) * w
    return (q_norm / z_norm).detach() * rotated


def kmeans(samples: Tensor, num_clusters: int, iters: int, cosine: bool = False) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means from random samples; returns ``(means, cluster_sizes)``.

    Example:
        >>> means, sizes = kmeans(torch.randn(256, 4), 8, iters=5)
        >>> means.shape, int(sizes.sum())
        (torch.Size([8, 4]), 256)
    """
    n = samples.shape[0]
    # Without replacement when there are enough samples, so no two means start equal.
    start = torch.randperm(n, device=samples.device)[:num_clusters] if n >= num_clusters else torch.randint(
        n, (num_clusters,), device=samples.device
    )
    means = samples[start].clone()
    sizes = torch.zeros(num_clusters, device=samples.device, dtype=samples.dtype)
    for _ in range(iters):
        assign = nearest_code(samples, means, cosine)
        sizes = torch.bincount(assign, minlength=num_clusters).to(samples.dtype)
        sums = torch.zeros_like(means).index_add_(0, assign, samples)
        new_means = sums / sizes.clamp_min(1)[:, None]
        if cosine:
            new_means = l2norm(new_means)
        means = torch.where(sizes[:, None] > 0, new_means, means)
    return means, sizes


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantizer with an EMA codebook and dead-code replacement.

    Args:
        dim: channels of the input vectors.
        codebook_size: number of codes ``K``.
        codebook_dim: dimension of the codes; when it differs from ``dim`` the input goes through a
            learned ``Linear(dim, codebook_dim)`` and the codes through ``Linear(codebook_dim, dim)``.
        decay: EMA decay of the codebook (vector-quantize-pytorch's default, 0.8).
        eps: Laplace smoothing of the EMA cluster sizes.
        commitment_weight: weight of the commitment loss ``|z - sg(q)|^2``.
        kmeans_init: initialise the codebook by k-means on the first training batch.
        kmeans_iters: k-means iterations.
        threshold_ema_dead_code: a code whose EMA cluster size falls below this is dead (as in
            vector-quantize-pytorch; 0 turns this criterion off).
        dead_code_patience: a code that received no vector while the last
            ``dead_code_patience * codebook_size`` training vectors went by is dead. On by default:
            a code used at a fair rate ``1/K`` survives this window with probability ``1 - e^-8``, so
            only codes that really fell out of use are replaced. ``None`` or 0 turns it off.
            Dead codes (by either criterion) are replaced by random vectors of the current batch.
        use_cosine_sim: l2-normalise vectors and codes and pick the code of largest cosine similarity.
        rotation_trick: gradients by the rotation trick instead of the straight-through estimator.
        ema_update: learn the codebook by EMA (default); ``False`` makes it an ``nn.Parameter`` trained by
            the codebook loss ``|sg(z) - q|^2``, which ``forward`` adds to the returned loss.
        sim_vq: SimVQ: codes are ``W c`` for a frozen random codebook ``c`` and a learned linear map ``W``
            (trained by the codebook loss). No EMA and no dead-code replacement (the frozen codebook
            cannot be replaced, and SimVQ does not need it). In the toy autoencoder of
            ``benchmarks/bench_vq.py``, ``rotation_trick=True`` raised SimVQ's utilization from 42% to 86%.
        channel_last: ``True``: inputs ``(b, ..., dim)`` (sequences ``(b, n, dim)``); ``False``: channel-first
            feature maps ``(b, dim, ...)`` (1D, 2D or 3D).
        accept_image_fmap: vector-quantize-pytorch's name for channel-first inputs; ``True`` implies
            ``channel_last=False``.

    ``forward(x)`` returns ``(quantized, indices, loss)``: ``quantized`` has the shape of ``x``,
    ``indices`` the shape of ``x`` without its channel axis, ``loss`` is a scalar.

    Example:
        >>> vq = VectorQuantizer(dim=16, codebook_size=64)
        >>> quantized, indices, loss = vq(torch.randn(2, 10, 16))
        >>> quantized.shape, indices.shape, loss.shape
        (torch.Size([2, 10, 16]), torch.Size([2, 10]), torch.Size([]))
        >>> _ = vq.eval()
        >>> quantized, indices, _ = vq(torch.randn(2, 10, 16))
        >>> torch.equal(vq.decode_indices(indices), quantized)
        True
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        *,
        decay: float = 0.8,
        eps: float = 1e-5,
        commitment_weight: float = 1.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 0.0,
        dead_code_patience: float | None = 8.0,
        use_cosine_sim: bool = False,
        rotation_trick: bool = False,
        ema_update: bool = True,
        sim_vq: bool = False,
        channel_last: bool = True,
        accept_image_fmap: bool = False,
    ) -> None:
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"dim and codebook_size must be positive, got dim={dim}, codebook_size={codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if sim_vq and kmeans_init:
            raise ValueError("sim_vq uses a frozen random codebook; kmeans_init does not apply")
        codebook_dim = dim if codebook_dim is None else codebook_dim
        self.dim = dim
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.decay = decay
        self.eps = eps
        self.commitment_weight = commitment_weight
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.threshold_ema_dead_code = threshold_ema_dead_code
        self.dead_code_patience = dead_code_patience or 0.0
        self.use_cosine_sim = use_cosine_sim
        self.use_rotation_trick = rotation_trick
        self.sim_vq = sim_vq
        self.ema_update = ema_update and not sim_vq
        self.channel_last = resolve_channel_last(channel_last, accept_image_fmap)
        self.replaces_dead_codes = not sim_vq and (self.dead_code_patience > 0 or threshold_ema_dead_code > 0)

        self.has_projections = codebook_dim != dim
        self.project_in = nn.Linear(dim, codebook_dim) if self.has_projections else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if self.has_projections else nn.Identity()

        initial = torch.randn(codebook_size, codebook_dim) * codebook_dim**-0.5
        if use_cosine_sim:
            initial = l2norm(initial)
        if sim_vq:
            # The frozen codebook is a buffer (saved with the weights, never trained); W is trained.
            self.register_buffer("frozen_codebook", initial)
            self.codebook_transform = nn.Linear(codebook_dim, codebook_dim, bias=False)
        elif self.ema_update:
            self.register_buffer("embed", initial)
            self.register_buffer("embed_avg", initial.clone())
            self.register_buffer("cluster_size", torch.ones(codebook_size))
        else:
            self.embed = nn.Parameter(initial)
        # k-means runs once; a loaded trained model must not run it again.
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        # Training vectors seen so far, and that count when each code was last assigned a vector.
        self.register_buffer("vectors_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_used", torch.zeros(codebook_size, dtype=torch.long))
        # Statistics for monitoring and model cards; not part of the weights.
        self.register_buffer("usage", torch.zeros(codebook_size, dtype=torch.float64), persistent=False)
        self.register_buffer("replaced_codes", torch.zeros((), dtype=torch.long), persistent=False)

    # -- codebook ----------------------------------------------------------------------------
    @property
    def codebook(self) -> Tensor:
        """The effective codes ``(codebook_size, codebook_dim)`` the quantizer searches and outputs."""
        if self.sim_vq:
            codes = self.codebook_transform(self.frozen_codebook)
        else:
            codes = self.embed
        return l2norm(codes) if self.use_cosine_sim else codes

    def stats(self) -> dict[str, float]:
        """Usage statistics of the training vectors since construction or :meth:`reset_stats`.

        Example:
            >>> vq = VectorQuantizer(dim=8, codebook_size=16)
            >>> _ = vq(torch.randn(4, 32, 8))
            >>> 0 < vq.stats()["utilization"] <= 1
            True
        """
        out = codebook_stats(self.usage)
        out["replaced_codes"] = int(self.replaced_codes)
        return out

    def reset_stats(self) -> None:
        """Start a new statistics window (e.g. every epoch)."""
        self.usage.zero_()
        self.replaced_codes.zero_()

    # -- quantization in codebook space -------------------------------------------------------
    def _quantize(self, z: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize flat vectors ``(m, codebook_dim)``; updates the codebook in training.

        Returns the codes ``q`` (differentiable w.r.t. a learned codebook, not w.r.t. ``z``), the
        indices ``(m,)`` and the loss. ``mask`` (m,) excludes vectors (padding, dropped quantizers)
        from the loss, the codebook update and the statistics.
        """
        if self.use_cosine_sim:
            z = l2norm(z)
        valid = z.detach() if mask is None else z.detach()[mask]
        if self.training and not bool(self.initted) and valid.shape[0] > 0:
            self._init_by_kmeans(valid)
        codebook = self.codebook
        indices = nearest_code(z.detach(), codebook.detach(), self.use_cosine_sim)
        q = F.embedding(indices, codebook)

        loss = z.new_zeros(())
        if mask is None or bool(mask.any()):
            z_used, q_used = (z, q) if mask is None else (z[mask], q[mask])
            if self.commitment_weight > 0:
                loss = loss + self.commitment_weight * F.mse_loss(z_used, q_used.detach())
            if not self.ema_update:  # codebook learned by gradient (plain VQ-VAE codebook loss or SimVQ)
                loss = loss + F.mse_loss(z_used.detach(), q_used)

        if self.training:
            with torch.no_grad():
                self._update_codebook(valid, indices if mask is None else indices[mask])
        return q, indices, loss

    @torch.no_grad()
    def _init_by_kmeans(self, samples: Tensor) -> None:
        means, sizes = kmeans(samples.float(), self.codebook_size, self.kmeans_iters, self.use_cosine_sim)
        if self.ema_update:
            sizes = sizes.clamp_min(1.0)  # keeps embed = embed_avg / cluster_size finite for empty clusters
            self.embed.copy_(means)
            self.embed_avg.copy_(means * sizes[:, None])
            self.cluster_size.copy_(sizes)
        else:
            self.embed.data.copy_(means)
        self.initted.fill_(True)

    @torch.no_grad()
    def _update_codebook(self, vectors: Tensor, indices: Tensor) -> None:
        """EMA step, usage bookkeeping and dead-code replacement for one training batch."""
        num_vectors = vectors.shape[0]
        if num_vectors == 0:
            return
        counts = torch.bincount(indices, minlength=self.codebook_size)
        self.usage += counts.to(self.usage.dtype)
        self.vectors_seen += num_vectors
        self.last_used[counts > 0] = self.vectors_seen

        if self.ema_update:
            sums = torch.zeros_like(self.embed).index_add_(0, indices, vectors.to(self.embed.dtype))
            self.cluster_size.mul_(self.decay).add_(counts.to(self.cluster_size.dtype), alpha=1 - self.decay)
            self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.cluster_size.sum()
            # Laplace smoothing: no division by a zero cluster size.
            smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
            new_embed = self.embed_avg / smoothed[:, None]
            self.embed.copy_(l2norm(new_embed) if self.use_cosine_sim else new_embed)

        if self.replaces_dead_codes:
            self._replace_dead_codes(vectors)

    @torch.no_grad()
    def _replace_dead_codes(self, vectors: Tensor) -> None:
        dead = torch.zeros(self.codebook_size, dtype=torch.bool, device=vectors.device)
        if self.dead_code_patience > 0:
            window = int(self.dead_code_patience * self.codebook_size)
            dead |= (self.vectors_seen - self.last_used) > window
        if self.threshold_ema_dead_code > 0 and self.ema_update:
            dead |= self.cluster_size < self.threshold_ema_dead_code
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        num_vectors = vectors.shape[0]
        if num_dead > num_vectors:
            # Distinct batch vectors only (two codes on one vector waste one); the rest wait for later batches.
            dead_positions = dead.nonzero().squeeze(1)
            dead_positions = dead_positions[torch.randperm(num_dead, device=dead.device)[:num_vectors]]
            dead = torch.zeros_like(dead)
            dead[dead_positions] = True
            num_dead = num_vectors
        picks = torch.randperm(num_vectors, device=vectors.device)[:num_dead]
        fresh = vectors[picks].to(self.embed.dtype)
        if self.ema_update:
            # A replaced code starts at the EMA threshold when that criterion is on (as in
            # vector-quantize-pytorch), else at a fair share of the batch.
            size = self.threshold_ema_dead_code or num_vectors / self.codebook_size
            self.embed[dead] = fresh
            self.embed_avg[dead] = fresh * size
            self.cluster_size[dead] = size
        else:
            self.embed.data[dead] = fresh
        self.last_used[dead] = self.vectors_seen
        self.replaced_codes += num_dead

    def _codes_from_indices(self, indices: Tensor) -> Tensor:
        """Codes for flat or batched indices (any shape) -> ``(..., codebook_dim)``."""
        return F.embedding(indices, self.codebook)

    def _check_indices(self, indices: Tensor) -> None:
        if indices.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
            raise ValueError(f"indices must be an integer tensor, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"indices must be in [0, {self.codebook_size}), got range "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )

    # -- public API -------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize ``x``; returns ``(quantized, indices, loss)``.

        ``mask`` (the shape of ``indices``, bool) marks the vectors that count for the loss,
        the codebook update and the statistics (e.g. not padding); all vectors are quantized.

        Example:
            >>> vq = VectorQuantizer(dim=8, codebook_size=32, channel_last=False)
            >>> q, idx, loss = vq(torch.randn(2, 8, 4, 4))
            >>> q.shape, idx.shape
            (torch.Size([2, 8, 4, 4]), torch.Size([2, 4, 4]))
        """
        seq, packed_shape = to_sequence(x, self.dim, self.channel_last, type(self).__name__)
        batch = seq.shape[0]
        z = rearrange(self.project_in(seq.float()), "b n d -> (b n) d")
        flat_mask = None
        if mask is not None:
            index_shape = x.shape[:-1] if self.channel_last else (x.shape[0], *x.shape[2:])
            if tuple(mask.shape) != tuple(index_shape):
                raise ValueError(f"mask must have the shape of the indices {tuple(index_shape)}, got {tuple(mask.shape)}")
            flat_mask = mask.reshape(-1).bool()
        q, indices, loss = self._quantize(z, flat_mask)
        indices = rearrange(indices, "(b n) -> b n", b=batch)

        if self.training:
            # The codes chosen before this step's codebook update (which may move them).
            codes = q
            if torch.is_grad_enabled() and z.requires_grad:
                z_for_output = l2norm(z) if self.use_cosine_sim else z
                estimator = rotation_trick if self.use_rotation_trick else straight_through
                codes = estimator(z_for_output, q.detach())
                # A learned codebook also gets the output's gradient through q (as in VQ-VAE with a
                # straight-through estimator): add q - sg(q), which is zero in value.
                if not self.ema_update:
                    codes = codes + (q - q.detach())
            out = self.project_out(rearrange(codes, "(b n) d -> b n d", b=batch))
            quantized = from_sequence(out, packed_shape, self.channel_last)
        else:
            # Same code as decode_indices, so the indices reproduce this output bit for bit.
            quantized = self._decode_sequence(indices, packed_shape)
        return quantized, indices_to_spatial(indices, packed_shape), loss

    def _decode_sequence(self, indices: Tensor, packed_shape: list) -> Tensor:
        out = self.project_out(self._codes_from_indices(indices))
        return from_sequence(out, packed_shape, self.channel_last)

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Rebuild the quantized output from ``indices`` (shape of the input without its channel axis).

        In eval mode this equals the ``quantized`` output of ``forward`` bit for bit.

        Example:
            >>> vq = VectorQuantizer(dim=4, codebook_size=8).eval()
            >>> vq.decode_indices(torch.tensor([[0, 7, 3]])).shape
            torch.Size([1, 3, 4])
        """
        self._check_indices(indices)
        seq, packed_shape = indices_to_sequence(indices.long())
        return self._decode_sequence(seq, packed_shape)

    get_output_from_indices = decode_indices  # vector-quantize-pytorch's name

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, codebook_dim={self.codebook_dim}, "
            f"ema_update={self.ema_update}, sim_vq={self.sim_vq}, cosine={self.use_cosine_sim}, "
            f"rotation_trick={self.use_rotation_trick}, channel_last={self.channel_last}"
        )
