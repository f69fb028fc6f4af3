"""clcr_cli.breakdown: per-group scores, the selection AUC and single-modality probes, on
hand-made numbers whose answers are known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from clcr_cli.breakdown import (
    auc,
    breakdown,
    fit_probe,
    group_summary,
    probe_columns,
    probe_predict,
    read_groups,
    selection_auc,
)

IDS = ["a", "b", "c", "d", "e", "f"]
GROUPS = {"a": "none", "b": "none", "c": "audio", "d": "audio", "e": "image", "f": "image"}


def test_group_summary_counts_scores_and_column_means_per_group():
    labels = np.array([0, 1, 2, 0, 1, 2])
    predicted = np.array([0, 1, 0, 0, 2, 2])
    beta = np.array([0.5, 0.5, 0.1, 0.2, 0.9, np.nan])
    out = group_summary(IDS, labels, predicted, GROUPS, {"beta_audio": beta})
    assert set(out) == {"all", "none", "audio", "image"}
    assert out["all"] == {"n": 6, "acc": pytest.approx(4 / 6), "beta_audio": pytest.approx(2.2 / 5)}
    assert out["none"]["acc"] == 1.0 and out["audio"]["acc"] == 0.5 and out["image"]["acc"] == 0.5
    assert out["audio"]["beta_audio"] == pytest.approx(0.15)
    assert out["image"]["beta_audio"] == pytest.approx(0.9)  # the NaN is left out


def test_group_summary_of_regression_is_the_mae():
    out = group_summary(["a", "b"], np.array([1.0, 2.0]), np.array([1.5, 1.0]), {"a": "x", "b": "x"},
                        classification=False)
    assert out["x"] == {"n": 2, "mae": pytest.approx(0.75)}


def test_auc_counts_ties_half_and_is_nan_without_a_class():
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0]), np.array([2.0])) == 0.0
    assert auc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    assert math.isnan(auc(np.array([]), np.array([1.0])))


def test_selection_auc_is_one_where_beta_singles_out_every_ruined_modality():
    beta_audio = np.array([0.5, 0.5, 0.05, 0.1, 0.9, 0.95])
    beta = {"audio": beta_audio, "image": 1 - beta_audio}
    out = selection_auc(IDS, beta, GROUPS)
    assert out["audio"]["auc"] == 1.0 and out["image"]["auc"] == 1.0
    assert out["audio"]["auc_vs_rest"] == 1.0  # below the clean samples' 0.5 too
    assert out["mean"]["auc"] == 1.0


def test_selection_auc_is_half_for_a_selection_blind_to_the_ruin():
    beta = {"audio": np.full(6, 0.5), "image": np.full(6, 0.5)}
    assert selection_auc(IDS, beta, GROUPS)["mean"]["auc"] == 0.5


def test_linear_probe_reads_a_separable_modality_and_not_a_noise_one():
    gen = np.random.default_rng(0)
    y = gen.integers(0, 3, 300)
    centres = gen.normal(size=(3, 8)) * 3
    informative = centres[y] + gen.normal(size=(300, 8))
    noise = gen.normal(size=(300, 8))
    x = np.stack([informative, noise], 1)  # (N, M, F)
    cols = probe_columns(x[:200], y[:200], x[200:], ["good", "bad"], True, 3)
    assert np.mean(cols["probe_good"] == y[200:]) > 0.95
    assert np.mean(cols["probe_bad"] == y[200:]) < 0.6
    again = probe_columns(x[:200], y[:200], x[200:], ["good", "bad"], True, 3)
    np.testing.assert_array_equal(cols["probe_good"], again["probe_good"])  # deterministic


def test_ridge_probe_fits_a_linear_target():
    gen = np.random.default_rng(1)
    x = gen.normal(size=(200, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 3.0
    probe = fit_probe(x, y, classification=False, num_classes=1, l2=1e-6)
    np.testing.assert_allclose(probe_predict(probe, x, classification=False), y, atol=1e-3)


def test_breakdown_holds_groups_auc_and_single_modality_scores():
    labels = np.array([0, 1, 2, 0, 1, 2])
    beta_audio = np.array([0.5, 0.5, 0.05, 0.1, 0.9, 0.95])
    columns = {
        "beta_audio": beta_audio,
        "beta_image": 1 - beta_audio,
        "probe_audio": np.array([0, 1, 1, 1, 1, 2]),  # right where the audio is intact
        "probe_image": np.array([0, 1, 2, 0, 0, 0]),  # right where the image is intact
    }
    out = breakdown(IDS, labels, labels, GROUPS, columns, ["audio", "image"])
    assert out["groups"]["all"]["acc"] == 1.0 and "probe_audio" not in out["groups"]["all"]
    assert out["selection_auc"]["mean"]["auc"] == 1.0
    assert out["single_modality"]["probe_audio"] == {"all": 4 / 6, "audio": 0.0, "image": 1.0, "none": 1.0}
    assert out["single_modality"]["probe_image"]["audio"] == 1.0
    assert out["single_modality"]["probe_image"]["image"] == 0.0


def test_read_groups_reads_the_column_or_says_there_is_none(tmp_path: Path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,split,label,corruption\na,test,0,none\nb,test,1,audio\n")
    assert read_groups(manifest) == {"a": "none", "b": "audio"}
    plain = tmp_path / "plain.csv"
    plain.write_text("id,split,label\na,test,0\n")
    assert read_groups(plain) is None
