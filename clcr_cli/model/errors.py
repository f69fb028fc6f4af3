"""The one error the model library raises for a configuration it cannot build or run."""

from __future__ import annotations


class ModelConfigError(ValueError):
    """A model configuration or input that the model cannot use; the message is one line.

    ``model/`` depends on torch alone: the CLI reports this error like its own
    ``ClcrError`` (one line, exit 2), without the model importing the CLI's errors.
    """
