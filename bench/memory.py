"""Extraction memory: peak RSS of the real extract stage for N and 16N samples.

Each size runs ``run_extract`` (``synth``, its default options, ``--force``) in a fresh
Python process, which reports its own lifetime peak RSS (``ru_maxrss``) and the stage's
wall time. The dataset is generated beforehand in this process, so the child measures
extraction only. The store is written part by part (``part_size`` samples each), so
the peak should stay flat: the figure is the peak at 16N, the reference the peak at N.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Figure, Result, synth_dataset

BASE_SAMPLES = 16
GROWTH = 16
_CHILD = "import sys; from bench.memory import child_main; child_main(sys.argv[1], int(sys.argv[2]))"


def child_main(workdir: str, n_samples: int) -> None:
    """In the fresh process: extract, then print the stage's seconds and this process's peak RSS."""
    import io

    from rich.console import Console

    from clcr_cli.config import extract_config
    from clcr_cli.stages.extract import run_extract

    cfg = extract_config({}, {"dataset": "synth", "n_samples": n_samples})
    t0 = time.perf_counter()
    run_extract(cfg, Path(workdir), force=True, console=Console(file=io.StringIO()))
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024}))


def extract_in_subprocess(workdir: Path, n_samples: int) -> dict[str, float]:
    """Seconds and peak RSS (MiB) of one extraction of ``n_samples`` in a fresh process."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(workdir), str(n_samples)],
        capture_output=True, text=True, env=env, cwd=root,
    )
    if done.returncode != 0:
        raise RuntimeError(f"extract of {n_samples} samples failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(n_samples: int, workdir: Path, size: str = "small") -> Result:
    small, large = n_samples, GROWTH * n_samples
    for n in (small, large):
        synth_dataset(workdir, n)  # generated here, not in the measured process
    runs = {n: extract_in_subprocess(workdir, n) for n in (small, large)}
    return Result(
        "extract memory",
        size,
        {"N": small, "16N": large},
        [
            Figure(
                "peak RSS at 16N", runs[large]["peak_mib"], "peak RSS at N", runs[small]["peak_mib"], "MiB"
            ),
            Figure(
                "extract seconds at 16N", runs[large]["seconds"], "extract seconds at N", runs[small]["seconds"], "s"
            ),
        ],
        {"process": "fresh python per size; peak = ru_maxrss of that process (imports included)"},
    )
