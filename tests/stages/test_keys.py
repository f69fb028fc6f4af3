"""Cache keys computed before the stages were made independent of each other (issue 20):
the same options and inputs must keep naming the same folders, or every cached output of
every user would be redone. (A default that changed since -- ``lambda_aux`` -- is given at
its earlier value.)"""

from __future__ import annotations

import csv
import wave
from pathlib import Path

import pytest

from clcr_cli.config import AblateConfig, EvalConfig, NoiseConfig, extract_config, train_config
from clcr_cli.datasets import load_dataset
from clcr_cli.features.featurize import dataset_options, extract_key
from clcr_cli.stages.ablate import ablate_key
from clcr_cli.stages.evaluate import eval_key
from clcr_cli.stages.noise import noise_key
from clcr_cli.stages.train import train_key

EXTRACTION = "0123456789ab"


@pytest.mark.parametrize(
    ("task", "options", "digest"),
    [
        ("synth", {}, "3a2f367f5e9c"),
        ("synth", {"epochs": 3, "variant": "full-mix"}, "138639530e96"),
        ("mosei", {}, "8e37e236bbb1"),  # (cremad's recipe became the peers' protocol since: issue 18)
        ("mosi", {"model": "late-fusion"}, "28f7593e9929"),
        ("fsdd-digits", {"participation": 0.5}, "d61e4e44714b"),
    ],
)
def test_train_keys_are_pinned(task: str, options: dict, digest: str):
    # lambda_aux = 0: the model of those runs (the auxiliary heads became the default since:
    # issue 23); the same command now names another model, so another folder
    earlier = train_config({}, {"task": task, **options, "lambda_aux": 0.0})
    assert train_key(earlier, EXTRACTION).digest == digest
    assert train_key(train_config({}, {"task": task, **options}), EXTRACTION).digest != digest


def test_eval_ablate_and_noise_keys_are_pinned():
    base = train_config({}, {"task": "synth", "epochs": 2, "lambda_aux": 0.0})
    runs = {"full/0": "synth-aaaaaaaaaaaa"}
    assert ablate_key(base, AblateConfig(variants=("full", "no-reg"), seeds=(0, 1)), runs).digest == "68362d5edb9e"
    assert noise_key(base, NoiseConfig(models=("clcr",)), {"clcr": "synth-aaaaaaaaaaaa"}).digest == "caa30ea37a4a"
    train = {"dataset": "synth", "key": "aaaaaaaaaaaa"}
    assert eval_key(train, EvalConfig(split="valid")).digest == "94b4b99fca72"


def fixed_manifest(folder: Path) -> Path:
    """A manifest whose every byte is fixed by this test, so its key is the same on any
    machine (a generated dataset is keyed by its files' sizes, which an encoder's version
    may change)."""
    rows = []
    for i in range(8):
        (folder / f"t{i}.txt").write_text(f"sample number {i}")
        with wave.open(str(folder / f"a{i}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(bytes((i * 7 + k) % 256 for k in range(1600)))
        rows.append([f"s{i}", ["train", "train", "valid", "test"][i % 4], i % 2, f"t{i}.txt", f"a{i}.wav"])
    with open(folder / "data.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "split", "label", "text", "audio"], *rows])
    return folder / "data.csv"


@pytest.mark.parametrize(
    ("options", "digest"),
    [({}, "c39cf139f0fe"), ({"audio_features": "mfcc", "n_mels": 40}, "da84d04e5bf3")],
)
def test_extract_keys_are_pinned(tmp_path: Path, options: dict, digest: str):
    manifest = fixed_manifest(tmp_path)
    cfg = extract_config({}, {"dataset": "mine", "manifest": str(manifest), "verify_inputs": True, **options})
    assert extract_key(cfg, load_dataset("mine", dataset_options(cfg, tmp_path))).digest == digest
