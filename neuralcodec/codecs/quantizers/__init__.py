"""Vector quantizers for discrete latents and tokens.

* :class:`VectorQuantizer`: nearest-neighbour VQ with an EMA codebook, k-means init, dead-code
  replacement (on by default), cosine distance, low-dimensional codebooks, straight-through or
  rotation-trick gradients, and the SimVQ option;
* :class:`ResidualVQ`: residual VQ with per-example quantizer dropout (DAC);
* :class:`GroupedResidualVQ`: one residual VQ per channel group (HiFi-Codec's GRVQ);
* :class:`FSQ`: finite scalar quantization;
* :func:`codebook_stats` / :func:`usage_counts`: utilization, perplexity and dead codes.

All take channel-last ``(b, n, d)`` or channel-first ``(b, d, ...)`` inputs, return
``(quantized, indices, loss)`` and rebuild the output with ``decode_indices(indices)``
(bit for bit in eval mode).
"""

from .fsq import FSQ
from .grvq import GroupedResidualVQ
from .rvq import ResidualVQ
from .stats import codebook_stats, usage_counts
from .vq import VectorQuantizer

__all__ = ["FSQ", "GroupedResidualVQ", "ResidualVQ", "VectorQuantizer", "codebook_stats", "usage_counts"]
