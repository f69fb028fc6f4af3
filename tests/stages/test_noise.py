"""``clcr noise`` on the features: Gaussian noise scaled by the training statistics that
spares padding; sigma 0 is the clean evaluation, a loud sigma lowers accuracy, the sweep is
cached. (``--level raw``: test_noise_raw.py; ``--missing-rate``: test_noise_missing.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from workspace import QUICK, extract_cfg, read_csv

from clcr_cli.config import EvalConfig, NoiseConfig, train_config
from clcr_cli.model.batch import Batch
from clcr_cli.pipeline import noise as run_noise
from clcr_cli.stages.evaluate import run_eval
from clcr_cli.stages.noise import gaussian_noise, noised_sets
from clcr_cli.training.data import FeatureStats


def test_noise_sigma_zero_equals_clean_and_is_cached(workdir: Path, trained: Path):
    base = train_config({}, {"task": "synth", **QUICK})
    cfg = NoiseConfig(sigmas=(0.0, 0.5, 4.0), noise_seeds=(0, 1), models=("clcr",), modality="all")
    out = run_noise(base, extract_cfg(), cfg, workdir)
    rows = read_csv(out / "curves.csv")
    clean = run_eval(trained, EvalConfig())["metrics"]["acc"]
    zero = [float(r["acc"]) for r in rows if float(r["sigma"]) == 0.0]
    assert zero and all(a == clean for a in zero)
    loud = np.mean([float(r["acc"]) for r in rows if float(r["sigma"]) == 4.0])
    assert loud < clean
    assert {r["modality"] for r in rows} == {"all"}
    assert (out / "noise_acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    robust = read_csv(out / "robustness.csv")
    assert len(robust) == 1
    mtime = (out / "manifest.json").stat().st_mtime_ns
    assert run_noise(base, extract_cfg(), cfg, workdir) == out
    assert (out / "manifest.json").stat().st_mtime_ns == mtime


def test_noise_scales_with_training_std_and_spares_padding():
    kinds = {"a": "sequence", "t": "levels", "v": "frames"}
    stats = FeatureStats(
        mean={"t": torch.zeros(2, 3), "v": torch.zeros(3)},
        std={"t": torch.tensor([[1.0, 2.0, 4.0]] * 2), "v": torch.tensor([10.0, 20.0, 40.0])},
    )
    batch = Batch(
        inputs={"a": torch.zeros(64, 5, 2), "t": torch.zeros(64, 2, 5, 3), "v": torch.zeros(64, 5, 2, 2, 3, dtype=torch.uint8)},
        lengths={m: torch.full((64,), 3) for m in kinds},
        target=torch.zeros(64),
    )
    noisy = gaussian_noise(0.5, list(kinds), kinds, stats, torch.Generator().manual_seed(0))(batch).inputs
    assert noisy["a"][:, :3].std().item() == pytest.approx(0.5, rel=0.1)
    assert not noisy["a"][:, 3:].any() and not noisy["t"][:, :, 3:].any() and not noisy["v"][:, 3:].any()
    per_dim = noisy["t"][:, :, :3].reshape(-1, 3).std(0)
    torch.testing.assert_close(per_dim, torch.tensor([0.5, 1.0, 2.0]), rtol=0.15, atol=0)
    per_channel = noisy["v"][:, :3].reshape(-1, 3).std(0)
    torch.testing.assert_close(per_channel, torch.tensor([5.0, 10.0, 20.0]), rtol=0.15, atol=0)
    assert gaussian_noise(0.0, list(kinds), kinds, stats, torch.Generator())(batch) is batch
    assert noised_sets(NoiseConfig(modality="each"), ["a", "t"]) == {"a": ["a"], "t": ["t"]}
    assert noised_sets(NoiseConfig(modality="all"), ["a", "t"]) == {"all": ["a", "t"]}
