"""boxmed-eval: evaluation and benchmarking toolkit for chest X-ray report generation."""

__version__ = "0.1.0"
