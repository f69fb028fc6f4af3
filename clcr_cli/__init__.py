"""clcr: the reference implementation of CLCR (arXiv 2602.19605) as a staged pipeline."""

__version__ = "0.1.0"


def __getattr__(name: str):  # `clcr_cli.load_run` without importing torch for the CLI's start
    if name in ("load_run", "Run"):
        from clcr_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'clcr_cli' has no attribute {name!r}")
