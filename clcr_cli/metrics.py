"""Evaluation metrics: classification, MOSI-style regression, noise robustness, seed summaries.

Classification (CREMA-D, Kinetics-Sounds, AVE, UCF101, digits): accuracy, macro and
weighted F1 over *all* ``num_classes`` labels, and the confusion matrix.

Regression (CMU-MOSI / CMU-MOSEI sentiment in [-3, 3]) follows MMSA's
``MetricsTop.__eval_mosei_regression`` exactly, on flattened predictions ``p`` and
truths ``t``:

* ``mae``  = mean(|p - t|); ``corr`` = Pearson(p, t).
* ``acc7`` / ``acc5``: clip both to [-3, 3] / [-2, 2], round with ``np.round`` (half to
  even: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2), count equal classes.
* ``has0_acc2`` / ``has0_f1``: binarise with ``x >= 0`` (a zero truth is *positive*);
  accuracy and support-weighted F1.
* ``non0_acc2`` / ``non0_f1``: drop samples whose truth is exactly 0, binarise with
  ``x > 0``; accuracy and weighted F1. Papers' unqualified "Acc-2/F1" mostly mean these.
  MultiBench's Acc-2 is also the Non0 convention.

Where we differ from MMSA, deliberately and only in degenerate cases or presentation:

* MMSA rounds every value to 4 decimals; we return full precision (round when printing).
* ``corr`` is 0.0 when either side is constant (MMSA's ``np.corrcoef`` gives NaN and a
  RuntimeWarning): a constant predictor carries no linear information.
* ``non0_acc2`` / ``non0_f1`` are NaN when every truth is 0 (nothing to score; MMSA
  would raise). This is the only NaN these functions return.
* F1 uses ``zero_division=0``: the values equal sklearn's default, without its warnings.

Noise robustness (MultiBench, Liang et al. 2021, ``eval_scripts/robustness.py``):
MultiBench's *relative robustness* is the area under the performance-vs-noise curve by the
trapezoid rule with a fixed step of 0.1 (later max-min normalised across methods). Our
:func:`relative_robustness` integrates over the actual noise levels and divides by their
range, i.e. the curve's mean height: a flat curve scores its constant, and for the levels
0.0, 0.1, ..., 0.9 it equals MultiBench's area / 0.9 (before the across-method normalisation).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import ttest_rel
from sklearn.metrics import f1_score

from clcr_cli.errors import ConfigError

CLASSIFICATION_METRICS: tuple[str, ...] = ("acc", "f1_macro", "f1_weighted")
REGRESSION_METRICS: tuple[str, ...] = (
    "mae",
    "corr",
    "acc7",
    "acc5",
    "has0_acc2",
    "has0_f1",
    "non0_acc2",
    "non0_f1",
)
# scalar metrics reported for each target kind (``DatasetInfo.target``), in table order
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "classification": CLASSIFICATION_METRICS,
    "regression": REGRESSION_METRICS,
}

# the spread of a metric over seeds: the sample standard deviation (MMSA's np.std is ddof 0)
STD_DDOF = 1
STD_LABEL = f"std, ddof {STD_DDOF}"  # what a table's "mean ± std" header says of the std

# model selection: (metric, higher_is_better) per target kind
_PRIMARY: dict[str, tuple[str, bool]] = {
    "classification": ("acc", True),
    "regression": ("mae", False),
}

_LABELS: dict[str, str] = {
    "acc": "Acc",
    "f1_macro": "F1 (macro)",
    "f1_weighted": "F1 (weighted)",
    "mae": "MAE",
    "corr": "Corr",
    "acc7": "Acc-7",
    "acc5": "Acc-5",
    "has0_acc2": "Has0 Acc-2",
    "has0_f1": "Has0 F1",
    "non0_acc2": "Non0 Acc-2",
    "non0_f1": "Non0 F1",
}


def primary_metric(target: str) -> tuple[str, bool]:
    """The metric used for model selection on ``target`` and whether higher is better."""
    if target not in _PRIMARY:
        raise ConfigError(f"unknown target {target!r}; expected one of {sorted(_PRIMARY)}")
    return _PRIMARY[target]


def metric_label(name: str) -> str:
    """Table/axis header for a metric key (``"non0_f1"`` -> ``"Non0 F1"``).

    Names that are not metrics of this module (e.g. a loss term) are returned unchanged.
    """
    return _LABELS.get(name, name)


def _paired_vectors(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten both arrays and check they pair up one to one and are non-empty."""
    t, p = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if t.size != p.size:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("cannot compute metrics on zero samples")
    return t, p


def _class_indices(values: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    """``values`` as int64 class indices, checked to be whole numbers in 0..num_classes-1."""
    if not np.issubdtype(values.dtype, np.integer) and not (
        np.all(np.isfinite(values)) and np.all(values == np.round(values))
    ):
        raise ValueError(f"{name} must hold integer class indices")
    indices = values.astype(np.int64)
    if indices.min() < 0 or indices.max() >= num_classes:
        raise ValueError(f"{name} holds a class outside 0..{num_classes - 1}")
    return indices


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Accuracy, macro / weighted F1 and confusion matrix of integer class predictions.

    F1 is taken over ``labels = 0..num_classes-1``: a class absent from both truth and
    prediction scores F1 = 0 and still counts in the macro mean (the task's class set, not
    the evaluated sample, fixes the denominator); the weighted mean weighs classes by their
    truth support, so absent classes do not count there.

    Returns ``{"acc", "f1_macro", "f1_weighted"}`` as floats and ``"confusion"``, a
    ``num_classes x num_classes`` list of int lists with rows = truth, columns = prediction.
    """
    t, p = _paired_vectors(y_true, y_pred)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    t, p = _class_indices(t, "y_true", num_classes), _class_indices(p, "y_pred", num_classes)
    labels = list(range(num_classes))
    return {
        "acc": float(np.mean(t == p)),
        "f1_macro": float(f1_score(t, p, labels=labels, average="macro", zero_division=0)),
        "f1_weighted": float(f1_score(t, p, labels=labels, average="weighted", zero_division=0)),
        # counted directly: sklearn's confusion_matrix warns when only one label occurs
        "confusion": np.bincount(t * num_classes + p, minlength=num_classes**2)
        .reshape(num_classes, num_classes)
        .tolist(),
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (no linear information)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    da, db = a - a.mean(), b - b.mean()
    r = float(np.dot(da, db) / math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db))))
    return max(-1.0, min(1.0, r))


def _class_accuracy(t: np.ndarray, p: np.ndarray, bound: float) -> float:
    """MMSA's multiclass accuracy: clip to [-bound, bound], round half to even, compare."""
    return float(
        np.mean(np.round(np.clip(t, -bound, bound)) == np.round(np.clip(p, -bound, bound)))
    )


def _binary_scores(t: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Accuracy and support-weighted F1 of two boolean vectors."""
    acc = float(np.mean(t == p))
    f1 = float(f1_score(t, p, labels=[False, True], average="weighted", zero_division=0))
    return acc, f1


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MMSA's MOSI/MOSEI regression metrics (see the module docstring); all values floats."""
    t, p = _paired_vectors(y_true, y_pred)
    t, p = t.astype(np.float64), p.astype(np.float64)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("regression metrics need finite y_true and y_pred")
    has0_acc2, has0_f1 = _binary_scores(t >= 0, p >= 0)
    non_zero = t != 0
    if non_zero.any():
        non0_acc2, non0_f1 = _binary_scores(t[non_zero] > 0, p[non_zero] > 0)
    else:
        non0_acc2 = non0_f1 = float("nan")
    return {
        "mae": float(np.mean(np.abs(p - t))),
        "corr": _pearson(p, t),
        "acc7": _class_accuracy(t, p, 3.0),
        "acc5": _class_accuracy(t, p, 2.0),
        "has0_acc2": has0_acc2,
        "has0_f1": has0_f1,
        "non0_acc2": non0_acc2,
        "non0_f1": non0_f1,
    }


def relative_robustness(sigmas: Sequence[float], scores: Sequence[float]) -> float:
    """Mean height of the metric-vs-noise curve (MultiBench's relative robustness, normalised).

    ``trapezoid(scores, sigmas) / (sigmas[-1] - sigmas[0])`` over strictly increasing noise
    levels ``sigmas`` (at least two). A constant curve returns its constant; see the module
    docstring for the relation to MultiBench's un-normalised area.
    """
    s = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    y = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size != y.size:
        raise ValueError(f"{s.size} noise levels but {y.size} scores")
    if s.size < 2:
        raise ValueError("relative robustness needs at least two noise levels")
    if np.any(np.diff(s) <= 0):
        raise ValueError("noise levels must be strictly increasing")
    area = float(np.sum((y[1:] + y[:-1]) * np.diff(s)) / 2.0)  # trapezoid rule
    return area / float(s[-1] - s[0])


def _is_scalar(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def mean_std(rows: Sequence[Mapping[str, object]]) -> dict[str, tuple[float, float]]:
    """Mean and sample standard deviation (ddof 1, :data:`STD_DDOF`; 0.0 for one row) of
    each metric over seeds. A table showing them says so in its header (:data:`STD_LABEL`,
    "std, ddof 1"): MMSA's ``np.std`` is ddof 0, smaller by sqrt((n - 1) / n).

    Every row must have the same scalar metric keys; non-scalar entries (e.g. the
    classification ``"confusion"`` matrix) are not aggregated. NaN propagates.
    """
    if not rows:
        raise ValueError("mean_std needs at least one row")
    keys = [k for k, v in rows[0].items() if _is_scalar(v)]
    summary: dict[str, tuple[float, float]] = {}
    for key in keys:
        if any(key not in row or not _is_scalar(row[key]) for row in rows):
            raise ValueError(f"metric {key!r} is missing or not a number in some rows")
        values = np.array([float(row[key]) for row in rows])
        std = float(np.std(values, ddof=STD_DDOF)) if values.size > 1 else 0.0
        summary[key] = (float(np.mean(values)), std)
    return summary


def paired_difference(
    values: Sequence[float], reference: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of the per-seed differences ``values - reference`` and its t-interval
    (``scipy.stats.ttest_rel(values, reference).confidence_interval(confidence)``).

    The two sequences are paired (same seeds, same order). Returns (mean, low, high); with
    fewer than two pairs the interval is (nan, nan), and when every pair differs by the same
    amount it is that amount (no spread). Pairing removes the variance that two runs of one
    seed share (the data split, the initial weights of shared parts).
    """
    a, b = np.asarray(values, dtype=float), np.asarray(reference, dtype=float)
    diff = a - b
    if diff.size == 0:
        raise ValueError("paired_difference needs at least one pair")
    mean = float(diff.mean())
    if diff.size < 2:
        return mean, math.nan, math.nan
    if np.ptp(diff) == 0:  # scipy would divide 0 by 0 for its t statistic
        return mean, mean, mean
    with warnings.catch_warnings():
        # nearly equal differences: scipy warns that its t statistic loses precision; the
        # interval, mean +- t_crit * standard error, does not depend on that statistic
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        low, high = ttest_rel(a, b).confidence_interval(confidence)
    return mean, float(low), float(high)
