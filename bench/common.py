"""What every benchmark shares: figures with their reference, timing, peak memory, output.

A :class:`Figure` is one measured number next to the reference it is compared with,
measured in the same run; its ``ratio`` is always ``value / reference``, computed, never
stored. Peak memory is Linux's peak resident set size (``VmHWM``), reset before each
measured call through ``/proc/self/clear_refs`` so that every call gets its own peak.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from clcr_cli.datasets.base import Dataset, DatasetOptions

T = TypeVar("T")

SIZES = ("small", "medium", "large")
SCALE = {"small": 1, "medium": 4, "large": 16}  # work grows 4x and 16x from small
MIB = 1024 * 1024


@dataclass(frozen=True)
class Figure:
    """``value`` (of ``name``, in ``unit``) compared with ``reference`` (of ``reference_name``)."""

    name: str
    value: float
    reference_name: str
    reference: float
    unit: str = ""
    grows: bool = False  # a cost (seconds, memory) whose growth with the work is reported

    @property
    def ratio(self) -> float:
        return self.value / self.reference if self.reference else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "value": self.value,
            "reference_name": self.reference_name,
            "reference": self.reference,
            "ratio": self.ratio,
        }


@dataclass
class Result:
    """One benchmark at one size: the work done and the figures measured."""

    benchmark: str
    size: str
    work: dict[str, int]
    figures: list[Figure]
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "size": self.size,
            "work": self.work,
            "figures": [f.as_dict() for f in self.figures],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Measured:
    """Wall time and peak resident memory above the resident memory at the start."""

    seconds: float
    peak_mib: float


def synth_dataset(workdir: Path, n_samples: int) -> Dataset:
    """The built-in ``synth`` dataset of ``n_samples`` (seed 0), generated under ``workdir`` once."""
    from clcr_cli.datasets.synth import load

    return load(DatasetOptions(root=Path(workdir) / "raw" / "synth", n_samples=n_samples, seed=0))


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name}")


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Otherwise memory freed by an earlier measurement stays resident and a later one
    reuses it without raising the RSS, and would look free.
    """
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure(fn: Callable[[], T]) -> tuple[T, Measured]:
    """Run ``fn`` once; its wall time and its own peak RSS (Linux ``VmHWM`` after a reset)."""
    release_free_memory()
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
    start_kib = _status_kib("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak_kib = _status_kib("VmHWM")
    return out, Measured(seconds, max(0, peak_kib - start_kib) / 1024)


def best_of(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Measured]:
    """Each function once untimed (warm-up), then ``repeats`` interleaved timed rounds.

    Interleaving gives the compared functions the same share of a noisy shared machine;
    each one's fastest round is kept (the least disturbed), with its largest peak memory.
    """
    for fn in fns.values():
        fn()
    rounds: dict[str, list[Measured]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            rounds[name].append(measure(fn)[1])
    return {
        name: Measured(min(m.seconds for m in ms), max(m.peak_mib for m in ms))
        for name, ms in rounds.items()
    }


def report_seconds_and_peak(seconds: float) -> None:
    """In a child process: print ``seconds`` and this process's lifetime peak RSS as JSON.

    ``VmHWM``, not ``getrusage``'s ``ru_maxrss``: Linux carries ``ru_maxrss`` across
    ``execve``, so a child of a large parent reported the parent's peak (every child of a
    full ``python -m bench`` run read the same 953 MiB)."""
    peak_kib = _status_kib("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024}))


def in_fresh_process(module: str, function: str, *args: str) -> dict[str, float]:
    """Call ``module.function(*args)`` (string arguments) in a fresh Python process, whose
    last line of output is JSON (:func:`report_seconds_and_peak`); return that JSON."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    code = f"import sys; from {module} import {function}; {function}(*sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"{module}.{function}{args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cost_figures(measured: dict[str, Measured], figure: str, reference: str) -> list[Figure]:
    """Wall time and peak memory of ``figure`` against those of ``reference``."""
    a, b = measured[figure], measured[reference]
    return [
        Figure(f"{figure} seconds", a.seconds, f"{reference} seconds", b.seconds, "s", grows=True),
        Figure(f"{figure} peak RSS", a.peak_mib, f"{reference} peak RSS", b.peak_mib, "MiB", grows=True),
    ]


def growth(results: list[Result]) -> list[Result]:
    """For benchmarks run at several sizes: each cost at a size against the smallest size run."""
    out = []
    for name in dict.fromkeys(r.benchmark for r in results):
        runs = sorted((r for r in results if r.benchmark == name), key=lambda r: SCALE[r.size])
        if len(runs) < 2:
            continue
        base = runs[0]
        base_figures = {f.name: f for f in base.figures if f.grows}
        figures = [
            Figure(f"{f.name} at {r.size}", f.value, f"at {base.size}", base_figures[f.name].value, f.unit)
            for r in runs[1:]
            for f in r.figures
            if f.name in base_figures
        ]
        work = {f"{r.size} {k}": v for r in runs for k, v in r.work.items()}
        out.append(Result(f"{name} growth", "all", work, figures))
    return out


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if x == 0 or 0.01 <= abs(x) < 1e5:
        return f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return f"{x:.3g}"


def print_table(results: list[Result], console: Console) -> None:
    """One rich table: every figure with its reference and their ratio."""
    table = Table(title="clcr benchmarks (ratio = value / reference, same run)")
    for column in ("benchmark", "size", "work", "figure", "value", "reference", "ref value", "ratio"):
        table.add_column(column, justify="right" if column in ("value", "ref value", "ratio") else "left")
    for result in results:
        work = ", ".join(f"{k}={v}" for k, v in result.work.items())
        for i, f in enumerate(result.figures):
            unit = f" {f.unit}" if f.unit else ""
            table.add_row(
                result.benchmark if i == 0 else "",
                result.size if i == 0 else "",
                work if i == 0 else "",
                f.name,
                _fmt(f.value) + unit,
                f.reference_name,
                _fmt(f.reference) + unit,
                _fmt(f.ratio),
            )
        table.add_section()
    console.print(table)


def write_json(path: Path, results: list[Result], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "results": [r.as_dict() for r in results]}
    path.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
