"""A Hugging Face BERT folder read into :class:`~clcr_cli.model.bert.BertModel`.

    config, state = load_bert_folder(Path(folder))   # config.json + model.safetensors / .bin
    model = BertModel(config)
    load_bert_weights(model, folder)                  # adapt_hf_state_dict + strict load

The folder is what ``save_pretrained`` writes (or a Hub snapshot): ``config.json`` and
``model.safetensors`` (read by ``safetensors.torch.load_file``), else
``pytorch_model.bin`` (``torch.load(..., weights_only=True)``: tensors and plain
containers only, no code a pickle names). Sharded checkpoints (``*.index.json``) are not
read. Every failure is a :class:`~clcr_cli.errors.DataError` naming the file (or the
folder) and the problem, on one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from clcr_cli.errors import DataError
from clcr_cli.model.bert import BertConfig, BertModel, adapt_hf_state_dict
from clcr_cli.model.errors import ModelConfigError
from clcr_cli.training.pretrained import _one_line, _read, unwrap_state_dict

CONFIG_FILE = "config.json"
WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
"""The weight files looked for, in this order: the first present is read."""


def _one(text: str) -> str:
    return " ".join(str(text).split())


def read_bert_config(folder: Path) -> BertConfig:
    """``folder/config.json`` as a :class:`BertConfig` (a DataError naming the file)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise DataError(path, "no such file (a BERT folder holds config.json)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(path, f"cannot read the config ({exc.strerror or _one_line(exc)})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not a JSON file ({_one_line(exc)})") from exc
    try:
        return BertConfig.from_hf(raw)
    except ModelConfigError as exc:
        raise DataError(path, _one(exc)) from exc
    except TypeError as exc:  # a value of an odd type compared with a bound
        raise DataError(path, f"not a BERT config ({_one_line(exc)})") from exc


def weights_file(folder: Path) -> Path:
    """The folder's weight file: ``model.safetensors``, else ``pytorch_model.bin``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such BERT folder")
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    if any(folder.glob("*.index.json")):
        raise DataError(folder, "sharded BERT checkpoints (*.index.json) are not supported")
    raise DataError(folder, f"no weights file (looked for {' and '.join(WEIGHT_FILES)})")


def load_bert_folder(folder: Path) -> tuple[BertConfig, dict[str, Tensor]]:
    """The config and the raw state dict (HF's key names, on the CPU) of a BERT folder."""
    folder = Path(folder)
    path = weights_file(folder)
    config = read_bert_config(folder)
    state = unwrap_state_dict(_read(path), path)
    return config, state


def load_bert_weights(model: BertModel, folder: Path) -> BertConfig:
    """Load the folder's weights into ``model`` strictly, after
    :func:`~clcr_cli.model.bert.adapt_hf_state_dict`; return the folder's config.

    The folder's config must build the model's architecture (every size field equal; the
    dropout probabilities may differ: they are the model's to choose). A DataError (one
    line) otherwise, or for a key or shape that does not fit; ``model`` is unchanged then.
    """
    folder = Path(folder)
    config, state = load_bert_folder(folder)
    path = weights_file(folder)
    ours = model.config
    for name in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "intermediate_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
    ):
        if getattr(config, name) != getattr(ours, name):
            raise DataError(
                folder / CONFIG_FILE,
                f"{name} is {getattr(config, name)!r}, the model was built with {getattr(ours, name)!r}",
            )
    try:
        adapted = adapt_hf_state_dict(state, model)
    except ModelConfigError as exc:
        raise DataError(path, _one(exc)) from exc
    try:
        model.load_state_dict(adapted, strict=True)
    except RuntimeError as exc:  # adapt checked keys and shapes: should not happen
        raise DataError(path, f"the model refused the weights ({_one_line(exc)})") from exc
    return config
