"""Entropy coding: integer CDF tables, entropy models, the vectorized rANS coder, the container."""

from .container import Container, peek, read_container, write_container
