"""training/inference.py: predictions on a streamed split equal those on the split in
memory; a trained run is checked before it is used: a crafted model.json is refused before
anything is allocated, weights that are not the model's are named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_store import both_splits, tiny
from workspace import clcr, error_line, kept, rewrite, snapshot, train_dir

from clcr_cli.model import build_model
from clcr_cli.store import FeatureStore
from clcr_cli.training.data import model_config
from clcr_cli.training.inference import predict


def test_predict_on_a_streamed_split_equals_in_memory(store_path: Path):
    with FeatureStore(store_path) as store:
        memory, streamed, _ = both_splits(store, store.split_indices("valid"))
        torch.manual_seed(0)
        model = build_model(model_config(tiny(), store))
        a = predict(model, memory, 5, "cpu")
        b = predict(model, streamed, 5, "cpu", workers=2)
    assert a.ids == b.ids and np.array_equal(a.output, b.output) and np.array_equal(a.target, b.target)
    assert a.loss == b.loss and a.terms == b.terms
    assert np.array_equal(a.level_weights, b.level_weights)
    assert a.output.shape == (len(memory), 4) and math.isfinite(a.loss)


# --- a trained run is checked before it is used -------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"d": 16384}, "d: must be from 2 to 2048, got 16384"),
        ({"d": 2**20}, "d: must be from 2 to 2048, got 1048576"),
        ({"num_levels": 10**6}, "num_levels: must be from 1 to 16, got 1000000"),
        ({"num_heads": 0}, "num_heads: must be from 1 to 256, got 0"),
        ({"max_len": 10**9}, "max_len: must be from 1 to 65536, got 1000000000"),
        ({"frame_channels": [16, 32, 10**7]}, "frame_channels: must be from 1 to 1024, got 10000000"),
        ({"shared_dim": 10**6}, "shared_dim: must be from 1 to 16, got 1000000"),
        ({"d": "many"}, "d: expected an integer, got 'many'"),
        ({"audio": {"dim": 10**9}}, "modality 'audio' dim: must be from 1 to 16384, got 1000000000"),
        ({"audio": {"max_steps": 60_000}}, "modality 'audio' has up to 60000 steps but max_len is 512"),
        ({"text": {"num_levels_in": 1}}, "modality 'text' holds 1 stored hidden-state level(s) but the model needs num_levels=3"),
        ({"max_len": 65536, "d": 2048},
         "d=2048, num_levels=3 and max_len=65536 make the encoders' projections and positional tables "
         "1,235,484,672 values, more than the 268,435,456 allowed"),
    ],
)
def test_a_crafted_model_json_is_refused_before_any_allocation(ws: Path, monkeypatch, change: dict, field: str):
    from clcr_cli.training import inference

    run = train_dir(ws)
    meta = json.loads((run / "model.json").read_text())
    config, change = meta["model_config"], dict(change)
    for spec in config["modalities"]:
        spec.update(change.pop(spec["name"], {}))
    config.update(change)
    rewrite(run / "model.json", json.dumps(meta).encode())
    before = snapshot(ws)

    def allocate(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(inference, "build_model", allocate)
    result = clcr("eval", "--run", run, "--workdir", ws / "data", "--eval-batch-size", "7")
    line = error_line(result)
    assert line.startswith(f"error: {run / 'model.json'}: model_config: ModelConfigError: ") and field in line
    assert kept(before, ws)


def test_garbage_weights_are_named_when_evaluated(ws: Path):
    run = train_dir(ws)
    rewrite(run / "model.safetensors", b"\0" * 64)
    before = snapshot(ws)
    result = clcr("eval", "--run", run, "--workdir", ws / "data", "--eval-batch-size", "7")
    assert error_line(result).startswith(
        f"error: {run / 'model.safetensors'}: not the weights of the model in model.json (")
    assert kept(before, ws)
