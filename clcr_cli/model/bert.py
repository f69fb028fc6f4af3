"""BERT with Hugging Face's ``BertModel`` parameter names, shapes and initialisation.

CMU-MOSI's peers (DLF, EMOE) fine-tune ``bert-base-uncased`` inside the model; CLCR takes
its early / mid / late hidden states as the three text levels. ``model/`` imports only
torch, so the encoder is written out here, module for module as ``transformers`` builds
``BertModel``: a Hugging Face checkpoint (``bert-base-uncased``, MiniLM, ...) loads into
:class:`BertModel` by name, strictly.

    config = BertConfig.from_hf(json.loads(Path(folder, "config.json").read_text()))
    model = BertModel(config)
    model.load_state_dict(adapt_hf_state_dict(hf_state, model), strict=True)
    states = model(input_ids, attention_mask)   # num_hidden_layers + 1 tensors (B, T, H)

``states[0]`` is the embeddings' output and ``states[i]`` the output of layer ``i``, as
``transformers``' ``output_hidden_states=True`` gives them. Attention runs through
``torch.nn.functional.scaled_dot_product_attention``; dropout is HF's (embeddings,
attention probabilities, both residual branches), active in train mode only.
:func:`adapt_hf_state_dict` fits a checkpoint to a model: it strips a ``bert.`` prefix,
renames TF-era ``LayerNorm.gamma`` / ``beta``, drops the pretraining heads (``cls.``),
the pooler (when the model has none) and the ``position_ids`` / ``token_type_ids``
buffers, and names the first key that does not fit. No I/O: reading a folder is
``clcr_cli.training.text_weights``'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from clcr_cli.model.errors import ModelConfigError

HEAD_PREFIXES: tuple[str, ...] = ("cls.",)
"""Prefixes of the pretraining heads (MLM, NSP) of ``BertForPreTraining``: always dropped."""
POOLER_PREFIX = "pooler."
"""Prefix of the pooler's keys, dropped when the model has no pooler."""
BUFFER_KEYS: tuple[str, ...] = ("embeddings.position_ids", "embeddings.token_type_ids")
"""Buffers older checkpoints saved (``arange`` / zeros): never weights, always dropped."""
MODEL_PREFIX = "bert."
"""Prefix of the encoder's keys in a ``BertFor*`` checkpoint."""
HIDDEN_ACT = "gelu"
"""The one activation supported: exact (erf) GELU, ``hidden_act: "gelu"`` in config.json."""

# (field, lowest, highest) of every integer size, inclusive: far above any published BERT.
_INT_BOUNDS: tuple[tuple[str, int, int], ...] = (
    ("vocab_size", 1, 1_000_000),
    ("hidden_size", 1, 16_384),
    ("num_hidden_layers", 1, 128),
    ("num_attention_heads", 1, 256),
    ("intermediate_size", 1, 65_536),
    ("max_position_embeddings", 1, 65_536),
    ("type_vocab_size", 1, 1_024),
)


@dataclass(frozen=True)
class BertConfig:
    """What :class:`BertModel` is built from; the defaults are ``bert-base-uncased``'s (and
    ``transformers.BertConfig``'s)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = HIDDEN_ACT
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int | None = 0
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for name, low, high in _INT_BOUNDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ModelConfigError(
                    f"BERT {name} must be an int in [{low}, {high}], got {value!r}", (name,)
                )
        if self.hidden_size % self.num_attention_heads:
            raise ModelConfigError(
                f"BERT hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}",
                ("hidden_size", "num_attention_heads"),
            )
        if not _is_real(self.layer_norm_eps) or not 0 < self.layer_norm_eps <= 0.1:
            raise ModelConfigError(
                f"BERT layer_norm_eps must be in (0, 0.1], got {self.layer_norm_eps!r}",
                ("layer_norm_eps",),
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not _is_real(value) or not 0 <= value < 1:
                raise ModelConfigError(f"BERT {name} must be in [0, 1), got {value!r}", (name,))
        if not _is_real(self.initializer_range) or not 0 < self.initializer_range <= 1:
            raise ModelConfigError(
                f"BERT initializer_range must be in (0, 1], got {self.initializer_range!r}",
                ("initializer_range",),
            )
        if self.hidden_act != HIDDEN_ACT:
            raise ModelConfigError(
                f"BERT hidden_act {self.hidden_act!r} is not supported (only {HIDDEN_ACT!r}, "
                "the exact erf GELU)",
                ("hidden_act",),
            )
        pad = self.pad_token_id
        if pad is not None and (
            isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < self.vocab_size
        ):
            raise ModelConfigError(
                f"BERT pad_token_id must be None or an int in [0, {self.vocab_size}), got {pad!r}",
                ("pad_token_id",),
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> BertConfig:
        """The config of a Hugging Face ``config.json`` (its parsed dict).

        Reads the dataclass's fields by their HF names (a missing key takes HF's default,
        as ``transformers`` does); other keys are ignored, except those that would make
        ``BertModel`` compute something else: ``model_type`` must be ``"bert"`` (RoBERTa
        offsets its positions, DistilBERT names its keys otherwise),
        ``position_embedding_type`` ``"absolute"``, ``is_decoder`` and
        ``add_cross_attention`` false. A ModelConfigError of one line otherwise.
        """
        if not isinstance(config, Mapping):
            raise ModelConfigError(f"a BERT config is a JSON object, got a {type(config).__name__}")
        model_type = config.get("model_type", "bert")
        if model_type != "bert":
            raise ModelConfigError(f"BERT config has model_type {model_type!r}, not 'bert'")
        position = config.get("position_embedding_type", "absolute")
        if position != "absolute":
            raise ModelConfigError(
                f"BERT position_embedding_type {position!r} is not supported (only 'absolute')"
            )
        for flag in ("is_decoder", "add_cross_attention"):
            if config.get(flag, False):
                raise ModelConfigError(f"BERT config has {flag} set: only the encoder is supported")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in known})


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class BertEmbeddings(nn.Module):
    """``LayerNorm(word + position + token_type)``, then dropout; positions ``0 .. T-1``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        t = input_ids.shape[1]
        x = self.word_embeddings(input_ids)
        if token_type_ids is None:  # type 0 everywhere: row 0 of the table, broadcast
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings.weight[:t]
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """``query``, ``key``, ``value`` projections and scaled dot-product attention."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.head_dim
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dropout_prob = config.attention_probs_dropout_prob

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, t, h = x.shape
        shape = (b, t, self.num_attention_heads, self.attention_head_size)
        q = self.query(x).view(shape).transpose(1, 2)
        k = self.key(x).view(shape).transpose(1, 2)
        v = self.value(x).view(shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_prob if self.training else 0.0
        )
        return out.transpose(1, 2).reshape(b, t, h)


class BertSelfOutput(nn.Module):
    """``LayerNorm(dropout(dense(attention)) + input)``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    """``self`` (the attention) then ``output`` (projection, residual, LayerNorm)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    """``gelu(dense(x))``, hidden -> intermediate width; exact (erf) GELU."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class BertOutput(nn.Module):
    """``LayerNorm(dropout(dense(x)) + residual)``, intermediate -> hidden width."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertLayer(nn.Module):
    """One post-LN transformer layer: attention block, then feed-forward block."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    """``layer``: the ``num_hidden_layers`` :class:`BertLayer` s."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    """``tanh(dense(x[:, 0]))``: the [CLS] pooling of ``BertModel``, built on request."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """HF's ``BertModel`` (absolute positions, encoder only), returning every hidden state.

    ``forward(input_ids, attention_mask=None, token_type_ids=None)`` ->
    ``num_hidden_layers + 1`` tensors ``(B, T, hidden_size)``: the embeddings' output,
    then each layer's. ``attention_mask`` ``(B, T)`` (1/True = a token, 0/False =
    padding; ``None`` = no padding) masks keys as HF's additive mask does: a padded key
    gets no weight from any query; a padded query still gets a (meaningless) finite
    output; a sample that is all padding attends over all its positions (finite, never
    NaN; only its values are meaningless). ``token_type_ids`` ``None`` is segment 0
    everywhere, as in HF.

    ``add_pooling_layer`` builds ``pooler`` (HF's default is True; off here, since the
    levels are hidden states): :meth:`pool` applies it, :meth:`forward` never does.
    ``gradient_checkpointing`` (settable at any time) recomputes each layer in the
    backward pass (``torch.utils.checkpoint``, ``use_reentrant=False``, the RNG state
    restored so dropout draws the same masks) whenever autograd records the forward.

    Initialisation is HF's ``_init_weights``: every Linear and Embedding weight
    ``normal(0, initializer_range)``, biases 0, the padding row of ``word_embeddings`` 0,
    LayerNorm weight 1 and bias 0.
    """

    def __init__(
        self,
        config: BertConfig,
        add_pooling_layer: bool = False,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(config, BertConfig):
            raise ModelConfigError(f"BertModel needs a BertConfig, got a {type(config).__name__}")
        self.config = config
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler: BertPooler | None = BertPooler(config) if add_pooling_layer else None
        self.reset_parameters()

    @property
    def num_hidden_states(self) -> int:
        return self.config.num_hidden_layers + 1

    def reset_parameters(self) -> None:
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=std)
                if m.padding_idx is not None:
                    with torch.no_grad():
                        m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _check(self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None) -> None:
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            got = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise ModelConfigError(f"BERT input_ids must be a (B, T) tensor, got {got}")
        if input_ids.dtype not in (torch.long, torch.int32):
            raise ModelConfigError(f"BERT input_ids must be integer token ids, got {input_ids.dtype}")
        t = input_ids.shape[1]
        if not 1 <= t <= self.config.max_position_embeddings:
            raise ModelConfigError(
                f"BERT input of {t} tokens: must be 1 .. max_position_embeddings "
                f"({self.config.max_position_embeddings})"
            )
        for name, x in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if x is not None and (not isinstance(x, Tensor) or x.shape != input_ids.shape):
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ModelConfigError(
                    f"BERT {name} must have the shape of input_ids {tuple(input_ids.shape)}, got {got}"
                )

    @staticmethod
    def key_mask(attention_mask: Tensor | None) -> Tensor | None:
        """``(B, T)`` 1/0 -> the boolean ``(B, 1, 1, T)`` SDPA mask (True = attend). A row
        with no token at all is unmasked, so its softmax is over all keys, not over none
        (what HF's additive ``finfo.min`` amounts to, where SDPA would give NaN)."""
        if attention_mask is None:
            return None
        keep = attention_mask.bool()
        keep = keep | ~keep.any(dim=1, keepdim=True)
        return keep[:, None, None, :]

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        self._check(input_ids, attention_mask, token_type_ids)
        mask = self.key_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        states = [x]
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()
        for layer in self.encoder.layer:
            x = checkpoint(layer, x, mask, use_reentrant=False) if recompute else layer(x, mask)
            states.append(x)
        return tuple(states)

    def pool(self, last_hidden: Tensor) -> Tensor:
        """HF's ``pooler_output``: ``tanh(pooler.dense(last_hidden[:, 0]))``."""
        if self.pooler is None:
            raise ModelConfigError("this BertModel has no pooler (add_pooling_layer=False)")
        return self.pooler(last_hidden)


def _rename_tf_layer_norm(key: str) -> str:
    """``...LayerNorm.gamma`` / ``.beta`` (checkpoints converted from TF, e.g. the original
    ``bert-base-uncased`` files) -> ``.weight`` / ``.bias``, as ``transformers`` renames them."""
    if key.endswith(".gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[: -len("beta")] + "bias"
    return key


def adapt_hf_state_dict(state: Mapping[str, Tensor], model: BertModel) -> dict[str, Tensor]:
    """``state`` (a Hugging Face BERT state dict) fitted to ``model``: a new dict that
    ``model.load_state_dict(..., strict=True)`` accepts, or a :class:`ModelConfigError` of
    one line naming the first key that does not fit.

    * a ``bert.`` prefix (``BertForPreTraining``, ``BertForSequenceClassification``, ...)
      is stripped from the keys that carry it; the keys outside it are the task heads and
      are dropped;
    * ``LayerNorm.gamma`` / ``beta`` are renamed ``weight`` / ``bias``;
    * ``cls.*`` (pretraining heads), ``embeddings.position_ids`` /
      ``embeddings.token_type_ids`` (buffers) and, when the model has no pooler,
      ``pooler.*`` are dropped;
    * then, in the model's key order: the first missing key, else the first unexpected key
      (in ``state``'s order), else the first shape mismatch, is an error.

    ``state`` is not modified; the tensors are shared (dtype untouched: ``load_state_dict``
    copies them into the model's).
    """
    if not isinstance(state, Mapping):
        raise ModelConfigError(f"a state dict is a dict of tensors, got a {type(state).__name__}")
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise ModelConfigError(f"state dict entry {k!r} is a {type(v).__name__}, not a tensor")
    items = list(state.items())
    if any(k.startswith(MODEL_PREFIX) for k, _ in items):
        items = [(k[len(MODEL_PREFIX) :], v) for k, v in items if k.startswith(MODEL_PREFIX)]
    expected = model.state_dict()
    has_pooler = any(k.startswith(POOLER_PREFIX) for k in expected)
    out: dict[str, Tensor] = {}
    for key, value in items:
        key = _rename_tf_layer_norm(key)
        if key in BUFFER_KEYS or key.startswith(HEAD_PREFIXES):
            continue
        if key.startswith(POOLER_PREFIX) and not has_pooler:
            continue
        out[key] = value

    missing = [k for k in expected if k not in out]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelConfigError(f"BERT state dict is missing key {missing[0]!r}{more}")
    unexpected = [k for k in out if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ModelConfigError(f"BERT state dict has unexpected key {unexpected[0]!r}{more}")
    for key, target in expected.items():
        got = out[key]
        if got.shape != target.shape:
            raise ModelConfigError(
                f"BERT state dict key {key!r} has shape {tuple(got.shape)}, "
                f"the model expects {tuple(target.shape)}"
            )
    return {k: out[k] for k in expected}
