"""``python -m clcr_cli`` and the ``clcr`` console script."""

from __future__ import annotations


def main() -> None:
    from clcr_cli.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
