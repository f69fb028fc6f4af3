"""``build_model(config)``: CLCR (any variant) or a baseline, by name."""

from __future__ import annotations

from torch import nn

from clcr_cli.model.baselines import BASELINES
from clcr_cli.model.clcr import CLCR
from clcr_cli.model.config import ModelConfig
from clcr_cli.model.errors import ModelConfigError
from clcr_cli.model.variants import VARIANTS


def build_model(config: ModelConfig) -> nn.Module:
    """Validate ``config`` and build the model it names (``config.model``)."""
    config.validate()
    if config.model == "clcr":
        if config.variant not in VARIANTS:
            raise ModelConfigError(
                f"unknown CLCR variant {config.variant!r}; known: {', '.join(VARIANTS)}"
            )
        return CLCR(config)
    if config.model in BASELINES:
        return BASELINES[config.model](config)
    known = ", ".join(["clcr", *BASELINES])
    raise ModelConfigError(f"unknown model {config.model!r}; known: {known}")
