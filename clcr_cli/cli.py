"""The ``clcr`` command line: parse options, build a config, call a stage. No logic here."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from clcr_cli.errors import ClcrError
from clcr_cli.model.errors import ModelConfigError

app = typer.Typer(
    name="clcr",
    help="CLCR (Cross-Level Semantic Collaborative Representation): cached, resumable stages.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

# options every stage shares
Workdir = Annotated[Path, typer.Option("--workdir", help="Workspace folder for raw data, caches and results.")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="TOML file with one table per stage (extract, train, eval, ablate, noise); CLI options win.")
]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda (auto: CUDA when present).")]
Force = Annotated[bool, typer.Option("--force", help="Redo the stage even if a complete output is cached.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")]


@contextmanager
def user_errors(verbose: bool) -> Iterator[None]:
    """Turn a :class:`ClcrError` (or the model library's :class:`ModelConfigError`) into one
    line on stderr and exit code 2 (traceback with -v)."""
    try:
        yield
    except (ClcrError, ModelConfigError) as exc:
        if verbose:
            traceback.print_exc()
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: run the same command again to resume")
        raise typer.Exit(130) from None


def _given(**options: Any) -> dict[str, Any]:
    """Options the user actually gave (Typer passes None for the others)."""
    return {k: v for k, v in options.items() if v is not None}


def _parse_ints(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else tuple(int(x) for x in text.split(",") if x.strip())


@app.command()
def extract(
    dataset: Annotated[str | None, typer.Option(help="synth, synth-reg, cremad, ks, ave, ucf101, mosi, mosei, or a name for --manifest.")] = None,
    root: Annotated[Path | None, typer.Option(help="The dataset's folder (default: <workdir>/raw/<dataset>).")] = None,
    manifest: Annotated[Path | None, typer.Option(help="CSV manifest of a user's dataset (id, split, label, audio/video/image/text).")] = None,
    target: Annotated[str | None, typer.Option(help="Manifest target: classification | regression.")] = None,
    split_file: Annotated[Path | None, typer.Option(help="CREMA-D train.csv or Kinetics-Sounds my_train.txt (the test list beside it).")] = None,
    fold: Annotated[int | None, typer.Option(help="UCF101 official split: 1, 2 or 3.")] = None,
    aligned: Annotated[bool | None, typer.Option("--aligned/--unaligned", help="MOSI/MOSEI: aligned_50.pkl or unaligned_50.pkl.")] = None,
    n_samples: Annotated[int | None, typer.Option(help="synth: number of samples to generate.")] = None,
    text_model: Annotated[str | None, typer.Option(help="'minilm' (offline default), a local HF model folder, or a cached hub id.")] = None,
    text_layers: Annotated[str | None, typer.Option(help="Hidden-state indices for the text levels, e.g. 2,4,6.")] = None,
    text_max_len: Annotated[int | None, typer.Option(help="Tokens per transcript (padded/truncated).")] = None,
    text_batch: Annotated[int | None, typer.Option(help="Transcripts per BERT forward pass.")] = None,
    sample_rate: Annotated[int | None, typer.Option(help="Audio sample rate (Hz).")] = None,
    audio_features: Annotated[str | None, typer.Option(help="logmel | mfcc | logmel+mfcc.")] = None,
    n_mels: Annotated[int | None, typer.Option(help="Mel bands.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Audio longer than this is cut.")] = None,
    num_frames: Annotated[int | None, typer.Option(help="Video frames per clip.")] = None,
    frame_size: Annotated[int | None, typer.Option(help="Frames are resized to SIZE x SIZE.")] = None,
    fps: Annotated[float | None, typer.Option(help="Sample frames at this rate (capped at --num-frames); default: evenly spaced.")] = None,
    part_size: Annotated[int | None, typer.Option(help="Samples per resumable part.")] = None,
    on_error: Annotated[str | None, typer.Option(help="fail: stop at a bad sample; skip: record it in skipped.csv and go on.")] = None,
    shard: Annotated[str | None, typer.Option(help="I/N: extract only every N-th part starting at I (0-based); join with --merge.")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Join the parts written by --shard runs (extracting nothing).")] = False,
    workdir: Workdir = Path("data"),
    config: ConfigFile = None,
    seed: Seed = None,
    device: Device = "auto",
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """Decode raw media and write features (BERT levels, log-mel/MFCC, frames) to HDF5."""
    from clcr_cli.config import extract_config, load_toml
    from clcr_cli.stages.extract import parse_shard, run_extract

    with user_errors(verbose):
        cli = _given(
            dataset=dataset,
            root=None if root is None else str(root),
            manifest=None if manifest is None else str(manifest),
            target=target,
            split_file=None if split_file is None else str(split_file),
            fold=fold,
            aligned=aligned,
            n_samples=n_samples,
            seed=seed,
            text_model=text_model,
            text_layers=_parse_ints(text_layers),
            text_max_len=text_max_len,
            text_batch=text_batch,
            sample_rate=sample_rate,
            audio_features=audio_features,
            n_mels=n_mels,
            max_seconds=max_seconds,
            num_frames=num_frames,
            frame_size=frame_size,
            fps=fps,
            part_size=part_size,
            on_error=on_error,
        )
        cfg = extract_config(load_toml(config), cli, source=str(config))
        store = run_extract(
            cfg, workdir, force=force, device=device, console=console,
            shard=None if shard is None else parse_shard(shard), merge_only=merge,
        )
        typer.echo(str(store))


TaskOpt = Annotated[str | None, typer.Option("--task", help="Dataset/task name (default: synth).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="clcr | late-fusion | early-fusion | misa.")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Training epochs (paper: 100).")]
SeedsOpt = Annotated[str | None, typer.Option("--seeds", help="Several training seeds, e.g. 1,2,3 (reports mean and std).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Any train option as KEY=VALUE (repeatable), e.g. --set d=64 --set lr=0.01."),
]


def _parse_set(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, values read as TOML literals (numbers, booleans) or strings."""
    import tomllib

    from clcr_cli.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k.strip().replace("-", "_")] = tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            out[k.strip().replace("-", "_")] = v
    return out


def _experiment(config: Path | None, task: str | None, train_options: dict[str, Any]):
    """(toml, extract config for the task, base train config) shared by train/eval/ablate/noise."""
    from clcr_cli.config import extract_config, load_toml, train_config

    toml = load_toml(config)
    source = str(config)
    base = train_config(toml, {"task": task, **train_options}, source)
    # explicit [extract] options pin the extraction; otherwise the task's latest one is used
    extract_cfg = extract_config(toml, {"dataset": base.task}, source) if "extract" in toml else None
    return toml, extract_cfg, base


def _seed_list(seeds: str | None, base_seed: int) -> list[int]:
    return list(_parse_ints(seeds) or (base_seed,))


@app.command()
def train(
    task: TaskOpt = None,
    model: ModelOpt = None,
    variant: Annotated[str | None, typer.Option(help="Ablation variant (full, no-hierarchy, no-intraced, ...).")] = None,
    epochs: EpochsOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (paper: 64).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (paper: 1e-3).")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd (paper, momentum 0.9) | adamw.")] = None,
    d: Annotated[int | None, typer.Option(help="Width of every level.")] = None,
    num_levels: Annotated[int | None, typer.Option(help="Semantic levels L (paper: 3).")] = None,
    participation: Annotated[float | None, typer.Option("--budget", help="Initial budget participation rate r (paper: ~0.68).")] = None,
    lambda_intra: Annotated[float | None, typer.Option(help="Weight of L_intra.")] = None,
    lambda_inter: Annotated[float | None, typer.Option(help="Weight of L_inter.")] = None,
    patience: Annotated[int | None, typer.Option(help="Early stopping patience in epochs (0: off).")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 | bf16 | fp16 (fp16: CUDA only).")] = None,
    nproc: Annotated[int, typer.Option(help="Train with N processes on this machine (torchrun + DDP).")] = 1,
    seeds: SeedsOpt = None,
    set_: SetOpt = None,
    workdir: Workdir = Path("data"),
    config: ConfigFile = None,
    seed: Seed = None,
    device: Device = "auto",
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """Fit CLCR (or a variant or baseline) on the cached features; resumable."""
    import dataclasses

    from clcr_cli.distributed import launch, launched
    from clcr_cli.stages.train import run_train

    if nproc > 1 and not launched():
        raise typer.Exit(launch(nproc, sys.argv[1:]))
    with user_errors(verbose):
        options = _parse_set(set_) | _given(
            model=model, variant=variant, epochs=epochs, batch_size=batch_size, lr=lr,
            optimizer=optimizer, d=d, num_levels=num_levels, participation=participation,
            lambda_intra=lambda_intra, lambda_inter=lambda_inter, patience=patience, seed=seed,
            precision=precision,
        )
        _, extract_cfg, base = _experiment(config, task, options)
        for s in _seed_list(seeds, base.seed):
            out = run_train(dataclasses.replace(base, seed=s), extract_cfg, workdir, force=force,
                            device=device, console=console)
            typer.echo(str(out))


@app.command("eval")
def evaluate(
    task: TaskOpt = None,
    model: ModelOpt = None,
    variant: Annotated[str | None, typer.Option(help="Ablation variant of the trained model.")] = None,
    epochs: EpochsOpt = None,
    seeds: SeedsOpt = None,
    set_: SetOpt = None,
    split: Annotated[str | None, typer.Option(help="train | valid | test.")] = None,
    missing: Annotated[list[str] | None, typer.Option(help="Evaluate with this modality absent (repeatable).")] = None,
    run: Annotated[Path | None, typer.Option(help="Evaluate this train output folder instead.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON on stdout.")] = False,
    workdir: Workdir = Path("data"),
    config: ConfigFile = None,
    seed: Seed = None,
    device: Device = "auto",
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """Acc / F1 / MAE and the rest of the task's standard metrics; trains first if needed."""
    import dataclasses
    import json

    from clcr_cli.config import eval_config
    from clcr_cli.metrics import mean_std
    from clcr_cli.runtime import resolve_device
    from clcr_cli.stages.evaluate import run_eval
    from clcr_cli.stages.train import run_train

    with user_errors(verbose):
        toml, extract_cfg, base = _experiment(
            config, task, _parse_set(set_) | _given(model=model, variant=variant, epochs=epochs, seed=seed)
        )
        ecfg = eval_config(toml, _given(split=split, missing=tuple(missing) if missing else None), str(config))
        if run is not None:
            runs = [run]
        else:
            runs = [
                run_train(dataclasses.replace(base, seed=s), extract_cfg, workdir, device=device, console=console)
                for s in _seed_list(seeds, base.seed)
            ]
        results = [run_eval(r, ecfg, force=force, device=resolve_device(device), console=console) for r in runs]
        summary = mean_std([r["metrics"] for r in results])
        if json_out:
            typer.echo(json.dumps({"runs": results, "mean_std": summary}, indent=2))
        else:
            _metrics_table(results, summary)


def _metrics_table(results: list[dict[str, Any]], summary: dict[str, tuple[float, float]]) -> None:
    from clcr_cli.metrics import metric_label

    first = results[0]
    title = f"{first['task']} ({first['split']}"
    title += f", missing {', '.join(first['missing'])})" if first["missing"] else ")"
    table = Table(title=title)
    table.add_column("metric")
    for r in results:
        table.add_column(f"seed {r['seed']}", justify="right")
    if len(results) > 1:
        table.add_column("mean ± std", justify="right")
    for name, (mean, std) in summary.items():
        cells = [f"{r['metrics'][name]:.4f}" for r in results]
        if len(results) > 1:
            cells.append(f"{mean:.4f} ± {std:.4f}")
        table.add_row(metric_label(name), *cells)
    Console().print(table)
    for r in results:
        console.print(f"metrics: {Path(r['train'])}/eval")


@app.command()
def ablate(
    task: TaskOpt = None,
    variant: Annotated[list[str] | None, typer.Option(help="Variant to compare with full (repeatable; default: all).")] = None,
    budget_sweep: Annotated[str | None, typer.Option(help="Participation rates r, e.g. 0.2,0.4,0.68,0.8,1.0.")] = None,
    baseline: Annotated[list[str] | None, typer.Option(help="Add a baseline row (repeatable): late-fusion, early-fusion, misa.")] = None,
    epochs: EpochsOpt = None,
    seeds: SeedsOpt = None,
    set_: SetOpt = None,
    workdir: Workdir = Path("data"),
    config: ConfigFile = None,
    seed: Seed = None,
    device: Device = "auto",
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """The paper's ablations (Table 3), each a swapped component, plus the budget sweep."""
    from clcr_cli.config import AblateConfig, build_config
    from clcr_cli.stages.ablate import run_ablate

    with user_errors(verbose):
        toml, extract_cfg, base = _experiment(config, task, _parse_set(set_) | _given(epochs=epochs, seed=seed))
        sweep = None if budget_sweep is None else tuple(float(x) for x in budget_sweep.split(","))
        cfg = build_config(AblateConfig, "ablate", toml, _given(
            variants=tuple(variant) if variant else None, budget_sweep=sweep,
            baselines=tuple(baseline) if baseline else None, seeds=_parse_ints(seeds),
        ), None, str(config))
        out = run_ablate(base, extract_cfg, cfg, workdir, force=force, device=device, console=console)
        typer.echo(str(out))


@app.command()
def noise(
    task: TaskOpt = None,
    modality: Annotated[str | None, typer.Option(help="each (one curve per modality) | all | a modality name.")] = None,
    sigmas: Annotated[str | None, typer.Option(help="Noise levels in training-std units, e.g. 0,0.1,0.2.")] = None,
    noise_seeds: Annotated[str | None, typer.Option(help="Noise seeds, e.g. 0,1,2.")] = None,
    models: Annotated[str | None, typer.Option(help="Models compared, e.g. clcr,late-fusion.")] = None,
    epochs: EpochsOpt = None,
    set_: SetOpt = None,
    workdir: Workdir = Path("data"),
    config: ConfigFile = None,
    seed: Seed = None,
    device: Device = "auto",
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """Gaussian-noise robustness sweeps: curves, relative robustness and a plot."""
    from clcr_cli.config import NoiseConfig, build_config
    from clcr_cli.stages.noise import run_noise

    with user_errors(verbose):
        toml, extract_cfg, base = _experiment(config, task, _parse_set(set_) | _given(epochs=epochs, seed=seed))
        cfg = build_config(NoiseConfig, "noise", toml, _given(
            modality=modality,
            sigmas=None if sigmas is None else tuple(float(x) for x in sigmas.split(",")),
            noise_seeds=_parse_ints(noise_seeds),
            models=None if models is None else tuple(x.strip() for x in models.split(",")),
        ), None, str(config))
        out = run_noise(base, extract_cfg, cfg, workdir, force=force, device=device, console=console)
        typer.echo(str(out))


@app.command()
def report(workdir: Workdir = Path("data"), verbose: Verbose = False) -> None:
    """Every result in the workspace on one page: <workdir>/report/report.{md,html}."""
    from clcr_cli.stages.report import run_report

    with user_errors(verbose):
        typer.echo(str(run_report(workdir, console=console)))


def _human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _human_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@app.command()
def status(
    workdir: Workdir = Path("data"),
    stage: Annotated[str | None, typer.Option(help="Only this stage (extract, train, ...).")] = None,
    verbose: Verbose = False,
) -> None:
    """List cached stage outputs: stage, dataset, key, state, size, age and options.

    The options column shows what differs from the defaults (-v: every option)."""
    from clcr_cli.cache import list_outputs
    from clcr_cli.config import non_default_options

    with user_errors(verbose):
        rows = [r for r in list_outputs(workdir) if stage is None or r.stage == stage]
        table = Table(title=f"cached outputs in {workdir}")
        for col in ("stage", "dataset", "key", "state", "size", "age", "options"):
            table.add_column(col, overflow="fold")
        now = time.time()
        for r in rows:
            shown = r.params if verbose else non_default_options(r.stage, r.params)
            options = ", ".join(f"{k}={v}" for k, v in sorted(shown.items()) if v is not None)
            table.add_row(
                r.stage,
                r.dataset,
                r.key,
                "[green]complete[/]" if r.complete else "[yellow]partial[/]",
                _human_size(r.size),
                _human_age(now - r.modified),
                options or "(defaults)",
            )
        Console().print(table)
        if not rows:
            console.print(f"no cached outputs under {workdir}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="clcr")
