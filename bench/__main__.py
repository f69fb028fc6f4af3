"""``python -m bench``: run the benchmarks, print one table, write the JSON."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from bench import compiled, end_to_end, finetune, media, memory, resnet, streaming, text, training
from bench.common import SCALE, SIZES, Result, growth, print_table, write_json

# name -> (run(work, workdir, size) -> Result, the work at the small size)
BENCHMARKS: dict[str, tuple[Callable[..., Result], int]] = {
    "text": (text.run, text.BASE_SAMPLES),
    "audio": (media.run_audio, media.BASE_SAMPLES),
    "video": (media.run_video, media.BASE_SAMPLES),
    "memory": (memory.run, memory.BASE_SAMPLES),
    "training": (training.run, training.BASE_SAMPLES),
    "training-memory": (streaming.run, streaming.BASE_SAMPLES),
    "finetune": (finetune.run, finetune.BASE_SAMPLES),
    "end-to-end": (end_to_end.run, end_to_end.BASE_EPOCHS),
    "compile": (compiled.run, compiled.BASE_SAMPLES),
    "resnet": (resnet.run, resnet.BASE_SAMPLES),
}
OPT_IN = ("compile", "resnet", "finetune")  # minutes on a CPU (compiling; 224-px ResNet18 steps; BERT fine-tuning): only when named


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=(*SIZES, "all"), default="small",
                        help="work per benchmark: small, 4x (medium), 16x (large), or all three")
    parser.add_argument("--only", default=",".join(b for b in BENCHMARKS if b not in OPT_IN),
                        help=f"comma-separated subset of: {', '.join(BENCHMARKS)} "
                             f"(default: all but {', '.join(OPT_IN)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default: <tmp>/clcr-bench/results-<size>.json)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where datasets and stage outputs go (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only.split(",")) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def run_all(names: list[str], sizes: list[str], workdir: Path, console: Console) -> list[Result]:
    results = []
    for size in sizes:
        for name in names:
            fn, base = BENCHMARKS[name]
            console.print(f"[bold]{name}[/] ({size}) ...")
            t0 = time.perf_counter()
            results.append(fn(base * SCALE[size], workdir, size))
            console.print(f"  done in {time.perf_counter() - t0:.1f} s")
    return results + growth(results)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)  # a whole row per line in logs
    names = args.only.split(",")
    sizes = list(SIZES) if args.size == "all" else [args.size]
    out = args.out or Path(tempfile.gettempdir()) / "clcr-bench" / f"results-{args.size}.json"
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    if args.workdir is not None:
        results = run_all(names, sizes, args.workdir.resolve(), console)
    else:
        with tempfile.TemporaryDirectory(prefix="clcr-bench-") as tmp:
            results = run_all(names, sizes, Path(tmp), console)
    print_table(results, console)
    meta = {"started": started, "size": args.size, "benchmarks": names, "machine": platform.platform(),
            "python": platform.python_version(), "cpus": os.cpu_count()}
    write_json(out, results, meta)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
