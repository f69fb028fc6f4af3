"""The one error the model library raises for a configuration it cannot build or run."""

from __future__ import annotations


class ModelConfigError(ValueError):
    """A model configuration or input that the model cannot use; the message is one line.

    ``model/`` depends on torch alone: the CLI reports this error like its own
    ``ClcrError`` (one line, exit 2), without the model importing the CLI's errors.
    ``fields`` names the ``ModelConfig`` fields the error is about, so that the caller can
    say where their values came from (a flag, ``--set``, a file).
    """

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields
