"""ModelConfig: everything needed to rebuild a model; JSON round trip via asdict/from_dict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from clcr_cli.model.batch import ModalitySpec
from clcr_cli.model.errors import ModelConfigError


@dataclass
class ModelConfig:
    """Configuration of CLCR, its variants and the baselines.

    ``participation`` is the initial budget participation rate r: every level's budget starts
    at ``B_l = r * (number of valid tokens)`` and is learnable unless ``learn_budget`` is
    False. ``budget_scale`` is the initial scale gamma_{l,m} of the budget's scores (intraced.py). ``shared_dim``/``private_dim`` (k_sh, k_pr) default to d // 2 each; k_sh + k_pr <= d.
    ``whitening`` picks the regularisers' whitening ("standardise" or "full", see losses.py);
    ``reg_max_tokens`` caps the tokens the token-level regularisers look at.
    ``lambda_aux``, ``evidence``, ``evidence_temperature`` (heads.py, intercad.py) and
    ``spec_time_mask``/``spec_freq_mask`` (batch.py) are readings added beyond the paper
    (docs/model.md): the auxiliary heads are on by default (``lambda_aux = 1``, chosen on a
    valid split of unseen speakers), the others off.

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
    participation: float = field(default=0.68, metadata={"help": "Initial budget participation rate r (paper: ~0.68)."})
    learn_budget: bool = field(default=True, metadata={"help": "Learn the participation rate (off: it stays at --participation)."})
    budget_scale: float = field(default=4.0, metadata={"help": "Initial scale gamma_{l,m} of the budget's token scores."})
    shared_dim: int | None = field(default=None, metadata={"help": "Width k_sh of the shared basis (default: d // 2)."})
    private_dim: int | None = field(default=None, metadata={"help": "Width k_pr of each private basis (default: d // 2); k_sh + k_pr <= d."})
    lambda_intra: float = field(default=0.1, metadata={"help": "Weight of L_intra."})
    lambda_inter: float = field(default=0.1, metadata={"help": "Weight of L_inter."})
    regression_loss: Literal["l1", "mse"] = field(default="l1", metadata={"help": "Task loss of regression."})
    whitening: Literal["standardise", "full"] = field(default="standardise", metadata={"help": "Whitening of the regularisers' cross-correlation."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout rate."})
    max_len: int = field(default=512, metadata={"help": "Rows of the positional table: at least this many; a store with longer sequences gets a table as long as its longest."})
    encoder: str = field(default="stem", metadata={"help": "Audio and frame encoders: stem (small, the default) or resnet18 (the audio-visual peers'), for every such modality or per modality, e.g. audio=resnet18,video=resnet18.", "key": "unless-default"})
    frame_channels: tuple[int, int, int] = field(default=(16, 32, 64), metadata={"help": "Channels of the frame CNN's three stages."})
    tcn_kernel: int = field(default=3, metadata={"help": "Kernel size of the TCN stages (odd)."})
    reg_max_tokens: int = field(default=4096, metadata={"help": "Most tokens the token-level regularisers look at."})
    # readings added for modalities that do not transfer (docs/model.md, "Leaning on the modality
    # that transfers"); each off by default, and a key of the run only when set
    # lambda_aux: 1 since issue 23 (chosen on fsdd-robust's valid speaker, docs/model.md); runs
    # made before, with 0, keep their keys and load as they were ("unless")
    lambda_aux: float = field(default=1.0, metadata={"help": "CLCR: weight of the per-modality auxiliary heads' task loss, each head on its modality's own encoder levels (0: no auxiliary heads, the paper's literal reading).", "key": "unless-default", "unless": 0.0})
    evidence: Literal["none", "selection", "gates", "both"] = field(default="none", metadata={"help": "CLCR: discount a modality by its auxiliary head's uncertainty in InterCAD's modality selection, its private gates, both, or none (the paper's reading); needs --lambda-aux > 0.", "key": "unless-default"})
    evidence_temperature: float = field(default=0.1, metadata={"help": "CLCR: temperature tau of the evidence-driven selection and gates (smaller: sharper).", "key": "unless-default"})
    spec_time_mask: float = field(default=0.0, metadata={"help": "CLCR: SpecAugment time masks in training, two per sample of up to this share of its steps each, on every sequence modality (0: off).", "key": "unless-default"})
    spec_freq_mask: float = field(default=0.0, metadata={"help": "CLCR: SpecAugment frequency masks in training, two per sample of up to this share of the features each (0: off).", "key": "unless-default"})
    text_finetune: bool = field(default=False, metadata={"help": "Fine-tune the BERT that runs inside the model (a store extracted with --text-tokens); off, it stays as loaded.", "key": "unless-default"})
    # from the data, like ``modalities``: the BERT of a ``tokens`` modality (its HF config, the
    # hidden states its levels are taken from, and the local folder its weights load from)
    text_encoder: dict[str, Any] | None = None

    def encoder_of(self, modality: str) -> str:
        """The encoder of ``modality``: ``encoder`` when it is one name, else its entry in the
        ``modality=name`` list (``stem`` where the list names it not)."""
        if "=" not in self.encoder:
            return self.encoder
        named = dict(part.split("=", 1) for part in self.encoder.split(",") if part)
        return named.get(modality, "stem")

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
        """Rebuild from ``dataclasses.asdict`` output, also after a JSON round trip. A field
        the data lack (a run saved before it existed) takes the value such runs were made
        with: its ``unless`` metadata where its default changed since, else its default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelConfigError(f"unknown model config key(s): {', '.join(unknown)}")
        earlier = {f.name: f.metadata["unless"] for f in fields(cls) if "unless" in f.metadata}
        values = {**{k: v for k, v in earlier.items() if k not in data}, **data}
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
        """Raise ModelConfigError, one line, for any value the model cannot be built with.

        Every size is bounded (:data:`SIZE_BOUNDS`, :data:`SPEC_BOUNDS`, and the encoders'
        per-level projections and positional tables at most :data:`MAX_ENCODER_VALUES`), so
        that a config read from a file cannot ask for more memory than a sane model needs.
        """
        for name, (low, high) in SIZE_BOUNDS.items():
            _bounded(name, getattr(self, name), low, high)
        for name in ("shared_dim", "private_dim"):
            if getattr(self, name) is not None:
                _bounded(name, getattr(self, name), 1, self.d)
        if not isinstance(self.frame_channels, tuple | list) or len(self.frame_channels) != 3:
            raise ModelConfigError(f"frame_channels: expected 3 channel counts, got {self.frame_channels!r}", ("frame_channels",))
        for channels in self.frame_channels:
            _bounded("frame_channels", channels, 1, MAX_FRAME_CHANNELS)
        for name in ("lambda_intra", "lambda_inter", "budget_scale", "participation", "dropout",
                     "lambda_aux", "evidence_temperature", "spec_time_mask", "spec_freq_mask"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ModelConfigError(f"{name}: expected a finite number, got {value!r}", (name,))
        for name in ("lambda_intra", "lambda_inter", "lambda_aux"):
            if getattr(self, name) < 0:
                raise ModelConfigError(f"{name}: must be at least 0, got {getattr(self, name)}", (name,))
        if not isinstance(self.learn_budget, bool):
            raise ModelConfigError(f"learn_budget: expected true or false, got {self.learn_budget!r}", ("learn_budget",))
        names = self.modality_names
        if len(names) < 2:
            raise ModelConfigError(f"a multimodal model needs two or more modalities, got {names}")
        if len(names) > MAX_MODALITIES:
            raise ModelConfigError(f"modalities: at most {MAX_MODALITIES}, got {len(names)}")
        if len(set(names)) != len(names):
            raise ModelConfigError(f"modality names must be unique, got {names}")
        if self.task not in ("classification", "regression"):
            raise ModelConfigError(f"task must be 'classification' or 'regression', got {self.task!r}")
        if self.task == "classification" and self.num_classes < 2:
            raise ModelConfigError(f"classification needs num_classes >= 2, got {self.num_classes}")
        if self.regression_loss not in ("l1", "mse"):
            raise ModelConfigError(
                f"regression_loss: must be 'l1' or 'mse', got {self.regression_loss!r}", ("regression_loss",)
            )
        if self.whitening not in ("standardise", "full"):
            raise ModelConfigError(f"whitening: must be 'standardise' or 'full', got {self.whitening!r}", ("whitening",))
        if self.evidence not in ("none", "selection", "gates", "both"):
            raise ModelConfigError(f"evidence: must be none, selection, gates or both, got {self.evidence!r}", ("evidence",))
        if self.evidence != "none" and not self.lambda_aux > 0:
            raise ModelConfigError(f"evidence={self.evidence} reads the auxiliary heads' uncertainty: set lambda_aux > 0",
                                   ("evidence", "lambda_aux"))
        if self.evidence_temperature <= 0:
            raise ModelConfigError(f"evidence_temperature: must be > 0, got {self.evidence_temperature}", ("evidence_temperature",))
        for name in ("spec_time_mask", "spec_freq_mask"):
            if not 0 <= getattr(self, name) < 1:
                raise ModelConfigError(f"{name}: must lie in [0, 1), got {getattr(self, name)}", (name,))
        if self.budget_scale <= 0:
            raise ModelConfigError(f"budget_scale: must be > 0, got {self.budget_scale}", ("budget_scale",))
        if not 0 < self.participation <= 1:
            raise ModelConfigError(f"participation: must lie in (0, 1], got {self.participation}", ("participation",))
        ks, kp = self.shared_width, self.private_width
        if ks < 1 or kp < 1 or ks + kp > self.d:
            raise ModelConfigError(
                f"need shared_dim, private_dim >= 1 and their sum <= d={self.d}, got {ks} + {kp}",
                ("shared_dim", "private_dim", "d"),
            )
        for width in (self.d, ks):
            if width % self.num_heads:
                raise ModelConfigError(
                    f"num_heads={self.num_heads} must divide d={self.d} and shared_dim={ks}",
                    ("num_heads", "d", "shared_dim"),
                )
        if self.tcn_kernel % 2 == 0:
            raise ModelConfigError(f"tcn_kernel: must be odd, got {self.tcn_kernel}", ("tcn_kernel",))
        if not 0 <= self.dropout < 1:
            raise ModelConfigError(f"dropout: must lie in [0, 1), got {self.dropout}", ("dropout",))
        self._validate_encoder()
        for spec in self.modalities:
            self._validate_spec(spec)
        values = sum(
            self.num_levels * (self._encoder_input(spec) + self.max_len) * self.d
            for spec in self.modalities
        )
        if values > MAX_ENCODER_VALUES:
            raise ModelConfigError(
                f"d={self.d}, num_levels={self.num_levels} and max_len={self.max_len} make the "
                f"encoders' projections and positional tables {values:,} values, more than the "
                f"{MAX_ENCODER_VALUES:,} allowed",
                ("d", "num_levels", "max_len"),
            )

    def _validate_encoder(self) -> None:
        """``encoder``: one of :data:`ENCODERS`, or ``modality=name`` pairs; text has none.
        (Whether the named modalities exist is the data's to say: ``training.data.model_config``.)"""
        parts = str(self.encoder).split(",") if "=" in str(self.encoder) else [f"={self.encoder}"]
        pairs = [p.split("=", 1) if "=" in p else ("", "") for p in parts]
        if any(name not in ENCODERS for _, name in pairs) or ("=" in str(self.encoder) and not all(m for m, _ in pairs)):
            raise ModelConfigError(f"encoder: expected {' or '.join(ENCODERS)}, or modality=name,..., "
                                   f"got {self.encoder!r}", ("encoder",))
        text = [spec.name for spec in self.modalities if spec.kind == "levels" and self.encoder_of(spec.name) != "stem"]
        if text and "=" in str(self.encoder):
            raise ModelConfigError(f"encoder: {text[0]} is text (BERT levels), which takes no {self.encoder_of(text[0])}",
                                   ("encoder",))

    def _encoder_input(self, spec: ModalitySpec) -> int:
        """The width each level's projection reads: stored levels as they are, else d."""
        return spec.dim if spec.kind in ("levels", "tokens") else self.d

    def _validate_spec(self, spec: ModalitySpec) -> None:
        where = f"modality {spec.name!r}"
        if not isinstance(spec.name, str) or not spec.name:
            raise ModelConfigError(f"modality names must be non-empty strings, got {spec.name!r}")
        if spec.kind == "tokens" and self.text_encoder is None:
            raise ModelConfigError(f"{where}: token ids need the BERT they feed (text_encoder)")
        if spec.kind not in ("levels", "sequence", "frames", "tokens"):
            raise ModelConfigError(f"{where}: unknown kind {spec.kind!r}")
        for name, (low, high) in SPEC_BOUNDS.items():
            _bounded(f"{where} {name}", getattr(spec, name), low, high)
        if spec.kind in ("levels", "tokens") and spec.num_levels_in < self.num_levels:
            raise ModelConfigError(
                f"{where} holds {spec.num_levels_in} stored hidden-state level(s) but the model "
                f"needs num_levels={self.num_levels}: extract more text layers or lower num_levels",
                ("num_levels",),
            )
        if spec.max_steps > self.max_len:
            raise ModelConfigError(
                f"{where} has up to {spec.max_steps} steps but max_len is {self.max_len}: raise "
                "max_len or shorten the inputs",
                ("max_len",),
            )


# Bounds of every size a config holds (inclusive): generous for any real model, and a
# guard against a crafted model.json asking for terabytes.
SIZE_BOUNDS = {
    "d": (2, 2048),
    "num_levels": (1, 16),
    "num_heads": (1, 256),
    "max_len": (1, 65536),
    "tcn_kernel": (1, 63),
    "reg_max_tokens": (1, 1 << 20),
    "num_classes": (1, 100_000),
}
ENCODERS = ("stem", "resnet18")  # model/stems.py
SPEC_BOUNDS = {"dim": (1, 16384), "num_levels_in": (1, 128), "max_steps": (0, 65536)}
MAX_FRAME_CHANNELS = 1024
MAX_MODALITIES = 16
MAX_ENCODER_VALUES = 1 << 28  # 1 GiB of float32 weights in the encoders' largest tensors


def _bounded(name: str, value: Any, low: int, high: int) -> None:
    """``value`` must be an integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelConfigError(f"{name}: expected an integer, got {value!r}", (name,))
    if not low <= value <= high:
        raise ModelConfigError(f"{name}: must be from {low} to {high}, got {value}", (name,))
