"""Every stage's options, declared once, and how they are given.

An *option* is a dataclass field whose metadata has a ``help`` text (:func:`option` makes
one): the field gives its name, default and type, the metadata its help, whether it
changes the result (``key``: part of the stage's cache key), bounds (``low``, ``high``)
and, where the flag is not ``--<name>``, its ``flag``. An option added to a stage whose
outputs are already cached is declared ``key=UNLESS_DEFAULT``: it enters the key (and
the recorded options) only when it differs from its default, so that those outputs keep
their keys (see :func:`option_values`); an option whose default changed says, as
``"unless"`` in its metadata, the value the earlier outputs were made with, and enters the
key only when it differs from that one. Everything else is derived from
these declarations: the command's flags (``cli.py``), the TOML sections, ``--set
KEY=VALUE``, checking and coercing values (:func:`coerce`), the cache keys
(:func:`key_options`) and the ``status`` listing (:func:`non_default_options`).
Declaring a new option is one line, e.g. in :class:`TrainConfig`::

    label_smoothing: float = option(0.0, "Label smoothing of the task loss.", low=0, high=1)

A field whose default is a dataclass of options is a *section*: ``TrainConfig.model`` is
the model's :class:`~clcr_cli.model.ModelConfig` (its fields carry their help in the same
way; ``modalities``, ``task`` and ``num_classes`` come from the data and are no options).
A section's option is written ``model.d`` (``[train.model]`` in TOML), or ``d`` alone,
since no name is used twice within a stage.

Precedence, highest first: a flag on the command line, ``--set KEY=VALUE``, the stage's
section of ``--config FILE.toml`` (``[extract]``, ``[train]``, ``[eval]``, ``[ablate]``,
``[noise]``), the task's recipe (``clcr_cli/configs/<task>.toml``, or ``default.toml`` for a
task without one: :func:`recipe_layers`), the declared defaults. ``clcr config --task X``
prints what results (:func:`effective_toml`). A value of the wrong type, out of range or
for an unknown option is a :class:`ConfigError` of one line naming the option and where it
was given (the flag, ``--set``, or the file and its section).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import json
import math
import tomllib
import types
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from clcr_cli.errors import ConfigError
from clcr_cli.model.batch import ModalitySpec
from clcr_cli.model.config import ModelConfig
from clcr_cli.model.errors import ModelConfigError

T = TypeVar("T")
# an option that is part of the key only when it differs from its default (module docstring)
UNLESS_DEFAULT = "unless-default"


def option(
    default: Any,
    help: str,
    *,
    key: bool | Literal["unless-default"] = True,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    flag: str | None = None,
) -> Any:
    """A dataclass field that is an option (see the module's docstring); ``low`` and
    ``high`` bound its values inclusively, ``above`` exclusively from below."""
    metadata = {"help": help, "key": key, "low": low, "high": high, "above": above, "flag": flag}
    return dataclasses.field(default=default, metadata=metadata)


def section(factory: Any, help: str) -> Any:
    """A dataclass field holding a dataclass of options, made by ``factory``."""
    return dataclasses.field(default_factory=factory, metadata={"help": help, "section": True})


@dataclasses.dataclass
class ExtractConfig:
    """Options of ``clcr extract``."""

    # where the data lie is no part of the key: their content is (see datasets/fingerprint.py)
    dataset: str = option("synth", "synth, synth-reg, cremad, ks, ave, ucf101, mosi, mosei, or a name for --manifest.")
    recipe: str | None = option(None, "The recipe to start from, a file of clcr_cli/configs/ by name (default: the dataset's own, e.g. mosi-dlf for DLF's protocol on MOSI).", key=UNLESS_DEFAULT)
    root: str | None = option(None, "The dataset's folder (default: <workdir>/raw/<dataset>).", key=False)
    split_file: str | None = option(None, "CREMA-D train.csv or Kinetics-Sounds my_train.txt (the test list beside it).", key=False)
    fold: int = option(1, "UCF101 official split.", low=1, high=3)
    ave_reading: Literal["event", "video"] = option(
        "event", "AVE: event (one sample per annotated event, cut to its window; classes in Annotations.txt "
        "order) or video (the peers' reading, PMR's and ARL's: one sample per whole 10 s video, its first "
        "listing in a split; classes in order of first appearance in testSet.txt).", key=UNLESS_DEFAULT)
    aligned: bool = option(False, "MOSI/MOSEI: aligned_50.pkl instead of unaligned_50.pkl.", flag="--aligned/--unaligned")
    manifest: str | None = option(None, "CSV manifest of a user's dataset (id, split, label, audio/video/image/text).", key=False)
    target: Literal["classification", "regression"] | None = option(None, "Manifest target (default: from the labels).")
    n_samples: int = option(1200, "synth: number of samples to generate.", low=10, high=1_000_000)
    seed: int = option(0, "Random seed: the generated dataset and carved valid splits.", low=0)
    verify_inputs: bool = option(False, "Identify every input file by the sha256 of its content, not by size and modification time (reads every file).", key=False)
    text_model: str = option("minilm", "'minilm' (offline default), a local HF model folder, or a cached hub id.")
    text_layers: tuple[int, ...] | None = option(None, "Hidden-state indices of the text levels, e.g. 2,4,6 (default: evenly spaced).", low=0)
    text_max_len: int = option(64, "Tokens per transcript (padded/truncated).", low=1)
    text_batch: int = option(32, "Transcripts per BERT forward pass.", key=False, low=1)
    text_tokens: bool = option(
        False, "Store text as token ids and masks for a BERT that runs (and can be fine-tuned: train "
        "--text-finetune) inside the model, instead of its frozen hidden states; MMSA's text_bert ids are "
        "used as they are when the text model's tokenizer gives the same ids.", key=UNLESS_DEFAULT)
    sample_rate: int = option(16000, "Audio sample rate (Hz).", low=1)
    audio_features: Literal["logmel", "mfcc", "logmel+mfcc", "stft", "fbank", "spectrogram"] = option(
        "logmel", "Audio features: logmel, mfcc, logmel+mfcc; or the audio-visual peers' spectrograms for a "
        "ResNet18: stft (OGM-GE's CREMA-D log-STFT, 188 x 257), fbank (the KS Kaldi fbank, 1024 x --n-mels), "
        "spectrogram (ARL's AVE log spectrogram, 1004 x 257).")
    n_mels: int = option(64, "Mel bands.", low=1)
    n_mfcc: int = option(20, "MFCC coefficients.", low=1)
    hop_length: int = option(160, "STFT hop (samples).", low=1)
    n_fft: int = option(400, "STFT window (samples).", low=1)
    max_seconds: float = option(10.0, "Audio longer than this is cut.", low=0.01)
    num_frames: int = option(8, "Video frames per clip.", low=1, high=1024)
    frame_size: int = option(112, "Frames are resized to SIZE x SIZE.", low=1, high=1024)
    fps: float | None = option(None, "Sample frames at this rate (capped at --num-frames); default: evenly spaced.", low=0.01)
    flow: Literal["sampled", "native", "tvl1"] = option(
        "sampled", "Optical flow (UCF101): sampled (between the sampled, resized frames), native (at each "
        "sampled time, from that frame to the next one of the decoded video, at its resolution) or tvl1 "
        "(pre-extracted TV-L1 u/v JPEGs under --flow-root, BalanceBenchmark's layout).", key=UNLESS_DEFAULT)
    flow_root: str | None = option(
        None, "--flow tvl1: the folder of the u/v JPEGs: <root>/u/<video>/frame000001.jpg and <root>/v/<video>/..., "
        "or <root>/<video>/{u,v}/ (enters the key by its path).", key=UNLESS_DEFAULT)
    part_size: int = option(32, "Samples per resumable part file.", low=1)
    on_error: Literal["fail", "skip"] = option("fail", "fail: stop at a bad sample; skip: record it in skipped.csv and go on.")


def _model_options() -> ModelConfig:
    return ModelConfig(modalities=())  # the data-derived fields are filled in by training


@dataclasses.dataclass
class TrainConfig:
    """Options of ``clcr train``: the training recipe, and the model's options in ``model``.
    Defaults follow the paper: SGD (momentum 0.9), lr 1e-3, weight decay 1e-4, batch 64,
    100 epochs."""

    task: str = option("synth", "Dataset/task name.")
    recipe: str | None = option(None, "The recipe to start from, a file of clcr_cli/configs/ by name (default: the task's own, e.g. mosi-dlf for DLF's protocol on MOSI).", key=UNLESS_DEFAULT)
    epochs: int = option(100, "Training epochs (paper: 100).", low=1)
    batch_size: int = option(64, "Batch size (paper: 64).", low=1)
    lr: float = option(1e-3, "Learning rate (paper: 1e-3).", low=0)
    text_lr: float = option(0.0, "Learning rate of a BERT fine-tuned inside the model (extract --text-tokens, --text-finetune); 0: --lr.", low=0, key=UNLESS_DEFAULT)
    # UNLESS_DEFAULT, not key=False: a key=False option would enter the base of every ablate/noise key
    gradient_checkpointing: bool = option(False, "Recompute a fine-tuned BERT's layers in the backward pass instead of keeping their activations (less memory, more time; the same results).", key=UNLESS_DEFAULT)
    momentum: float = option(0.9, "SGD momentum.", low=0)
    weight_decay: float = option(1e-4, "Weight decay.", low=0)
    optimizer: Literal["sgd", "adamw"] = option("sgd", "Optimiser (paper: SGD).")
    scheduler: Literal["none", "cosine", "warmup-cosine", "step"] = option("none", "Learning-rate schedule, stepped per epoch (step: StepLR, OGM-GE's).")
    warmup_epochs: int = option(0, "warmup-cosine: linear warmup epochs (at most epochs - 1), then cosine.", low=0)
    step_size: int = option(70, "step: multiply the lr by --step-gamma every this many epochs (OGM-GE: 70).", low=1, key=UNLESS_DEFAULT)
    step_gamma: float = option(0.1, "step: the factor (OGM-GE: 0.1).", low=0, key=UNLESS_DEFAULT)
    grad_clip: float = option(0.0, "Clip the gradient norm at this value (0: off).", low=0)
    patience: int = option(0, "Early stopping after this many epochs without improvement (0: off).", low=0)
    modality_dropout: float = option(
        0.0, "Drop each modality of a training sample with this probability, drawn anew each epoch "
        "(a sample keeps at least one).", low=0, high=1, key=UNLESS_DEFAULT)
    valid_fraction: float = option(0.1, "Share of train carved into valid where the store has no valid split.", low=0, high=1)
    frame_view: int = option(
        0, "Frames reach the model at SIZE x SIZE (0: as stored): in training a random resized crop "
        "(and flip, with --augment), at evaluation a resize of the whole frame, as the audio-visual "
        "peers feed 224-px frames.", low=0, high=1024, key=UNLESS_DEFAULT)
    augment: bool = option(
        False, "Training frames: RandomResizedCrop (scale 0.08-1) and a horizontal flip, drawn per frame, "
        "sample and epoch from the seed (OGM-GE's); needs --frame-view.", key=UNLESS_DEFAULT)
    encoder_weights: str | None = option(
        None, "A local torchvision ResNet18 state dict (.pth, .pt, .safetensors) for the resnet18 "
        "encoders, or modality=PATH,... (the path and the file's sha256 are part of the run's key).",
        key=UNLESS_DEFAULT)
    keep_test_best: bool = option(
        False, "Also evaluate the test split after every epoch and keep the weights of the best test "
        "epoch (model_test_best.safetensors), for `eval --select test-best`: an optimistic figure, as "
        "OGM-GE, ARL and D&R report; the run's model is still the one chosen on valid.", key=UNLESS_DEFAULT)
    precision: Literal["fp32", "bf16", "fp16"] = option("fp32", "Arithmetic precision (fp16: CUDA only).")
    compile: bool = option(False, "torch.compile the model (falls back to eager where unavailable).", key=False)
    stream_above_mb: float = option(2048.0, "A split larger than this (MiB) streams from HDF5 in batches.", key=False, low=0)
    loader_workers: int = option(0, "DataLoader worker processes when streaming.", key=False, low=0)
    seed: int = option(0, "Random seed of the run.", low=0)
    model: ModelConfig = section(_model_options, "The model's options: [train.model], --set model.KEY=VALUE.")


@dataclasses.dataclass
class EvalConfig:
    """Options of ``clcr eval``."""

    split: Literal["train", "valid", "test"] = option("test", "The split evaluated.")
    missing: tuple[str, ...] = option((), "Evaluate with this modality absent (repeatable).")
    # the flag --batch-size is train's: eval and its training share a command line
    batch_size: int = option(256, "Samples per evaluation batch.", low=1, flag="--eval-batch-size")
    select: Literal["valid", "test-best"] = option(
        "valid", "The weights evaluated: valid (the epoch chosen on the valid split) or test-best (the "
        "best test epoch of a run trained with --keep-test-best: OPTIMISTIC, labelled so everywhere, "
        "for a figure to put next to the peers' that report it).", key=UNLESS_DEFAULT)
    probe_samples: int = option(
        4000, "Train samples (at most; evenly spaced) the single-modality probes are fitted on: each is a "
        "forward pass of the model, so 0 skips the probes of a large dataset.", low=0, key=UNLESS_DEFAULT)


@dataclasses.dataclass
class AblateConfig:
    """Options of ``clcr ablate``: which variants, seeds, budget rates and baselines."""

    variants: tuple[str, ...] = option((), "Variant to compare with full (repeatable; default: all).", flag="--variant")
    seeds: tuple[int, ...] = option((0,), "Training seeds, e.g. 1,2,3.", low=0)
    budget_sweep: tuple[float, ...] = option((), "Participation rates r of the sparsity study, e.g. 0.2,0.4,0.68,0.8,1.0.", above=0, high=1)
    baselines: tuple[str, ...] = option((), "Add a baseline row (repeatable): late-fusion, early-fusion, misa.", flag="--baseline")
    split: Literal["train", "valid", "test"] = option("test", "The split evaluated.")


@dataclasses.dataclass
class NoiseConfig:
    """Options of ``clcr noise``: robustness sweeps on the test inputs -- Gaussian noise on
    the extracted features (MultiBench's protocol), noise on the raw media before
    extraction (``--level raw``), or modalities missing at random (``--missing-rate``)."""

    sigmas: tuple[float, ...] = option((0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), "--level features: noise levels in training-std units, increasing.", low=0)
    modality: str = option("each", "each (one curve per modality) | all | a modality name.")
    noise_seeds: tuple[int, ...] = option((0, 1, 2), "Noise seeds.", low=0)
    models: tuple[str, ...] = option(("clcr", "late-fusion"), "Models compared.")
    split: Literal["train", "valid", "test"] = option("test", "The split evaluated.")
    level: Literal["features", "raw"] = option("features", "features: Gaussian noise on the extracted features (--sigmas); raw: noise on the media, which are extracted again (--snr-db, --pixel-sigma, --blur, --text-rate).", key=UNLESS_DEFAULT)
    snr_db: tuple[float, ...] = option((30.0, 20.0, 10.0, 5.0, 0.0), "--level raw: audio signal-to-noise ratios in dB of white Gaussian noise, one per step after the clean one, decreasing.", key=UNLESS_DEFAULT)
    pixel_sigma: tuple[float, ...] = option((8.0, 16.0, 32.0, 64.0, 128.0), "--level raw: std of Gaussian pixel noise on 0-255 frames, one per step after the clean one, increasing.", low=0, high=1000, key=UNLESS_DEFAULT)
    blur: float = option(0.0, "--level raw: Gaussian blur of the frames (sigma in pixels) before the pixel noise, at every noisy step (0: none).", low=0, high=100, key=UNLESS_DEFAULT)
    text_rate: tuple[float, ...] = option((0.05, 0.1, 0.2, 0.3, 0.5), "--level raw: share of letters (or words) corrupted, one per step after the clean one, increasing.", low=0, high=1, key=UNLESS_DEFAULT)
    text_unit: Literal["char", "word"] = option("char", "--level raw: char replaces letters by random letters; word deletes words.", key=UNLESS_DEFAULT)
    missing_rates: tuple[float, ...] = option((), "Sweep missing modalities instead of noise: each modality of the curve absent per sample with these probabilities, increasing, e.g. 0,0.1,0.2,0.3.", low=0, high=1, flag="--missing-rate", key=UNLESS_DEFAULT)


@dataclasses.dataclass
class PredictConfig:
    """Options of ``clcr predict``: a trained run applied to new media (the run, the inputs
    and where the outputs go are the command's arguments, not options)."""

    missing: tuple[str, ...] = option((), "Predict with this modality absent (repeatable): for inputs that do not have it.")
    batch_size: int = option(256, "Samples per prediction batch.", low=1)
    on_error: Literal["fail", "skip"] = option("fail", "fail: stop at the first input that cannot be decoded; skip: record it in skipped.csv and go on.")


SECTIONS: dict[str, type] = {
    "extract": ExtractConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "ablate": AblateConfig,
    "noise": NoiseConfig,
    "predict": PredictConfig,
}


# --- reading the declarations -------------------------------------------------------------


def options(cls: type) -> dict[str, dataclasses.Field]:
    """The options of ``cls`` (fields with help), sections included, by name."""
    return {f.name: f for f in dataclasses.fields(cls) if "help" in f.metadata}


def sections(cls: type) -> dict[str, type]:
    """The sections of ``cls``: name -> the dataclass of its options."""
    return {n: type(f.default_factory()) for n, f in options(cls).items() if f.metadata.get("section")}


def flag(name: str, f: dataclasses.Field) -> str:
    """The command-line flag of option ``name``: ``--name-with-dashes`` unless declared."""
    return f.metadata.get("flag") or f"--{name.replace('_', '-')}"


def declared(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(path, field, type) of every option of ``cls``, its sections' options included
    under their section's name (``model.d``)."""
    hints = get_type_hints(cls)
    for name, f in options(cls).items():
        if f.metadata.get("section"):
            yield from declared(sections(cls)[name], f"{prefix}{name}.")
        else:
            yield prefix + name, f, hints[name]


def _owner(cls: type, name: str) -> str | None:
    """The section of ``cls`` that has the option ``name``, if any."""
    return next((s for s, sub in sections(cls).items() if name in options(sub)), None)


# --- values: coercion and checking --------------------------------------------------------


def coerce(value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint``; a ValueError says what was expected.

    Strings (a flag, ``--set``) become numbers and booleans; a comma-separated string or a
    list becomes a tuple; a ``Literal`` admits its values only.
    """
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(value, inner)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"must be one of {', '.join(map(str, args))}, not {value!r}")
        return value
    if origin is tuple:
        items: list[Any] = []
        for item in value if isinstance(value, list | tuple) else [value]:
            items += [p.strip() for p in item.split(",") if p.strip()] if isinstance(item, str) else [item]
        kinds = [args[0]] * len(items) if args[-1] is Ellipsis else list(args)
        if len(kinds) != len(items):
            raise ValueError(f"expected {len(kinds)} values, got {len(items)}")
        return tuple(coerce(i, k) for i, k in zip(items, kinds, strict=True))
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if hint in (int, float) and not isinstance(value, bool):
        try:
            number = hint(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if hint is int and isinstance(number, int):
            return number
        if hint is float and isinstance(number, int | float):
            return float(number)
    if hint is str and isinstance(value, str):
        return value
    expected = {int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))
    raise ValueError(f"expected {expected}, got {value!r}")


def _checked(value: Any, hint: Any, f: dataclasses.Field) -> Any:
    value = coerce(value, hint)
    low, high, above = f.metadata.get("low"), f.metadata.get("high"), f.metadata.get("above")
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"must be a finite number, got {v!r}")
        if v is not None and above is not None and v <= above:
            raise ValueError(f"must be more than {above}, got {v!r}")
        if v is not None and low is not None and v < low:
            raise ValueError(f"must be at least {low}, got {v!r}")
        if v is not None and high is not None and v > high:
            raise ValueError(f"must be at most {high}, got {v!r}")
    return value


def _read(cls: type, values: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """One layer of option values for ``cls``, checked and coerced, nested by section.

    ``where`` says where the values come from, for the errors: ``"FILE: [train]"``,
    ``"--set"``, or ``""`` for flags (an option is then named by its flag).
    """
    opts, subs, hints = options(cls), sections(cls), get_type_hints(cls)
    out: dict[str, Any] = {}
    unknown = []
    for raw, value in values.items():
        name = raw.replace("-", "_")
        head, dot, rest = name.partition(".")
        if head in subs and (dot or isinstance(value, Mapping)):
            inner = {rest: value} if dot else value
            out.setdefault(head, {}).update(_read(subs[head], inner, where, f"{prefix}{head}."))
        elif not dot and name in opts and name not in subs:
            try:
                out[name] = _checked(value, hints[name], opts[name])
            except ValueError as exc:
                label = flag(name, opts[name]) if not where else f"{where} {prefix}{name}"
                raise ConfigError(f"{label}: {exc}") from None
        elif not dot and (owner := _owner(cls, name)) is not None:
            out.setdefault(owner, {}).update(_read(subs[owner], {name: value}, where, f"{prefix}{owner}."))
        else:
            unknown.append(prefix + name)
    if unknown:
        names = [prefix + n for n in options(cls)] + [f"{prefix}{s}.{n}" for s, sub in subs.items() for n in options(sub)]
        close = {m for u in unknown for m in difflib.get_close_matches(u, names, n=1)}
        hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
        stage = next((s for s, c in SECTIONS.items() if c is cls), prefix.rstrip("."))
        raise ConfigError(f"{where + ': ' if where else ''}unknown {stage} option(s): {', '.join(unknown)}{hint}")
    return out


def resolve_with_origins(cls: type[T], layers: Iterable[tuple[str, Mapping[str, Any]]]) -> tuple[T, dict[str, str]]:
    """``cls`` with its defaults overlaid by each (where, values) layer, lowest first, and
    where each given option's value came from (option path -> the layer's ``where``)."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for where, values in layers:
        for name, value in _read(cls, values, where).items():
            merged[name] = {**merged.get(name, {}), **value} if isinstance(value, dict) else value
            origins.update({f"{name}.{k}": where for k in value} if isinstance(value, dict) else {name: where})
    own = {n: v for n, v in merged.items() if n not in sections(cls)}
    nested = {n: dataclasses.replace(f.default_factory(), **merged.get(n, {}))
              for n, f in options(cls).items() if f.metadata.get("section")}
    return cls(**own, **nested), origins


def resolve(cls: type[T], layers: Iterable[tuple[str, Mapping[str, Any]]]) -> T:
    """``cls`` with its defaults overlaid by each (where, values) layer, lowest first."""
    return resolve_with_origins(cls, layers)[0]


def origin_label(cls: type, path: str, where: str) -> str:
    """How an error names option ``path`` given in layer ``where``: its flag (a flag on the
    command line), ``--set name``, or ``FILE: [section] name``."""
    name = path.rsplit(".", 1)[-1]
    if not where:
        return next(flag(name, f) for p, f, _ in declared(cls) if p == path)
    return f"{where} {name}" if where != "--set" else f"--set {name}"


# --- the stages' configs ------------------------------------------------------------------


def load_toml(path: Path | None) -> dict[str, Any]:
    """Read a config file; a missing or malformed file or an unknown section is one line."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        toml = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    unknown = [s for s in toml if s not in SECTIONS or not isinstance(toml[s], dict)]
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    return toml


def parse_set(items: Iterable[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, values read as TOML literals (numbers, booleans, lists) or
    else as strings; their types are checked when they meet their option."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        k, v = (s.strip() for s in item.split("=", 1))
        try:
            out[k] = tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            out[k] = v
    return out


def check_model(model: ModelConfig, origins: Mapping[str, str] | None = None) -> None:
    """The model library's own checks, before any data exists: two stand-in modalities
    fill the data-derived field. A ModelConfigError becomes a ConfigError of one line that
    names where the values it is about were given (``origins``: from :func:`resolve_with_origins`)."""
    stand_in = (ModalitySpec("a", "sequence", 1), ModalitySpec("b", "sequence", 1))
    try:
        dataclasses.replace(model, modalities=stand_in).validate()
    except ModelConfigError as exc:
        given = [origin_label(TrainConfig, f"model.{f}", origins[f"model.{f}"])
                 for f in exc.fields if f"model.{f}" in (origins or {})]
        message = str(exc)
        if len(exc.fields) == 1 and message.startswith(f"{exc.fields[0]}: "):
            message = message[len(exc.fields[0]) + 2:]
        raise ConfigError(f"{', '.join(given)}: {message}" if given else str(exc)) from None


def check_schedule(cfg: TrainConfig, origins: Mapping[str, str]) -> None:
    """Warmup epochs the user gave must leave an epoch to decay in; a recipe's warmup is cut
    to ``epochs - 1`` instead (so ``--epochs 2`` on a task whose recipe warms up for 2 works)."""
    where = origins.get("warmup_epochs", "")
    given = "warmup_epochs" in origins and not where.startswith("clcr_cli/configs/")
    if cfg.scheduler == "warmup-cosine" and given and cfg.warmup_epochs >= cfg.epochs:
        raise ConfigError(f"{origin_label(TrainConfig, 'warmup_epochs', where)} {cfg.warmup_epochs}: must be at "
                          f"most epochs - 1 = {cfg.epochs - 1} (the rest of the run decays)")


RECIPES = importlib.resources.files("clcr_cli") / "configs"  # one TOML file per task
DEFAULT_RECIPE = "default"  # the recipe of a task without a file of its own


def recipe_layers(task: str, stage: str, named: str | None = None) -> list[tuple[str, Mapping[str, Any]]]:
    """The ``[stage]`` sections of the recipe of ``task``, as config layers, lowest first:
    ``configs/<task>.toml`` (``default.toml`` when there is none) after every recipe it
    ``extends``. Each layer is named by its file, so an error says where a value came from.
    ``named``: a recipe the user chose (``--recipe``), which must exist."""
    known = {p.name.removesuffix(".toml") for p in RECIPES.iterdir() if p.name.endswith(".toml")}
    if named is not None and named not in known:
        raise ConfigError(f"--recipe {named}: no such recipe; the recipes are {', '.join(sorted(known))}")
    name, chain = task if task in known else DEFAULT_RECIPE, []
    while name is not None:
        if name not in known or name in [n for n, _ in chain]:
            raise ConfigError(f"clcr_cli/configs/{chain[-1][0]}.toml: extends {name!r}, which is not a recipe "
                              "(or extends itself)")
        recipe = tomllib.loads((RECIPES / f"{name}.toml").read_text())
        unknown = sorted(set(recipe) - {"extends", *SECTIONS})
        if unknown:
            raise ConfigError(f"clcr_cli/configs/{name}.toml: unknown section(s) {', '.join(unknown)}")
        chain.append((name, recipe))
        name = recipe.get("extends")
    return [(f"clcr_cli/configs/{n}.toml: [{stage}]", recipe.get(stage, {})) for n, recipe in reversed(chain)]


def stage_config(
    name: str,
    toml: Mapping[str, Any] | None = None,
    cli: Mapping[str, Any] | None = None,
    source: str = "config",
    sets: Mapping[str, Any] | None = None,
) -> Any:
    """The options of stage ``name`` from the file's ``[name]`` section, ``sets`` (``--set``)
    and ``cli`` (flags), over the task's recipe (extract and train) and the declared ones."""
    cls = SECTIONS[name]
    layers = [(f"{source}: [{name}]", (toml or {}).get(name, {})), ("--set", sets or {}), ("", cli or {})]
    if cls in (ExtractConfig, TrainConfig):
        cfg = resolve(cls, layers)
        layers = recipe_layers(cfg.recipe or (cfg.dataset if cls is ExtractConfig else cfg.task), name, cfg.recipe) + layers
    cfg, origins = resolve_with_origins(cls, layers)
    if cls is TrainConfig:
        check_model(cfg.model, origins)
        check_schedule(cfg, origins)
    return cfg


Values = Mapping[str, Any]


def extract_config(
    toml: Values | None = None, cli: Values | None = None, source: str = "config", sets: Values | None = None
) -> ExtractConfig:
    """The extract options (see :func:`stage_config`)."""
    return stage_config("extract", toml, cli, source, sets)


def train_config(
    toml: Values | None = None, cli: Values | None = None, source: str = "config", sets: Values | None = None
) -> TrainConfig:
    """The train options, the model's included (see :func:`stage_config`)."""
    return stage_config("train", toml, cli, source, sets)


def command_configs(
    config: Path | None, given: Mapping[str, Mapping[str, Any]], sets: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every config one command reads: each section of ``given`` (the flags by section,
    ``sets`` going to the first), and for a command that trains, ``"extract"``: the
    extraction pinned by the file's ``[extract]``, or None (the task's latest is used)."""
    toml, source = load_toml(config), str(config)
    first = next(iter(given))
    out = {s: stage_config(s, toml, cli, source, sets if s == first else None) for s, cli in given.items()}
    if "train" in out:
        out["extract"] = extract_config(toml, {"dataset": out["train"].task}, source) if "extract" in toml else None
    return out


# --- options as data: keys and the status listing -----------------------------------------


def option_values(cfg: Any, keyed_only: bool = False) -> dict[str, Any]:
    """Every option of ``cfg`` by its bare name, a section's options included (names are
    unique within a stage); with ``keyed_only``, those that are part of the cache key.
    An option declared ``key=UNLESS_DEFAULT`` is left out while it has its default value
    (or the value its ``unless`` metadata names: the one of outputs made before a default
    changed)."""
    out: dict[str, Any] = {}
    for name, f in options(type(cfg)).items():
        value = getattr(cfg, name)
        key = f.metadata.get("key", True)
        if f.metadata.get("section"):
            out.update(option_values(value, keyed_only))
        elif key == UNLESS_DEFAULT and value == f.metadata.get("unless", f.default):
            continue
        elif key or not keyed_only:
            out[name] = value
    return out


def key_options(cfg: Any) -> dict[str, Any]:
    """The options of ``cfg`` that change a stage's result: what its cache key holds."""
    return option_values(cfg, keyed_only=True)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out


def _defaults(stage: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The options ``stage`` uses when given none, for the dataset or task of ``params``."""
    if stage == "extract":
        return option_values(extract_config({}, {"dataset": params.get("dataset", ExtractConfig.dataset)}))
    if stage == "train":
        return option_values(train_config({}, {"task": params.get("task", TrainConfig.task)}))
    if stage in ("ablate", "noise"):
        return {"base": _defaults("train", params.get("base", {})), stage: option_values(SECTIONS[stage]())}
    return option_values(SECTIONS[stage]()) if stage in SECTIONS else {}


def non_default_options(stage: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a cached output (its ``params``) that differ from what the stage uses
    when given none, for its dataset or task (for ``clcr status``)."""
    flat, base = _flatten(params), _flatten(_defaults(stage, params))
    return {k: v for k, v in flat.items() if k not in base or base[k] != v}


# --- the effective options as TOML (clcr config) ------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _toml_section(cfg: Any, title: str) -> list[str]:
    lines = [f"[{title}]"]
    subsections = []
    for name, f in options(type(cfg)).items():
        value = getattr(cfg, name)
        if f.metadata.get("section"):
            subsections += ["", *_toml_section(value, f"{title}.{name}")]
            continue
        help_text = f.metadata["help"].replace("\n", " ")
        line = f"# {name} = (unset)" if value is None else f"{name} = {_toml_value(value)}"
        lines.append(f"{line:<40} # {help_text}")
    return lines + subsections


def effective_toml(configs: Mapping[str, Any], header: str = "") -> str:
    """``configs`` (section -> a stage's options) as a TOML file that ``--config`` reads
    back to the same options: every option with its value and help (unset ones commented)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for title, cfg in configs.items():
        lines += ["", *_toml_section(cfg, title)]
    return "\n".join(lines).lstrip("\n") + "\n"
