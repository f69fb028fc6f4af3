"""End to end: wall time of ``pipelines/demo.sh``'s stages, each against its cached rerun.

Runs the ``clcr`` CLI (``python -m clcr_cli``) as the demo does -- ``extract``, ``train``,
``eval`` on ``synth`` with ``pipelines/demo.toml``'s settings, but 240 samples instead of
the demo's 1200 -- in a fresh ``--workdir``, each stage in its own process, with
``--epochs`` scaled with the size (the demo itself trains 10).
Then runs the three commands again: every stage is reused from the cache, so the rerun
is the fixed cost of a command (interpreter, imports, cache lookup) measured in the
same run, and the ratio says how much of a stage's time is its real work.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Figure, Result

BASE_EPOCHS = 2
N_SAMPLES = 240
ROOT = Path(__file__).resolve().parents[1]
DEMO_TOML = ROOT / "pipelines" / "demo.toml"
STAGES = ("extract", "train", "eval")


def _config(workdir: Path) -> Path:
    """demo.toml with ``n_samples`` 240: the cost of a command, not of a large dataset."""
    path = workdir / "demo-240.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = DEMO_TOML.read_text()
    path.write_text(re.sub(r"(?m)^n_samples = \d+$", f"n_samples = {N_SAMPLES}", text))
    return path


def _command(stage: str, workdir: Path, epochs: int) -> list[str]:
    args = [sys.executable, "-m", "clcr_cli", stage, "--workdir", str(workdir), "--config", str(_config(workdir))]
    if stage == "extract":
        return [*args, "--dataset", "synth"]
    args += ["--task", "synth", "--epochs", str(epochs)]
    return [*args, "--json"] if stage == "eval" else args


def run_stage(stage: str, workdir: Path, epochs: int) -> tuple[float, str]:
    """Wall seconds and stdout of one CLI stage."""
    t0 = time.perf_counter()
    done = subprocess.run(_command(stage, workdir, epochs), capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"clcr {stage} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def run(epochs: int, workdir: Path, size: str = "small") -> Result:
    work = Path(workdir) / f"end-to-end-{epochs}"
    first, cached = {}, {}
    for stage in STAGES:
        first[stage], out = run_stage(stage, work, epochs)
    metrics = json.loads(out)
    for stage in STAGES:
        cached[stage], _ = run_stage(stage, work, epochs)
    figures = [
        Figure(f"{stage} seconds", first[stage], f"cached {stage} seconds", cached[stage], "s", grows=True)
        for stage in STAGES
    ]
    figures.append(
        Figure("demo seconds", sum(first.values()), "cached demo seconds", sum(cached.values()), "s", grows=True)
    )
    return Result("end to end", size, {"epochs": epochs}, figures, {"test metrics": metrics})
