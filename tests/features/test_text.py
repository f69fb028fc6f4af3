"""BERT levels: stored levels equal transformers' own hidden states, padding is zero."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features import text as text_module
from clcr_cli.features.text import (
    EmptyTextError,
    TextLevelEncoder,
    clip_text,
    default_layers,
    read_text_file,
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


def test_text_file_drops_bom_and_outer_whitespace(tmp_path) -> None:
    (tmp_path / "note.txt").write_bytes(b"\xef\xbb\xbf  caf\xc3\xa9 au lait\r\n")
    assert read_text_file(tmp_path / "note.txt") == "café au lait"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"caf\xe9 noir", "not UTF-8 text (invalid continuation byte at byte 3)"),
        (b"  \n\t ", "empty text"),
    ],
)
def test_bad_text_file_is_a_data_error_naming_it(tmp_path, content, problem) -> None:
    path = tmp_path / "note.txt"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_text_file(path)
    assert str(err.value) == f"{path}: {problem}"


def test_text_file_read_stops_at_max_text_chars(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(text_module, "MAX_TEXT_CHARS", 10)
    path = tmp_path / "long.txt"  # the byte limit (40) falls inside a 2-byte character
    path.write_bytes(("a" + "é" * 50).encode() + b"\xff never read")
    assert read_text_file(path) == "a" + "é" * 9
    with pytest.raises(DataError) as err:
        read_text_file(tmp_path)  # a folder
    assert str(err.value) == f"{tmp_path}: cannot read text (Is a directory)"


def words(n: int, seed: int) -> str:
    """``n`` words of ordinary, odd and very long kinds, with irregular spacing."""
    rng = np.random.default_rng(seed)
    kinds = [
        "sound",
        "louder,",
        "Übermaß",
        "x" * 150,
        "tick-tock!",
        "日本語",
        "12.5%",
        "\u00e9t\u00e9",
    ]
    spaces = [" ", "  ", "\n", " \t "]
    return "".join(
        kinds[rng.integers(len(kinds))] + spaces[rng.integers(len(spaces))] for _ in range(n)
    )


@pytest.mark.parametrize(
    "text",
    [words(3000, 0), words(3000, 1), " " * 5000 + words(200, 2), "x" * 3000 + " " + words(100, 3)],
)
def test_clip_keeps_every_token_that_max_len_keeps(encoder: TextLevelEncoder, text: str) -> None:
    clipped = encoder.clip(text)
    assert len(clipped) < len(text)

    def ids(t: str) -> list[int]:
        return encoder.tokenizer(t, truncation=True, max_length=encoder.max_len)["input_ids"]

    assert ids(clipped) == ids(text)


def test_long_text_is_cut_before_tokenising(encoder: TextLevelEncoder, monkeypatch) -> None:
    tokenizer, longest = encoder.tokenizer, []

    def spy(texts: str | list[str], **kwargs: object) -> object:
        longest.append(max(map(len, [texts] if isinstance(texts, str) else texts)))
        return tokenizer(texts, **kwargs)

    monkeypatch.setattr(encoder, "tokenizer", spy)
    huge = "the noise grew louder " * 2_500_000  # 55 MB of text
    levels, lengths = encoder.encode([huge, "Short."])
    assert max(longest) <= 8 * encoder.max_len and lengths[0] == encoder.max_len
    np.testing.assert_array_equal(levels, encoder.encode([huge[:1000], "Short."])[0])


def test_clip_without_spaces_stops_at_max_text_chars(monkeypatch) -> None:
    monkeypatch.setattr(text_module, "MAX_TEXT_CHARS", 1000)

    def no_counting(text: str) -> int:
        raise AssertionError("a prefix without a space boundary cannot be checked")

    assert clip_text("x" * 5000, 16, no_counting) == "x" * 1000
    assert clip_text("short text", 16, no_counting) == "short text"
