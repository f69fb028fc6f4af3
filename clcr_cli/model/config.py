"""ModelConfig: everything needed to rebuild a model; JSON round trip via asdict/from_dict."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
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

    ``modalities``, ``task`` and ``num_classes`` come from the data; every other field is a
    setting, and its ``help`` metadata makes it an option of ``clcr train`` (``clcr_cli.config``).
    """

    modalities: tuple[ModalitySpec, ...]
    task: Literal["classification", "regression"] = "classification"
    num_classes: int = 2
    # the settings a user chooses; ``help`` makes each an option of ``clcr train``
    model: str = field(default="clcr", metadata={"help": "clcr | late-fusion | early-fusion | misa."})
    variant: str = field(default="full", metadata={"help": "Ablation variant: full, no-hierarchy, no-intraced, no-intercad, full-mix, no-reg, ..."})
    d: int = field(default=128, metadata={"help": "Width of every level."})
    num_levels: int = field(default=3, metadata={"help": "Semantic levels L (paper: 3)."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads (divide d and shared_dim)."})
    participation: float = field(default=0.68, metadata={"help": "Initial budget participation rate r (paper: ~0.68).", "flag": "--budget"})
    learn_budget: bool = field(default=True, metadata={"help": "Learn the participation rate (off: it stays at --budget)."})
    budget_scale: float = field(default=4.0, metadata={"help": "Initial scale gamma_m of the budget's token scores."})
    shared_dim: int | None = field(default=None, metadata={"help": "Width k_sh of the shared basis (default: d // 2)."})
    private_dim: int | None = field(default=None, metadata={"help": "Width k_pr of each private basis (default: d // 2); k_sh + k_pr <= d."})
    lambda_intra: float = field(default=0.1, metadata={"help": "Weight of L_intra."})
    lambda_inter: float = field(default=0.1, metadata={"help": "Weight of L_inter."})
    regression_loss: Literal["l1", "mse"] = field(default="l1", metadata={"help": "Task loss of regression."})
    whitening: Literal["standardise", "full"] = field(default="standardise", metadata={"help": "Whitening of the regularisers' cross-correlation."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout rate."})
    max_len: int = field(default=512, metadata={"help": "Most steps a sequence may have (positional table)."})
    frame_channels: tuple[int, int, int] = field(default=(16, 32, 64), metadata={"help": "Channels of the frame CNN's three stages."})
    tcn_kernel: int = field(default=3, metadata={"help": "Kernel size of the TCN stages (odd)."})
    reg_max_tokens: int = field(default=4096, metadata={"help": "Most tokens the token-level regularisers look at."})

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
