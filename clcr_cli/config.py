"""Stage options as dataclasses, TOML loading and the precedence between them.

Precedence, highest first: an option given on the command line, the stage's section of
``--config FILE.toml`` (``[extract]``, ``[train]``, ...), the dataset's defaults
(:data:`DATASET_EXTRACT_DEFAULTS`), the dataclass defaults below.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from clcr_cli.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass
class ExtractConfig:
    """Options of ``clcr extract``. See the README's "extract" section for each one."""

    dataset: str = "synth"
    root: str | None = None  # default: <workdir>/raw/<dataset>
    split_file: str | None = None
    fold: int = 1
    aligned: bool = False
    manifest: str | None = None
    target: str | None = None
    n_samples: int = 240
    seed: int = 0
    # text: BERT hidden-state levels
    text_model: str = "minilm"
    text_layers: tuple[int, ...] | None = None  # default: evenly spaced, e.g. (2, 4, 6)
    text_max_len: int = 64
    text_batch: int = 32
    # audio: librosa / PyAV
    sample_rate: int = 16000
    audio_features: str = "logmel"
    n_mels: int = 64
    n_mfcc: int = 20
    hop_length: int = 160
    n_fft: int = 400
    max_seconds: float = 10.0
    # video: OpenCV
    num_frames: int = 8
    frame_size: int = 112
    fps: float | None = None
    # pipeline
    part_size: int = 32  # samples per resumable part file
    on_error: str = "fail"  # fail | skip


# The built-in dataset is small by design: short clips, small frames, short transcripts.
DATASET_EXTRACT_DEFAULTS: dict[str, dict[str, Any]] = {
    "synth": {"text_max_len": 32, "num_frames": 16, "frame_size": 32, "max_seconds": 2.0},
    "synth-reg": {"text_max_len": 32, "num_frames": 16, "frame_size": 32, "max_seconds": 2.0},
    "cremad": {"num_frames": 3, "max_seconds": 3.0},
    "ks": {"num_frames": 3, "max_seconds": 10.0},
    "ave": {"num_frames": 4, "max_seconds": 10.0},
    "ucf101": {"num_frames": 8, "max_seconds": 10.0},
    "mosi": {"text_max_len": 50},
    "mosei": {"text_max_len": 50},
}


def load_toml(path: Path | None) -> dict[str, Any]:
    """Read a config file; a missing or malformed file is a one-line error."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def build_config(
    cls: type[T],
    section: str,
    toml: Mapping[str, Any],
    cli: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    source: str = "config",
) -> T:
    """Merge dataclass defaults < ``defaults`` < ``toml[section]`` < ``cli`` (None = not given)."""
    names = {f.name for f in dataclasses.fields(cls)}
    from_file = dict(toml.get(section, {}))
    unknown = sorted(set(from_file) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) in [{section}]: {', '.join(unknown)}")
    unknown = sorted(k for k, v in cli.items() if v is not None and k not in names)
    if unknown:
        raise ConfigError(
            f"unknown {section} option(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    values: dict[str, Any] = {}
    values.update(defaults or {})
    values.update(from_file)
    values.update({k: v for k, v in cli.items() if v is not None})
    for f in dataclasses.fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def extract_config(toml: Mapping[str, Any], cli: Mapping[str, Any], source: str = "config") -> ExtractConfig:
    """The extract options for the dataset named on the command line or in the file."""
    dataset = cli.get("dataset") or toml.get("extract", {}).get("dataset") or ExtractConfig.dataset
    cfg = build_config(
        ExtractConfig, "extract", toml, cli, DATASET_EXTRACT_DEFAULTS.get(dataset, {}), source
    )
    if cfg.on_error not in ("fail", "skip"):
        raise ConfigError(f"--on-error must be 'fail' or 'skip', not {cfg.on_error!r}")
    if cfg.part_size < 1:
        raise ConfigError("--part-size must be at least 1")
    return cfg


@dataclasses.dataclass
class TrainConfig:
    """Options of ``clcr train``. Defaults follow the paper: SGD (momentum 0.9), lr 1e-3,
    weight decay 1e-4, batch 64, 100 epochs."""

    task: str = "synth"
    model: str = "clcr"  # clcr | late-fusion | early-fusion | misa
    variant: str = "full"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"  # sgd | adamw
    scheduler: str = "none"  # none | cosine | warmup-cosine
    warmup_epochs: int = 0  # warmup-cosine: linear warmup (at most epochs - 1), then cosine
    grad_clip: float = 0.0  # 0: off
    patience: int = 0  # early stopping after this many epochs without improvement; 0: off
    d: int = 128
    num_levels: int = 3
    num_heads: int = 4
    participation: float = 0.68
    learn_budget: bool = True  # False: the participation rate stays at --budget (budget sweep)
    lambda_intra: float = 0.1
    lambda_inter: float = 0.1
    regression_loss: str = "l1"
    dropout: float = 0.1
    valid_fraction: float = 0.1  # carved from train when the store has no valid split
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16: CUDA only)
    compile: bool = False  # torch.compile the model (falls back to eager where unavailable)
    stream_above_mb: float = 2048.0  # a split larger than this streams from HDF5 in batches
    loader_workers: int = 0  # DataLoader worker processes when streaming
    seed: int = 0


# The paper's six datasets train with the paper's recipe (the TrainConfig defaults). Every
# other task -- the built-in ``synth`` data and a user's manifest -- is small and is meant
# to train in minutes on a CPU, where SGD at lr 1e-3 learns next to nothing: it gets this
# short-budget recipe instead. Any option given in a TOML file or on the command line wins.
PAPER_TASKS = ("cremad", "ks", "ave", "ucf101", "mosi", "mosei")
SHORT_BUDGET_RECIPE: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 2e-3,
    "weight_decay": 1e-2,
    "scheduler": "warmup-cosine",
    "warmup_epochs": 2,
    "epochs": 30,
    "batch_size": 32,
    "d": 64,
    "grad_clip": 1.0,
}


def train_defaults(task: str) -> dict[str, Any]:
    """The recipe a task trains with unless told otherwise (see :data:`SHORT_BUDGET_RECIPE`)."""
    return {} if task in PAPER_TASKS else dict(SHORT_BUDGET_RECIPE)


def train_config(toml: Mapping[str, Any], cli: Mapping[str, Any], source: str = "config") -> TrainConfig:
    task = cli.get("task") or toml.get("train", {}).get("task") or TrainConfig.task
    cfg = build_config(TrainConfig, "train", toml, cli, train_defaults(task), source)
    checks = {
        "optimizer": ("sgd", "adamw"),
        "scheduler": ("none", "cosine", "warmup-cosine"),
        "regression_loss": ("l1", "mse"),
        "precision": ("fp32", "bf16", "fp16"),
    }
    for name, allowed in checks.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ConfigError("--epochs and --batch-size must be at least 1")
    if cfg.warmup_epochs < 0:
        raise ConfigError(f"warmup_epochs must be >= 0, got {cfg.warmup_epochs}")
    return cfg


@dataclasses.dataclass
class EvalConfig:
    """Options of ``clcr eval``."""

    split: str = "test"
    missing: tuple[str, ...] = ()  # modalities evaluated as absent (masked)
    batch_size: int = 256


def eval_config(toml: Mapping[str, Any], cli: Mapping[str, Any], source: str = "config") -> EvalConfig:
    cfg = build_config(EvalConfig, "eval", toml, cli, None, source)
    if cfg.split not in ("train", "valid", "test"):
        raise ConfigError(f"--split must be train, valid or test, not {cfg.split!r}")
    return cfg


@dataclasses.dataclass
class AblateConfig:
    """Options of ``clcr ablate``: which variants, seeds, budget rates and baselines."""

    variants: tuple[str, ...] = ()  # default: every variant of the registry
    seeds: tuple[int, ...] = (0,)
    budget_sweep: tuple[float, ...] = ()  # participation rates r for the sparsity study
    baselines: tuple[str, ...] = ()
    split: str = "test"


@dataclasses.dataclass
class NoiseConfig:
    """Options of ``clcr noise``: Gaussian noise on test inputs (MultiBench's protocol)."""

    sigmas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    modality: str = "each"  # each | all | a modality name
    noise_seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = ("clcr", "late-fusion")
    split: str = "test"


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out


STAGE_DEFAULTS: dict[str, Any] = {
    "train": TrainConfig,
    "eval": EvalConfig,
    "ablate": lambda: {"base": dataclasses.asdict(TrainConfig()), "ablate": dataclasses.asdict(AblateConfig())},
    "noise": lambda: {"base": dataclasses.asdict(TrainConfig()), "noise": dataclasses.asdict(NoiseConfig())},
}


def non_default_options(stage: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a cached output that differ from the stage's defaults (for ``status``)."""
    if stage == "extract":
        dataset = params.get("dataset", ExtractConfig.dataset)
        defaults = {**dataclasses.asdict(ExtractConfig()), **DATASET_EXTRACT_DEFAULTS.get(dataset, {})}
    elif stage in STAGE_DEFAULTS:
        made = STAGE_DEFAULTS[stage]()
        defaults = made if isinstance(made, dict) else dataclasses.asdict(made)
        task = params.get("task") or params.get("base", {}).get("task")
        recipe = train_defaults(task) if task else {}
        if stage == "train":
            defaults.update(recipe)
        elif "base" in defaults:
            defaults["base"].update(recipe)
    else:
        defaults = {}
    flat, base = _flatten(params), _flatten(defaults)
    return {k: v for k, v in flat.items() if k not in base or base[k] != v}
