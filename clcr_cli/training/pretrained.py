"""Pretrained encoder weights from a local file: a state dict, read safely, loaded strictly.

    load_encoder_weights(Path("resnet18-f37072fd.pth"), resnet18(in_channels=1, num_classes=None))

``.safetensors`` files are read by ``safetensors.torch.load_file``; ``.pth``, ``.pt`` and
``.bin`` files by ``torch.load(..., weights_only=True)``, which rebuilds tensors and plain
containers only and never runs code that a pickle names. The state dict may be wrapped the
usual ways (under ``"state_dict"`` or ``"model"``, keys prefixed ``"module."`` by
``DataParallel`` / DDP). :func:`clcr_cli.model.resnet.adapt_state_dict` then fits it to the
model (first-conv channels, a dropped classifier) and the model loads it strictly. Every
failure is a :class:`~clcr_cli.errors.DataError` naming the file and the problem, on one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clcr_cli.errors import DataError
from clcr_cli.model.errors import ModelConfigError
from clcr_cli.model.resnet import adapt_state_dict

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
WRAPPER_KEYS = ("state_dict", "model")
"""Keys under which training scripts commonly nest the state dict, in the order tried."""
PARALLEL_PREFIX = "module."


def _one_line(exc: BaseException) -> str:
    """``exc`` as one short line; torch's weights-only refusal cut to its actual reason
    (its advice on ``weights_only=False`` dropped: that would run the file's code)."""
    text = str(exc)
    if text.startswith("Weights only load failed"):
        boilerplate = ("Weights only load failed", "(1)", "(2)", "Check the documentation")
        reasons = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith(boilerplate):
                continue
            line = line.split("WeightsUnpickler error:", 1)[-1]
            reasons.append(line.split("Please use", 1)[0].split("Please file", 1)[0])
        text = " ".join(reasons) or "refused by the weights-only loader"
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read(path: Path) -> Any:
    """The object stored in ``path``, by its suffix; a DataError when it cannot be read."""
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        known = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
        raise DataError(path, f"unknown weights format {path.suffix!r} (expected one of {known})")
    if not path.is_file():
        raise DataError(path, "no such weights file")
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise DataError(
            path, f"cannot read the weights file ({exc.strerror or _one_line(exc)})"
        ) from exc
    except Exception as exc:  # a corrupt file raises anything from EOFError to SafetensorError
        kind = "safetensors" if suffix in SAFETENSORS_SUFFIXES else "weights-only torch"
        raise DataError(path, f"not a readable {kind} file ({_one_line(exc)})") from exc


def _describe(obj: Any) -> str:
    """What ``obj`` is, in a few words, for an error message."""
    if isinstance(obj, dict):
        bad = next(
            ((k, v) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)),
            None,
        )
        if bad is None:
            return "an empty dict"
        return f"a dict whose entry {bad[0]!r} is a {type(bad[1]).__name__}, not a tensor"
    return f"a {type(obj).__name__}"


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def unwrap_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """The state dict inside what a checkpoint file held: ``obj`` itself, or the dict under
    ``"state_dict"`` / ``"model"`` (nested wrappers too), with a ``"module."`` prefix that
    every key carries removed. A DataError (``path``, one line) when there is none."""
    seen = obj
    for _ in range(3):  # {"model": {"state_dict": ...}} at worst
        if _is_state_dict(seen) or not isinstance(seen, dict):
            break
        inner = next((seen[k] for k in WRAPPER_KEYS if isinstance(seen.get(k), dict)), None)
        if inner is None:
            break
        seen = inner
    if not _is_state_dict(seen):
        raise DataError(path, f"not a state dict of tensors: the file holds {_describe(seen)}")
    state = dict(seen)
    if all(k.startswith(PARALLEL_PREFIX) for k in state):
        state = {k[len(PARALLEL_PREFIX) :]: v for k, v in state.items()}
    return state


def load_encoder_weights(path: Path, model: nn.Module) -> None:
    """Load the state dict stored in ``path`` into ``model``, strictly, after
    :func:`~clcr_cli.model.resnet.adapt_state_dict` (a 3-channel first conv adapted to the
    model's input channels, ``fc.*`` dropped from an encoder).

    Raises :class:`~clcr_cli.errors.DataError` (``path``, a one-line problem) for a missing
    or unreadable file, content that is not a state dict, or a key or shape that does not
    fit the model; ``model`` is not modified when any of these checks fails.
    """
    path = Path(path)
    state = unwrap_state_dict(_read(path), path)
    try:
        adapted = adapt_state_dict(state, model)
    except ModelConfigError as exc:
        raise DataError(path, " ".join(str(exc).split())) from exc
    try:
        model.load_state_dict(adapted, strict=True)
    except RuntimeError as exc:  # adapt_state_dict checked keys and shapes: should not happen
        raise DataError(path, f"the model refused the weights ({_one_line(exc)})") from exc


def weight_files(spec: str | None) -> dict[str, Path]:
    """``--encoder-weights``: one PATH for every resnet18 encoder (key ``"*"``), or
    ``modality=PATH,...``."""
    if not spec:
        return {}
    if "=" not in spec:
        return {"*": Path(spec).expanduser()}
    return {m.strip(): Path(p.strip()).expanduser() for m, p in (part.split("=", 1) for part in spec.split(",") if part)}


def weights_digest(spec: str | None) -> dict[str, str]:
    """The sha256 of every file ``spec`` names, by its modality (or ``"*"``): what the train
    key holds of the weights, so that another file at the same path is another run."""
    from clcr_cli.cache import sha256_file

    out = {}
    for modality, path in weight_files(spec).items():
        if not path.is_file():
            raise DataError(path, "no such file (--encoder-weights)")
        out[modality] = sha256_file(path)
    return out


def load_pretrained(model: nn.Module, spec: str | None) -> None:
    """Load ``--encoder-weights`` into the model's ResNet18 trunks (``model.stems``); a file
    for a modality without one, or a spec for a model without any, is a DataError."""
    from clcr_cli.model.stems import resnet_trunks

    files = weight_files(spec)
    if not files:
        return
    trunks = resnet_trunks(model)
    if not trunks:
        raise DataError(next(iter(files.values())), "--encoder-weights given, but the model has no resnet18 "
                                                    "encoder (--encoder resnet18)")
    for modality, path in files.items():
        if modality != "*" and modality not in trunks:
            raise DataError(path, f"--encoder-weights {modality}=...: the model has no resnet18 encoder for "
                                  f"{modality!r} (it has: {', '.join(trunks)})")
    for modality, trunk in trunks.items():
        path = files.get(modality, files.get("*"))
        if path is not None:
            load_encoder_weights(path, trunk)
