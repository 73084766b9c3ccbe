"""Entropy coding: integer CDF tables, entropy models, the vectorized rANS coder, the container."""
