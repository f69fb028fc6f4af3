"""ModelConfig: everything needed to rebuild a model; JSON round trip via asdict/from_dict."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from clcr_cli.model.batch import ModalitySpec
from clcr_cli.model.errors import ModelConfigError


@dataclass
class ModelConfig:
    """Configuration of CLCR, its variants and the baselines.

    ``participation`` is the initial budget participation rate r: every level's budget starts
    at ``B_l = r * (number of valid tokens)`` and is learnable unless ``learn_budget`` is
    False. ``budget_scale`` is the initial scale gamma_m of the budget's scores (intraced.py). ``shared_dim``/``private_dim`` (k_sh, k_pr) default to d // 2 each; k_sh + k_pr <= d.
    ``whitening`` picks the regularisers' whitening ("standardise" or "full", see losses.py);
    ``reg_max_tokens`` caps the tokens the token-level regularisers look at.
    """

    modalities: tuple[ModalitySpec, ...]
    task: Literal["classification", "regression"] = "classification"
    num_classes: int = 2
    model: str = "clcr"
    variant: str = "full"
    d: int = 128
    num_levels: int = 3
    num_heads: int = 4
    participation: float = 0.68
    learn_budget: bool = True
    budget_scale: float = 4.0
    shared_dim: int | None = None
    private_dim: int | None = None
    lambda_intra: float = 0.1
    lambda_inter: float = 0.1
    regression_loss: Literal["l1", "mse"] = "l1"
    whitening: Literal["standardise", "full"] = "standardise"
    dropout: float = 0.1
    max_len: int = 512
    frame_channels: tuple[int, int, int] = (16, 32, 64)
    tcn_kernel: int = 3
    reg_max_tokens: int = 4096

    @property
    def shared_width(self) -> int:
        return self.d // 2 if self.shared_dim is None else self.shared_dim

    @property
    def private_width(self) -> int:
        return self.d // 2 if self.private_dim is None else self.private_dim

    @property
    def output_dim(self) -> int:
        return self.num_classes if self.task == "classification" else 1

    @property
    def modality_names(self) -> list[str]:
        return [spec.name for spec in self.modalities]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from ``dataclasses.asdict`` output, also after a JSON round trip."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelConfigError(f"unknown model config key(s): {', '.join(unknown)}")
        values = dict(data)
        try:
            values["modalities"] = tuple(
                spec if isinstance(spec, ModalitySpec) else ModalitySpec(**spec)
                for spec in data["modalities"]
            )
        except (KeyError, TypeError) as error:
            raise ModelConfigError(f"model config: bad 'modalities' entry ({error})") from None
        if "frame_channels" in values:
            values["frame_channels"] = tuple(values["frame_channels"])
        return cls(**values)

    def validate(self) -> None:
        """Raise ModelConfigError, one line, for any value the model cannot be built with."""
        names = self.modality_names
        if len(names) < 2:
            raise ModelConfigError(f"a multimodal model needs two or more modalities, got {names}")
        if len(set(names)) != len(names):
            raise ModelConfigError(f"modality names must be unique, got {names}")
        if self.task not in ("classification", "regression"):
            raise ModelConfigError(f"task must be 'classification' or 'regression', got {self.task!r}")
        if self.task == "classification" and self.num_classes < 2:
            raise ModelConfigError(f"classification needs num_classes >= 2, got {self.num_classes}")
        if self.regression_loss not in ("l1", "mse"):
            raise ModelConfigError(
                f"regression_loss must be 'l1' or 'mse', got {self.regression_loss!r}"
            )
        if self.whitening not in ("standardise", "full"):
            raise ModelConfigError(f"whitening must be 'standardise' or 'full', got {self.whitening!r}")
        if self.num_levels < 1:
            raise ModelConfigError(f"num_levels must be >= 1, got {self.num_levels}")
        if self.budget_scale <= 0:
            raise ModelConfigError(f"budget_scale must be > 0, got {self.budget_scale}")
        if not 0 < self.participation <= 1:
            raise ModelConfigError(f"participation must lie in (0, 1], got {self.participation}")
        ks, kp = self.shared_width, self.private_width
        if ks < 1 or kp < 1 or ks + kp > self.d:
            raise ModelConfigError(
                f"need shared_dim, private_dim >= 1 and their sum <= d={self.d}, got {ks} + {kp}"
            )
        for width in (self.d, ks):
            if width % self.num_heads:
                raise ModelConfigError(
                    f"num_heads={self.num_heads} must divide d={self.d} and shared_dim={ks}"
                )
        if self.tcn_kernel < 1 or self.tcn_kernel % 2 == 0:
            raise ModelConfigError(f"tcn_kernel must be odd, got {self.tcn_kernel}")
        if not 0 <= self.dropout < 1:
            raise ModelConfigError(f"dropout must lie in [0, 1), got {self.dropout}")
        for spec in self.modalities:
            if spec.kind not in ("levels", "sequence", "frames"):
                raise ModelConfigError(f"modality {spec.name!r}: unknown kind {spec.kind!r}")
