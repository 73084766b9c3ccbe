"""Entropy coding: integer CDF tables, entropy models, the vectorized rANS coder, the container."""

from .container import Container, peek, read_container, write_container
from .models import Categorical, EntropyBottleneck, GaussianConditional
from .tables import discretized_gaussian_tables, pmf_to_quantized_cdf, table_hash, tables_from_pmfs
from .rans import CdfTables, decode_batch, decode_with_indexes, encode_batch, encode_with_indexes, prepare_tables
