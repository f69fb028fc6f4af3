"""Report figures as PNG: noise-robustness curves, training curves, learned weights.

Figures are drawn on matplotlib's Agg canvas through ``matplotlib.figure.Figure`` (no
pyplot, no display, no global state), at a fixed size so reports lay out predictably:
``FIGSIZE`` inches at ``DPI`` (640 x 400 pixels; the training figure is twice as wide).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clcr_cli.errors import DataError
from clcr_cli.metrics import METRIC_NAMES, metric_label, primary_metric

FIGSIZE: tuple[float, float] = (6.4, 4.0)
DPI = 100
TRAINING_REQUIRED_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "valid_loss")


def _new_figure(width_factor: int = 1) -> Figure:
    fig = Figure(figsize=(FIGSIZE[0] * width_factor, FIGSIZE[1]), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


Curve = tuple[Sequence[float], Sequence[float], Sequence[float]]  # (levels, means, stds)


def plot_noise_curves(curves: Mapping[str, Curve], metric: str, out: Path, title: str, xlabel: str = "noise level σ") -> Path:
    """Metric vs noise level, one line per model: ``curves[name] = (sigmas, means, stds)``.

    The band is mean +- one standard deviation over seeds. Returns ``out`` (a PNG).
    """
    return plot_noise_panels({title: (curves, None)}, metric, out, xlabel)


def plot_noise_panels(
    panels: Mapping[str, tuple[Mapping[str, Curve], Sequence[str] | None]],
    metric: str,
    out: Path,
    xlabel: str,
    title: str | None = None,
) -> Path:
    """Side by side, one panel per key (its title) of ``panels``: its curves, as in
    :func:`plot_noise_curves`, and the labels of its x ticks (None: the levels)."""
    if not panels or not all(curves for curves, _ in panels.values()):
        raise ValueError("plot_noise_curves needs at least one curve")
    fig = _new_figure(width_factor=len(panels))
    for ax, (name, (curves, ticks)) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels.items(), strict=True):
        for label, (sigmas, means, stds) in curves.items():
            s, m, sd = (np.asarray(v, dtype=np.float64) for v in (sigmas, means, stds))
            if not (s.shape == m.shape == sd.shape and s.ndim == 1):
                raise ValueError(
                    f"curve {label!r}: sigmas, means and stds must be 1-D of one length, "
                    f"got {s.shape}, {m.shape}, {sd.shape}"
                )
            (line,) = ax.plot(s, m, marker="o", label=label)
            ax.fill_between(s, m - sd, m + sd, color=line.get_color(), alpha=0.2, linewidth=0)
            if ticks is not None:
                ax.set_xticks(s, ticks, fontsize="small")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric_label(metric))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title is not None:
        fig.suptitle(title)
    return _save(fig, out)


def _read_history(history_csv: Path) -> pd.DataFrame:
    """The per-epoch CSV as numeric columns, or a DataError naming the file."""
    if not history_csv.is_file():
        raise DataError(history_csv, "training history not found")
    try:
        history = pd.read_csv(history_csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(history_csv, f"not a readable CSV ({exc})") from exc
    missing = [c for c in TRAINING_REQUIRED_COLUMNS if c not in history.columns]
    if missing:
        raise DataError(history_csv, f"missing column(s) {', '.join(missing)}")
    if history.empty:
        raise DataError(history_csv, "no epochs recorded")
    for column in history.columns:
        if not pd.api.types.is_numeric_dtype(history[column]):
            raise DataError(history_csv, f"column {column!r} is not numeric")
    return history


def _history_metric(history: pd.DataFrame, history_csv: Path, metric: str | None) -> str:
    """The ``valid_<metric>`` column to plot: ``metric`` if given, else a primary metric
    (``acc`` / ``mae``) when present, else the first ``valid_*`` column other than the loss."""
    if metric is not None:
        if f"valid_{metric}" not in history.columns:
            raise DataError(history_csv, f"missing column valid_{metric}")
        return metric
    found = [c.removeprefix("valid_") for c in history.columns if c.startswith("valid_")]
    found = [m for m in found if m != "loss"]
    if not found:
        raise DataError(history_csv, "no valid_<metric> column (e.g. valid_acc, valid_mae)")
    primaries = [primary_metric(target)[0] for target in METRIC_NAMES]
    return next((m for m in primaries if m in found), found[0])


def plot_training_curves(history_csv: Path, out: Path, metric: str | None = None) -> Path:
    """Two panels from a per-epoch CSV: losses (``train_loss``, ``valid_loss`` and dashed
    ``train_<term>`` loss terms) and the validation metric ``valid_<metric>``.

    ``metric`` picks the metric column; by default the primary metric when present (see
    :func:`clcr_cli.metrics.primary_metric`). Bad or incomplete CSV -> ``DataError``.
    """
    history_csv = Path(history_csv)
    history = _read_history(history_csv)
    metric = _history_metric(history, history_csv, metric)
    epochs = history["epoch"].to_numpy()
    fig = _new_figure(width_factor=2)
    loss_ax, metric_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, history["train_loss"], label="train loss", linewidth=2)
    loss_ax.plot(epochs, history["valid_loss"], label="valid loss", linewidth=2)
    for column in history.columns:
        if column.startswith("train_") and column != "train_loss":
            loss_ax.plot(
                epochs, history[column], linestyle="--", label=column.removeprefix("train_")
            )
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("losses")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend()
    metric_ax.plot(epochs, history[f"valid_{metric}"], marker="o", color="tab:green")
    metric_ax.set_xlabel("epoch")
    metric_ax.set_ylabel(metric_label(metric))
    metric_ax.set_title(f"validation {metric_label(metric)}")
    metric_ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_weights(
    weights: Mapping[str, Sequence[float]], labels: Sequence[str], out: Path, title: str
) -> Path:
    """Grouped bars: one group per key of ``weights`` (e.g. a task), one bar per label
    (e.g. a semantic level or a modality) with height ``weights[key][i]``."""
    if not weights:
        raise ValueError("plot_weights needs at least one group")
    for group, values in weights.items():
        if len(values) != len(labels):
            raise ValueError(f"group {group!r} has {len(values)} weights for {len(labels)} labels")
    fig = _new_figure()
    ax = fig.add_subplot()
    groups = np.arange(len(weights))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        heights = [float(values[i]) for values in weights.values()]
        ax.bar(groups + (i - (len(labels) - 1) / 2) * width, heights, width, label=label)
    ax.set_xticks(groups, list(weights))
    ax.set_ylabel("weight")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, out)
