"""CLCR as a pure PyTorch library: ``model = build_model(config); out = model(batch)``."""

from clcr_cli.model.baselines import BASELINES
from clcr_cli.model.batch import Batch, ModalitySpec, ModelOutput
from clcr_cli.model.config import ModelConfig
from clcr_cli.model.factory import build_model
from clcr_cli.model.profile import count_parameters, estimate_flops
from clcr_cli.model.simplex import capped_simplex_projection
from clcr_cli.model.variants import VARIANTS, VariantSpec

__all__ = [
    "BASELINES",
    "VARIANTS",
    "Batch",
    "ModalitySpec",
    "ModelConfig",
    "ModelOutput",
    "VariantSpec",
    "build_model",
    "capped_simplex_projection",
    "count_parameters",
    "estimate_flops",
]
