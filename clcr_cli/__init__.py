"""clcr: the reference implementation of CLCR (arXiv 2602.19605) as a staged pipeline."""

__version__ = "0.1.0"
