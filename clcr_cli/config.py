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
    values: dict[str, Any] = {}
    values.update(defaults or {})
    values.update(from_file)
    values.update({k: v for k, v in cli.items() if v is not None})
    for f in dataclasses.fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**{k: v for k, v in values.items() if k in names})


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
