"""BERT levels: stored levels equal transformers' own hidden states, padding is zero."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from clcr_cli.errors import ConfigError
from clcr_cli.features.text import (
    EmptyTextError,
    TextLevelEncoder,
    default_layers,
    resolve_text_model,
)

TEXTS = [
    "A click, then a thud.",
    "Short.",
    "The noise grew louder and louder, then softer, then louder again until the very end of the day.",
]


@pytest.fixture(scope="module")
def encoder() -> TextLevelEncoder:
    return TextLevelEncoder(max_len=16, batch_size=2)


def test_default_layers_are_evenly_spaced() -> None:
    assert default_layers(6) == (2, 4, 6)
    assert default_layers(12) == (4, 8, 12)
    assert default_layers(12, 4) == (3, 6, 9, 12)
    with pytest.raises(ConfigError):
        default_layers(2, 3)


def test_levels_match_independent_transformers_forward(encoder: TextLevelEncoder) -> None:
    levels, lengths = encoder.encode(TEXTS)
    assert levels.shape == (3, 3, 16, 384) and levels.dtype == np.float32
    assert encoder.layers == (2, 4, 6)

    path = resolve_text_model("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    for i, text in enumerate(TEXTS):
        ids = tokenizer(text, truncation=True, max_length=16, return_tensors="pt")
        n = ids["input_ids"].shape[1]
        assert lengths[i] == n
        with torch.inference_mode():
            hidden = model(**ids, output_hidden_states=True).hidden_states
        for level, layer in enumerate((2, 4, 6)):
            np.testing.assert_allclose(levels[i, level, :n], hidden[layer][0].numpy(), atol=1e-5)
        assert not levels[i, :, n:].any(), "padding positions must be zero"
    assert lengths[2] == 16, "long text is truncated to max_len"


def test_empty_text_names_its_index(encoder: TextLevelEncoder) -> None:
    with pytest.raises(EmptyTextError, match="#1"):
        encoder.encode(["fine", "   "])


def test_info_describes_the_encoder(encoder: TextLevelEncoder) -> None:
    info = encoder.info
    assert info["hidden_size"] == 384 and info["num_hidden_layers"] == 6
    assert info["layers"] == [2, 4, 6] and info["max_len"] == 16


@pytest.mark.parametrize("layers", [(0, 7), (4, 2), ()])
def test_bad_layers_are_refused(layers: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="layers"):
        TextLevelEncoder(layers=layers)


def test_resolve_accepts_local_folder_and_refuses_unknown(tmp_path) -> None:
    minilm = resolve_text_model("minilm")
    assert (minilm / "config.json").is_file()
    assert resolve_text_model(str(minilm)) == minilm
    with pytest.raises(ConfigError, match="never downloads"):
        resolve_text_model("no-such-org/no-such-model-xyz")
    with pytest.raises(ConfigError, match="neither a local folder"):
        resolve_text_model(str(tmp_path))  # a folder without config.json


def test_cached_hub_id_resolves_without_network(tmp_path, monkeypatch) -> None:
    """A hub id present in the HF cache layout resolves to its snapshot folder."""
    import huggingface_hub.constants as hub_constants

    snapshot = tmp_path / "models--acme--tiny-bert" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    refs = tmp_path / "models--acme--tiny-bert" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve_text_model("acme/tiny-bert") == snapshot
