"""``clcr ablate``: the table of variants against the full model, and every run and the
table reused when asked again."""

from __future__ import annotations

from pathlib import Path

import pytest
from workspace import QUICK, extract_cfg, read_csv

from clcr_cli.config import AblateConfig, train_config
from clcr_cli.pipeline import ablate as run_ablate


def test_ablate_table_and_cached_reuse(workdir: Path, trained: Path):
    base = train_config({}, {"task": "synth", **QUICK, "epochs": 2})
    cfg = AblateConfig(variants=("full", "full-mix"), seeds=(0,))
    out = run_ablate(base, extract_cfg(), cfg, workdir)
    rows = read_csv(out / "ablation.csv")
    assert [r["label"] for r in rows] == ["full", "full-mix"]
    assert float(rows[0]["delta"]) == 0.0
    runs = read_csv(out / "runs.csv")
    delta = float(runs[1]["acc"]) - float(runs[0]["acc"])
    assert float(rows[1]["delta"]) == pytest.approx(delta)
    assert "| full-mix |" in (out / "ablation.md").read_text()
    trains = {r["train"]: Path(r["train"], "manifest.json").stat().st_mtime_ns for r in runs}
    table = (out / "manifest.json").stat().st_mtime_ns
    assert run_ablate(base, extract_cfg(), cfg, workdir) == out  # reuses every run and the table
    assert (out / "manifest.json").stat().st_mtime_ns == table
    assert all(Path(t, "manifest.json").stat().st_mtime_ns == m for t, m in trains.items())
