"""Report figures as PNG: noise-robustness curves, training curves, learned weights.

Figures are drawn on matplotlib's Agg canvas through ``matplotlib.figure.Figure`` (no
pyplot, no display, no global state), at a fixed size per panel so reports lay out
predictably: ``FIGSIZE`` inches at ``DPI`` (640 x 400 pixels a panel; panels side by side,
the training figure two panels wide and one or two high). Legends sit right of their
panel, outside the data; epochs are whole-number ticks. Each ``plot_*`` saves what the
matching ``*_figure`` draws (the figure itself is what tests inspect).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clcr_cli.errors import DataError
from clcr_cli.metrics import METRIC_NAMES, metric_label, primary_metric

FIGSIZE: tuple[float, float] = (6.4, 4.0)
DPI = 100
TRAINING_REQUIRED_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "valid_loss")
# history.csv columns of InterCAD's levels l = 0, 1, ...: not loss terms, not metrics
PARTICIPATION = re.compile(r"^train_participation_(\d+)$")  # the budget's participation rate rho_l
LEVEL_WEIGHT = re.compile(r"^valid_level_weight_(\d+)$")  # the mean level weight w_l on valid
PARTICIPATION_LABEL = "participation rate rho_l"
LEVEL_WEIGHT_LABEL = "level weight w_l"
LEVEL_MARKERS = ("o", "s", "^", "D", "v")


def _new_figure(columns: int = 1, rows: int = 1) -> Figure:
    fig = Figure(figsize=(FIGSIZE[0] * columns, FIGSIZE[1] * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def _legend_outside(ax: Axes) -> None:
    """The legend right of ``ax``, outside its data (constrained layout makes room)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")


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
    return _save(noise_panels_figure(panels, metric, xlabel, title), out)


def noise_panels_figure(
    panels: Mapping[str, tuple[Mapping[str, Curve], Sequence[str] | None]],
    metric: str,
    xlabel: str,
    title: str | None = None,
) -> Figure:
    """The figure :func:`plot_noise_panels` saves: a tick at every level measured."""
    if not panels or not all(curves for curves, _ in panels.values()):
        raise ValueError("plot_noise_curves needs at least one curve")
    fig = _new_figure(columns=len(panels))
    for ax, (name, (curves, ticks)) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels.items(), strict=True):
        levels: set[float] = set()
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
            levels.update(s.tolist())
        if ticks is None:
            ax.set_xticks(sorted(levels), [f"{v:g}" for v in sorted(levels)], fontsize="small")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric_label(metric))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        _legend_outside(ax)
    if title is not None:
        fig.suptitle(title)
    return fig


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
    (``acc`` / ``mae``) when present, else the first ``valid_*`` column other than the loss
    and the level weights."""
    if metric is not None:
        if f"valid_{metric}" not in history.columns:
            raise DataError(history_csv, f"missing column valid_{metric}")
        return metric
    found = [c.removeprefix("valid_") for c in history.columns if c.startswith("valid_")]
    found = [m for m in found if m != "loss" and not LEVEL_WEIGHT.match(f"valid_{m}")]
    if not found:
        raise DataError(history_csv, "no valid_<metric> column (e.g. valid_acc, valid_mae)")
    primaries = [primary_metric(target)[0] for target in METRIC_NAMES]
    return next((m for m in primaries if m in found), found[0])


def _levels(history: pd.DataFrame, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    """(level l, column) of the columns ``pattern`` matches, by level."""
    found = [(int(m.group(1)), c) for c in history.columns if (m := pattern.match(c))]
    return sorted(found)


def _epoch_axis(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def _level_panel(ax: Axes, epochs: np.ndarray, history: pd.DataFrame, columns: list[tuple[int, str]],
                 symbol: str, title: str, ylabel: str) -> None:
    """One line per level on a 0..1 scale, its colour and marker the same in both level
    panels (levels that overlap stay told apart by their markers)."""
    for level, column in columns:
        ax.plot(epochs, history[column], marker=LEVEL_MARKERS[level % len(LEVEL_MARKERS)], markersize=4,
                color=f"C{level}", label=f"{symbol}_{level + 1}")
    ax.set_ylim(-0.02, 1.02)
    _epoch_axis(ax, title, ylabel)
    _legend_outside(ax)


def plot_training_curves(history_csv: Path, out: Path, metric: str | None = None) -> Path:
    """Save :func:`training_curves_figure` of a per-epoch CSV as ``out`` (a PNG)."""
    return _save(training_curves_figure(history_csv, metric), out)


def training_curves_figure(history_csv: Path, metric: str | None = None) -> Figure:
    """Panels from a per-epoch CSV: losses (``train_loss``, ``valid_loss`` and dashed
    ``train_<term>`` loss terms) and the validation metric ``valid_<metric>``; below them,
    when the run recorded them, the budget's participation rates rho_l
    (``train_participation_<l>``) and InterCAD's mean level weights w_l on the valid split
    (``valid_level_weight_<l>``), each on its own 0..1 axis.

    ``metric`` picks the metric column; by default the primary metric when present (see
    :func:`clcr_cli.metrics.primary_metric`). Bad or incomplete CSV -> ``DataError``.
    """
    history_csv = Path(history_csv)
    history = _read_history(history_csv)
    metric = _history_metric(history, history_csv, metric)
    epochs = history["epoch"].to_numpy()
    participation, weights = _levels(history, PARTICIPATION), _levels(history, LEVEL_WEIGHT)
    mosaic = [["loss", "metric"]]
    if participation or weights:
        mosaic.append(["rho" if participation else ".", "w" if weights else "."])
    fig = _new_figure(columns=2, rows=len(mosaic))
    axes = fig.subplot_mosaic(mosaic)
    loss_ax = axes["loss"]
    loss_ax.plot(epochs, history["train_loss"], label="train loss", linewidth=2)
    loss_ax.plot(epochs, history["valid_loss"], label="valid loss", linewidth=2)
    for column in history.columns:
        if column.startswith("train_") and column != "train_loss" and not PARTICIPATION.match(column):
            loss_ax.plot(epochs, history[column], linestyle="--", label=column.removeprefix("train_"))
    _epoch_axis(loss_ax, "losses", "loss")
    _legend_outside(loss_ax)
    axes["metric"].plot(epochs, history[f"valid_{metric}"], marker="o", color="tab:green")
    _epoch_axis(axes["metric"], f"validation {metric_label(metric)}", metric_label(metric))
    if participation:
        _level_panel(axes["rho"], epochs, history, participation, "rho",
                     "token budget: participation per level (train)", PARTICIPATION_LABEL)
    if weights:
        _level_panel(axes["w"], epochs, history, weights, "w",
                     "InterCAD: mean level weight (valid)", LEVEL_WEIGHT_LABEL)
    return fig


def plot_weights(
    weights: Mapping[str, Sequence[float]], labels: Sequence[str], out: Path, title: str
) -> Path:
    """Save :func:`weights_figure` as ``out`` (a PNG)."""
    return _save(weights_figure(weights, labels, title), out)


def weights_figure(weights: Mapping[str, Sequence[float]], labels: Sequence[str], title: str) -> Figure:
    """Grouped bars: one group per key of ``weights`` (e.g. a task), one bar per label
    (e.g. a semantic level or a modality) with height ``weights[key][i]``, its value on top."""
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
        bars = ax.bar(groups + (i - (len(labels) - 1) / 2) * width, heights, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize="small")
    ax.set_xticks(groups, list(weights))
    ax.set_ylabel("weight")
    ax.margins(y=0.12)  # room for the values above the bars
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    _legend_outside(ax)
    return fig
