"""Applications: the ``codec`` CLI, training loops, benchmarks, metrics and plots."""
