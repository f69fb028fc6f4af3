"""Extraction memory: peak RSS of the real extract stage for N and 16N samples.

Each size runs ``run_extract`` (``synth``, its default options, ``--force``) in a fresh
Python process, which reports its own lifetime peak RSS (``VmHWM``) and the stage's
wall time. The dataset is generated beforehand in this process, so the child measures
extraction only. The store is written part by part (``part_size`` samples each), so
the peak should stay flat: the figure is the peak at 16N, the reference the peak at N.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import Figure, Result, in_fresh_process, report_seconds_and_peak, synth_dataset

BASE_SAMPLES = 16
GROWTH = 16


def child_main(workdir: str, n_samples: str) -> None:
    """In the fresh process: extract, then report the stage's seconds and the peak RSS."""
    import io

    from rich.console import Console

    from clcr_cli.config import extract_config
    from clcr_cli.stages.extract import run_extract

    cfg = extract_config({}, {"dataset": "synth", "n_samples": int(n_samples)})
    t0 = time.perf_counter()
    run_extract(cfg, Path(workdir), force=True, console=Console(file=io.StringIO()))
    report_seconds_and_peak(time.perf_counter() - t0)


def run(n_samples: int, workdir: Path, size: str = "small") -> Result:
    small, large = n_samples, GROWTH * n_samples
    for n in (small, large):
        synth_dataset(workdir, n)  # generated here, not in the measured process
    runs = {n: in_fresh_process("bench.memory", "child_main", str(workdir), str(n)) for n in (small, large)}
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
        {"process": "fresh python per size; peak = VmHWM of that process (imports included)"},
    )
