"""Cache keys computed before the stages were made independent of each other (issue 20):
the same options and inputs must keep naming the same folders, or every cached output of
every user would be redone."""

from __future__ import annotations

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
    assert train_key(train_config({}, {"task": task, **options}), EXTRACTION).digest == digest


def test_eval_ablate_and_noise_keys_are_pinned():
    base = train_config({}, {"task": "synth", "epochs": 2})
    runs = {"full/0": "synth-aaaaaaaaaaaa"}
    assert ablate_key(base, AblateConfig(variants=("full", "no-reg"), seeds=(0, 1)), runs).digest == "68362d5edb9e"
    assert noise_key(base, NoiseConfig(models=("clcr",)), {"clcr": "synth-aaaaaaaaaaaa"}).digest == "caa30ea37a4a"
    train = {"dataset": "synth", "key": "aaaaaaaaaaaa"}
    assert eval_key(train, EvalConfig(split="valid")).digest == "94b4b99fca72"


@pytest.mark.parametrize(
    ("dataset", "options", "digest"),
    [("synth", {"n_samples": 40}, "47674bb6f9e4"), ("synth-reg", {"n_samples": 40, "num_frames": 4}, "08d62c100fa7")],
)
def test_extract_keys_are_pinned(tmp_path: Path, dataset: str, options: dict, digest: str):
    cfg = extract_config({}, {"dataset": dataset, **options})
    assert extract_key(cfg, load_dataset(dataset, dataset_options(cfg, tmp_path))).digest == digest
