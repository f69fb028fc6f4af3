"""The generated tri-modal dataset: determinism, labels, splits, files, atomicity, signal."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest

from clcr_cli.datasets import synth
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.datasets.synth import files, recipe
from clcr_cli.errors import ConfigError
from clcr_cli.features.audio import load_audio
from clcr_cli.features.video import read_frames

N = 40


def read_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "transcripts.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> synth.Dataset:
    return synth.load(DatasetOptions(root=tmp_path_factory.mktemp("raw"), n_samples=N, seed=0))


def test_generation_is_deterministic_per_seed(dataset: synth.Dataset, tmp_path: Path) -> None:
    again = synth.load(DatasetOptions(root=tmp_path / "a", n_samples=N, seed=0))
    assert folder_bytes(again.root) == folder_bytes(dataset.root)
    other = synth.load(DatasetOptions(root=tmp_path / "b", n_samples=N, seed=1))
    assert other.root.name == f"n{N}-seed1-v{recipe.GENERATOR_VERSION}"
    assert read_rows(other.root) != read_rows(dataset.root)
    same_name = "audio/synth00000.wav"
    assert folder_bytes(other.root)[same_name] != folder_bytes(dataset.root)[same_name]


def test_labels_follow_the_latent_factors(dataset: synth.Dataset, tmp_path: Path) -> None:
    rows = read_rows(dataset.root)
    assert [s.id for s in dataset.samples] == [r["id"] for r in rows]
    for sample, row in zip(dataset.samples, rows, strict=True):
        g, m, loc = int(row["global"]), int(row["mid"]), int(row["local"])
        assert sample.label == 4 * g + 2 * m + loc == int(row["label"])
        assert recipe.CLASS_NAMES[int(sample.label)] == row["class_name"]
        assert row["class_name"] == "-".join(
            (
                recipe.FACTOR_NAMES["global"][g],
                recipe.FACTOR_NAMES["mid"][m],
                recipe.FACTOR_NAMES["local"][loc],
            )
        )
        assert sample.text == row["text"]
        mean = 1.5 * (2 * g - 1) + 1.0 * (2 * m - 1) + 0.5 * (2 * loc - 1)
        assert abs(float(row["target"]) - mean) < 1.0  # N(0, 0.2^2) noise: 5 sigma
    regression = synth.load_regression(
        DatasetOptions(root=dataset.root.parent, n_samples=N, seed=0)
    )
    assert regression.info.name == "synth-reg" and regression.info.target == "regression"
    assert regression.root == dataset.root, "both tasks read the same files"
    assert [s.label for s in regression.samples] == [float(r["target"]) for r in rows]
    assert dataset.info.num_classes == 8 and dict(dataset.info.modalities) == {
        "text": "text", "audio": "audio", "video": "video",
    }  # fmt: skip


def test_splits_are_70_15_15_and_seeded(dataset: synth.Dataset) -> None:
    splits = [s.split for s in dataset.samples]
    assert (splits.count("train"), splits.count("valid"), splits.count("test")) == (28, 6, 6)
    big = recipe.assign_splits(240, 0)
    assert (big.count("train"), big.count("valid"), big.count("test")) == (168, 36, 36)
    assert recipe.assign_splits(240, 0) == big != recipe.assign_splits(240, 1)


def test_files_decode_to_the_expected_shapes(dataset: synth.Dataset) -> None:
    for sample in dataset.samples[:3]:
        audio = load_audio(sample.audio)
        assert audio.shape == (int(recipe.CLIP_SECONDS * recipe.SAMPLE_RATE),)
        assert np.abs(audio).max() > 0.05
        frames = read_frames(sample.video, num_frames=16, size=32)
        assert frames.shape == (16, 32, 32, 3)
        raw = recipe.generate_sample(0, int(sample.id.removeprefix("synth"))).frames

        def blocks(x: np.ndarray) -> np.ndarray:  # 4x4-pixel means: mp4v smooths pixel noise
            return x.reshape(16, 8, 4, 8, 4, 3).astype(float).mean(axis=(2, 4))

        assert np.abs(blocks(frames) - blocks(raw)).mean() < 3, "mp4v keeps the frames"


def test_generation_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "raw"
    root.mkdir()
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = root / f".n20-seed0-v{recipe.GENERATOR_VERSION}.tmp-{finished.pid}-deadbeef"
    (dead / "audio").mkdir(parents=True)
    (dead / "transcripts.csv").write_text("half a file")
    running = root / f".n99-seed0-v1.tmp-{__import__('os').getpid()}-0000beef"
    running.mkdir()

    def broken_writer(path: Path, frames: np.ndarray) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files, "write_video", broken_writer)
    with pytest.raises(OSError, match="disk full"):
        synth.load(DatasetOptions(root=root, n_samples=20))
    assert not dead.exists(), "a dead generation's temp folder is cleaned"
    assert running.exists(), "a live generation's temp folder is left alone"
    assert sorted(p.name for p in root.iterdir()) == [running.name], "a failed run leaves nothing"

    monkeypatch.undo()
    dataset = synth.load(DatasetOptions(root=root, n_samples=20))
    assert len(dataset.samples) == 20 and (dataset.root / "generator.json").is_file()


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="root"):
        synth.load(DatasetOptions(root=None))
    with pytest.raises(ConfigError, match="at least"):
        synth.load(DatasetOptions(root=Path("/nonexistent"), n_samples=3))


def test_corruption_rate_and_its_rendering() -> None:
    rng = np.random.default_rng(0)
    latents = [recipe.draw_latent(rng) for _ in range(4000)]
    corrupted = [lat.corrupted for lat in latents if lat.corrupted]
    assert abs(len(corrupted) / len(latents) - recipe.CORRUPTION_RATE) < 0.03
    assert {m for m, _ in corrupted} == set(recipe.MODALITIES) and {
        lv for _, lv in corrupted
    } == set(recipe.LEVELS)
    for lat in latents[:50]:
        for modality in recipe.MODALITIES:
            flipped = {lv for lv in recipe.LEVELS if lat.view(modality)[lv] != lat.factors[lv]}
            assert flipped == (
                {lat.corrupted[1]} if lat.corrupted and lat.corrupted[0] == modality else set()
            )


def test_text_expresses_each_level() -> None:
    """Text: event words carry the local factor, their run the rhythm, the order of the
    quiet and loud sentences the trend -- flipped where the text is corrupted."""
    for index in range(60):
        row = recipe.generate_sample(7, index).row
        view = {lv: int(row[lv]) for lv in recipe.LEVELS}
        if row["corrupted_modality"] == "text":
            view[row["corrupted_level"]] ^= 1
        words = str(row["text"]).replace(".", " ").replace(",", " ").split()
        events = [w for w in words if w in recipe._EVENT_WORDS[0] + recipe._EVENT_WORDS[1]]
        assert events and all(w in recipe._EVENT_WORDS[view["local"]] for w in events)
        assert (len(events) == recipe.TEXT_SLOTS) == bool(view["mid"])
        text = str(row["text"])
        quiet = min(text.find(s) for s in recipe._QUIET if s in text)
        loud = min(text.find(s) for s in recipe._LOUD if s in text)
        assert (quiet < loud) == bool(view["global"])


def test_simple_features_carry_the_factors(dataset: synth.Dataset) -> None:
    """Learnability without a model: the audio loudness slope and the video brightness
    slope give the global factor; whether the object ever turns black gives the local one."""
    rows = read_rows(dataset.root)
    hits = {"audio global": [], "video global": [], "video local": []}
    for sample, row in zip(dataset.samples, rows, strict=True):
        audio = load_audio(sample.audio)
        rms = np.sqrt(np.mean(audio.reshape(20, -1) ** 2, axis=1))
        frames = read_frames(sample.video, num_frames=16, size=32).astype(float)
        x, y = int(row["object_x"]), int(row["object_y"])
        patch = frames[:, y + 2 : y + 6, x + 2 : x + 6].mean(axis=(1, 2, 3))
        observed = {
            "audio global": np.polyfit(np.arange(20), rms, 1)[0] > 0,
            "video global": np.polyfit(np.arange(16), frames.mean(axis=(1, 2, 3)), 1)[0] > 0,
            "video local": patch.min() > 12,  # a dark (thud) flash is black whatever the gain
        }
        for key, value in observed.items():
            modality, level = key.split()
            if (row["corrupted_modality"], row["corrupted_level"]) != (modality, level):
                hits[key].append(value == bool(int(row[level])))
    accuracy = {key: float(np.mean(values)) for key, values in hits.items()}
    assert min(accuracy.values()) > 0.8, accuracy


def test_every_text_fits_the_token_budget() -> None:
    """The longest possible text (longest choice of every part) fits TEXT_MAX_TOKENS
    MiniLM tokens, so truncation can never cut off the final, trend-bearing sentence."""
    from transformers import AutoTokenizer

    from clcr_cli.features.text import resolve_text_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model("minilm"), local_files_only=True)

    def longest(words: tuple[str, ...]) -> str:
        return max(words, key=lambda w: len(tokenizer.tokenize(w)))

    event = longest(recipe._EVENT_WORDS[0] + recipe._EVENT_WORDS[1] + recipe._GAP_WORDS)
    sentences = [
        longest(recipe._QUIET),
        f"{longest(recipe._HEDGES)}{longest(recipe._NAMES)} heard {' '.join([event] * recipe.TEXT_SLOTS)}.",
        longest(recipe._FILLERS),
        longest(recipe._LOUD),
    ]
    assert len(tokenizer(" ".join(sentences))["input_ids"]) <= recipe.TEXT_MAX_TOKENS
