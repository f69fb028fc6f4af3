"""Figures are real PNGs of the documented size whose pixels depend on the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from clcr_cli.errors import DataError
from clcr_cli.plots import (
    DPI,
    FIGSIZE,
    LEVEL_WEIGHT_LABEL,
    PARTICIPATION_LABEL,
    noise_panels_figure,
    plot_noise_curves,
    plot_training_curves,
    plot_weights,
    training_curves_figure,
    weights_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEIGHT, WIDTH = round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI)


def _pixels(path: Path, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.shape == (height, width, 4)
    assert image[..., :3].std() > 0  # something was drawn
    return image


SIGMAS = [0.0, 0.3, 0.6, 0.9]


def test_noise_curves_png_depends_on_data(tmp_path):
    curves = {
        "CLCR": (SIGMAS, [0.80, 0.75, 0.66, 0.55], [0.01, 0.02, 0.02, 0.03]),
        "late fusion": (SIGMAS, [0.78, 0.65, 0.50, 0.40], [0.01, 0.01, 0.03, 0.02]),
    }
    out = plot_noise_curves(curves, "acc", tmp_path / "fig" / "noise.png", "audio noise")
    assert out == tmp_path / "fig" / "noise.png"
    first = _pixels(out)
    again = _pixels(plot_noise_curves(curves, "acc", tmp_path / "again.png", "audio noise"))
    np.testing.assert_array_equal(first, again)  # deterministic
    changed = dict(curves, CLCR=(SIGMAS, [0.80, 0.79, 0.78, 0.77], [0.01, 0.02, 0.02, 0.03]))
    other = _pixels(plot_noise_curves(changed, "acc", tmp_path / "other.png", "audio noise"))
    assert np.abs(first - other).sum() > 0


def test_noise_curves_reject_ragged_curve(tmp_path):
    with pytest.raises(ValueError, match="'CLCR'"):
        plot_noise_curves(
            {"CLCR": (SIGMAS, [0.8, 0.7], [0.0, 0.0])}, "acc", tmp_path / "x.png", "t"
        )
    with pytest.raises(ValueError, match="at least one"):
        plot_noise_curves({}, "acc", tmp_path / "x.png", "t")


def _write_history(path: Path, valid_acc: list[float], valid_f1: list[float]) -> Path:
    lines = ["epoch,train_loss,valid_loss,valid_acc,valid_f1_macro,train_task,train_align"]
    for e, (acc, f1) in enumerate(zip(valid_acc, valid_f1, strict=True)):
        lines.append(
            f"{e},{1.5 - 0.2 * e},{1.6 - 0.15 * e},{acc},{f1},{1.0 - 0.1 * e},{0.5 / (e + 1)}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_training_curves_plot_the_primary_metric(tmp_path):
    acc, f1 = [0.3, 0.5, 0.6, 0.65], [0.2, 0.4, 0.5, 0.6]
    base = _pixels(
        plot_training_curves(_write_history(tmp_path / "a.csv", acc, f1), tmp_path / "a.png"),
        2 * WIDTH,
    )
    # changing a column that is not drawn leaves the picture unchanged ...
    f1_changed = _write_history(tmp_path / "b.csv", acc, [0.1, 0.1, 0.1, 0.9])
    np.testing.assert_array_equal(
        base, _pixels(plot_training_curves(f1_changed, tmp_path / "b.png"), 2 * WIDTH)
    )
    # ... but it is drawn when asked for, and the default metric (acc) is drawn
    by_f1 = _pixels(
        plot_training_curves(f1_changed, tmp_path / "c.png", metric="f1_macro"), 2 * WIDTH
    )
    assert np.abs(base - by_f1).sum() > 0
    acc_changed = _write_history(tmp_path / "d.csv", [0.3, 0.2, 0.1, 0.05], f1)
    assert (
        np.abs(
            base - _pixels(plot_training_curves(acc_changed, tmp_path / "d.png"), 2 * WIDTH)
        ).sum()
        > 0
    )


def test_training_curves_regression_history(tmp_path):
    csv = tmp_path / "history.csv"
    csv.write_text(
        "epoch,train_loss,valid_loss,valid_corr,valid_mae\n0,1.2,1.3,0.1,1.4\n1,0.9,1.1,0.4,1.1\n"
    )
    _pixels(plot_training_curves(csv, tmp_path / "h.png"), 2 * WIDTH)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("epoch,train_loss,valid_acc\n0,1.0,0.5\n", "missing column(s) valid_loss"),
        ("epoch,train_loss,valid_loss\n0,1.0,1.1\n", "no valid_<metric> column"),
        ("epoch,train_loss,valid_loss,valid_acc\n", "no epochs recorded"),
        (
            "epoch,train_loss,valid_loss,valid_acc\n0,abc,1.0,0.5\n",
            "column 'train_loss' is not numeric",
        ),
        ("", "not a readable CSV"),
    ],
)
def test_bad_history_raises_data_error_naming_the_file(tmp_path, text, problem):
    csv = tmp_path / "history.csv"
    csv.write_text(text)
    with pytest.raises(DataError) as info:
        plot_training_curves(csv, tmp_path / "x.png")
    assert str(info.value).startswith(str(csv))
    assert problem in str(info.value)
    assert not (tmp_path / "x.png").exists()


def test_missing_history_and_metric_column(tmp_path):
    with pytest.raises(DataError, match="not found"):
        plot_training_curves(tmp_path / "none.csv", tmp_path / "x.png")
    csv = _write_history(tmp_path / "h.csv", [0.5], [0.5])
    with pytest.raises(DataError, match="missing column valid_mae"):
        plot_training_curves(csv, tmp_path / "x.png", metric="mae")


def test_weights_png_depends_on_data(tmp_path):
    labels = ["low", "mid", "high"]
    weights = {"CREMA-D": [0.2, 0.3, 0.5], "MOSI": [0.4, 0.4, 0.2]}
    first = _pixels(plot_weights(weights, labels, tmp_path / "w.png", "level weights w"))
    moved = {"CREMA-D": [0.6, 0.3, 0.1], "MOSI": [0.4, 0.4, 0.2]}
    other = _pixels(plot_weights(moved, labels, tmp_path / "w2.png", "level weights w"))
    assert np.abs(first - other).sum() > 0
    with pytest.raises(ValueError, match="'MOSI' has 2 weights for 3 labels"):
        plot_weights({"MOSI": [0.5, 0.5]}, labels, tmp_path / "w3.png", "t")


# --- what is drawn where: the figures themselves ---------------------------------------------

LEVELS = range(3)
HISTORY_COLUMNS = [
    "epoch", "train_loss", "train_task", "train_intra", "train_inter", "train_pr", "train_sp", "train_mix",
    *(f"train_participation_{level}" for level in LEVELS), "valid_loss", "valid_acc",
    *(f"valid_level_weight_{level}" for level in LEVELS), "lr", "seconds", "samples_per_s",
]


def _clcr_history(path: Path, epochs: int = 10) -> Path:
    """A history.csv as a CLCR run writes it: loss terms, participation rates rho_l and
    InterCAD's mean level weights w_l besides the losses and the metric."""
    rows = []
    for e in range(1, epochs + 1):
        terms = [1.8 * 0.8**e, 0.4 * 0.8**e, 0.6 * 0.85**e, 0.02, 0.05 * 0.9**e, 0.1 * 0.7**e]
        rho = [0.5 + 0.03 * e, 0.5 - 0.01 * e, 0.5 - 0.025 * e]
        w = [0.35 + 0.01 * e, 0.33, 0.32 - 0.01 * e]
        rows.append([e, sum(terms), *terms, *rho, terms[0] + 0.2, 0.4 + 0.03 * e, *w, 1e-3, 12.0, 850.0])
    path.write_text("\n".join([",".join(HISTORY_COLUMNS), *(",".join(f"{v:g}" for v in r) for r in rows)]) + "\n")
    return path


def _axis(fig, ylabel: str):
    (ax,) = [ax for ax in fig.axes if ax.get_ylabel() == ylabel]
    return ax


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def test_participation_and_level_weights_have_their_own_axes_not_the_loss_axis(tmp_path):
    csv = _clcr_history(tmp_path / "history.csv")
    fig = training_curves_figure(csv)
    assert _labels(_axis(fig, "loss")) == ["train loss", "valid loss", "task", "intra", "inter", "pr", "sp", "mix"]
    rho, w = _axis(fig, PARTICIPATION_LABEL), _axis(fig, LEVEL_WEIGHT_LABEL)
    assert (_labels(rho), _labels(w)) == (["rho_1", "rho_2", "rho_3"], ["w_1", "w_2", "w_3"])
    np.testing.assert_allclose(rho.get_lines()[2].get_ydata(), [0.5 - 0.025 * e for e in range(1, 11)])
    np.testing.assert_allclose(w.get_lines()[0].get_ydata(), [0.35 + 0.01 * e for e in range(1, 11)])
    assert [line.get_color() for line in rho.get_lines()] == [line.get_color() for line in w.get_lines()]
    assert _labels(_axis(fig, "Acc")) and "level_weight" not in " ".join(a.get_title() for a in fig.axes)
    # the saved picture holds the two rows of panels
    _pixels(plot_training_curves(csv, tmp_path / "curves.png"), 2 * WIDTH, 2 * HEIGHT)


def test_a_run_without_levels_has_no_level_panels_and_a_level_weight_is_no_metric(tmp_path):
    fig = training_curves_figure(_write_history(tmp_path / "h.csv", [0.5, 0.6], [0.4, 0.5]))
    assert sorted(ax.get_ylabel() for ax in fig.axes) == ["Acc", "loss"]
    csv = tmp_path / "weights-only.csv"
    csv.write_text("epoch,train_loss,valid_loss,valid_level_weight_0\n1,1.0,1.1,0.5\n")
    with pytest.raises(DataError, match="no valid_<metric> column"):
        training_curves_figure(csv)


def test_epoch_ticks_are_whole_numbers(tmp_path):
    fig = training_curves_figure(_clcr_history(tmp_path / "history.csv", epochs=7))
    fig.canvas.draw()
    epoch_axes = [ax for ax in fig.axes if ax.get_xlabel() == "epoch"]
    assert len(epoch_axes) == 4
    for ax in epoch_axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def _assert_legends_outside_the_data(fig) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    for ax, legend in legends:
        box = legend.get_window_extent(renderer)
        assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)  # not cut off


def test_legends_sit_outside_the_data_of_every_figure(tmp_path):
    _assert_legends_outside_the_data(training_curves_figure(_clcr_history(tmp_path / "history.csv")))
    curves = {
        "CLCR": (SIGMAS, [0.80, 0.75, 0.66, 0.55], [0.01, 0.02, 0.02, 0.03]),
        "late fusion": (SIGMAS, [0.78, 0.65, 0.50, 0.40], [0.01, 0.01, 0.03, 0.02]),
    }
    raw = ({"CLCR": ([0, 1, 2], [0.8, 0.7, 0.6], [0.0] * 3)}, ["clean", "20 dB", "10 dB"])
    noise = noise_panels_figure({"audio noise": (curves, None), "raw": raw}, "acc", "σ", "two panels")
    _assert_legends_outside_the_data(noise)
    assert [t.get_text() for t in noise.axes[0].get_xticklabels()] == ["0", "0.3", "0.6", "0.9"]  # the levels
    assert [t.get_text() for t in noise.axes[1].get_xticklabels()] == ["clean", "20 dB", "10 dB"]
    _assert_legends_outside_the_data(weights_figure({"CREMA-D": [0.2, 0.3, 0.5]}, ["low", "mid", "high"], "w"))
