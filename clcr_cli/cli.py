"""The ``clcr`` command line: parse options, resolve the configs, call a stage. No logic here.

No stage option is written here: :func:`with_options` gives a command one flag per option
declared in the config sections it reads (``clcr_cli.config``) and hands the values given
to the command as ``given`` (section -> option -> value, checked later by the config).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from clcr_cli.config import SECTIONS, coerce, command_configs, declared, flag, parse_set
from clcr_cli.errors import ClcrError, ConfigError, DataError, environment_error
from clcr_cli.model.errors import ModelConfigError

console = Console(stderr=True, soft_wrap=True)  # paths in messages never wrap mid-name
Given = dict[str, dict[str, Any]]


class OneLineErrors(TyperGroup):
    """Usage errors (an unknown flag, a missing value) on one line, like every other error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # Typer's usage errors
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one is the help, printed already
                console.print(f"[red]error:[/] {escape(exc.format_message())}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Each command with its whole first paragraph, wrapped (click cuts it at ~45 characters)."""
        rows = [(name, (self.get_command(ctx, name).help or "").split("\n\n")[0].replace("\n", " "))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class SectionedHelp(TyperCommand):
    """``--help`` as plain text wrapped to the terminal, never cut: the options in one section
    per panel (the command's own, then each config section's), flags shown as ``--x/--no-x``."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        for title, rows in panels.items():
            with formatter.section(title):
                formatter.write_dl(rows)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"clcr {version('clcr')}")
        raise typer.Exit()


app = typer.Typer(
    name="clcr",
    help="CLCR (Cross-Level Semantic Collaborative Representation): cached, resumable stages.",
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's panels cut long option names and defaults at 80 columns
)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """CLCR (Cross-Level Semantic Collaborative Representation): cached, resumable stages."""

# options of running a command, not of a stage
Workdir = Annotated[Path, typer.Option("--workdir", help="Workspace folder for raw data, caches and results.")]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="TOML file with a table per stage ([extract], [train], [train.model], [eval], [ablate], [noise], [predict]); flags win."),
]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda (auto: CUDA when present).")]
Force = Annotated[bool, typer.Option("--force", help="Redo the stage even if a complete output is cached.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")]
Seeds = Annotated[str | None, typer.Option("--seeds", help="Train one run per seed, e.g. 1,2,3 (reports mean and std).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout (the output folder, its key, metrics where there are any) instead of text.")]
SetTrain = Annotated[
    list[str] | None,
    typer.Option("--set", help="Any train option as KEY=VALUE (repeatable), e.g. --set lr=0.01 --set model.shared_dim=16."),
]


@contextmanager
def user_errors(verbose: bool) -> Iterator[None]:
    """Turn a :class:`ClcrError` (or the model library's :class:`ModelConfigError`), or a
    failing filesystem call (an ``OSError``: read-only, disk full, permission), into one
    line on stderr and exit code 2 (traceback with -v)."""
    try:
        yield
    except (ClcrError, ModelConfigError, OSError) as exc:
        if verbose:
            traceback.print_exc()
        message = environment_error(exc) if isinstance(exc, OSError) else exc
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank has the same line: one prints it
            console.print(f"[red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: run the same command again to resume")
        raise typer.Exit(130) from None


# --- flags from the declared options ------------------------------------------------------


def _value_type(hint: Any) -> Any:
    """``X`` of ``X | None``; any other type as it is."""
    args = get_args(hint)
    return next(a for a in args if a is not type(None)) if type(None) in args else hint


def _metavar(hint: Any) -> str:
    """How the help shows an option's value: ``<int>``, ``<sgd|adamw>``, ``<int,...>``."""
    hint = _value_type(hint)
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "|".join(map(str, args))
    if origin is tuple:
        return f"{_metavar(args[0])},..." if args[-1] is Ellipsis else ",".join(map(_metavar, args))
    return hint.__name__


def _typer_option(section: str, path: str, f: dataclasses.Field, hint: Any) -> Any:
    """The Typer parameter of an option: a string (or strings) that the config checks,
    shown in the help panel of its section (``model.d``: the model's)."""
    *within, name = path.split(".")
    decl, kind, default = flag(name, f), str | None, f.default
    if hint is bool:  # --name/--no-name
        decl, kind, default = decl if "/" in decl else f"{decl}/--no-{decl[2:]}", bool | None, str(default).lower()
    elif get_origin(_value_type(hint)) is tuple:  # repeatable, each value comma-separated
        kind, default = list[str] | None, ",".join(map(str, default or ()))
    shown = "" if default in (None, "") else f"  [default: {default}]"
    option = typer.Option(
        decl,
        help=f.metadata["help"] + shown,
        metavar=f"<{_metavar(hint)}>",
        rich_help_panel=f"{(within or [section])[0].capitalize()} options",
        show_default=False,
    )
    return Annotated[kind, option]


def with_options(*names: str, skip: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one flag per option of the config sections ``names`` (but the option
    paths in ``skip``); the command receives what was given as ``given``."""
    flags = [(s, path, f, hint) for s in names for path, f, hint in declared(SECTIONS[s]) if path not in skip]

    def ident(section: str, path: str) -> str:
        return f"{section}__{path.replace('.', '__')}"

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command, eval_str=True).parameters.values()
        params = [
            inspect.Parameter(ident(s, path), inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=_typer_option(s, path, f, hint))
            for s, path, f, hint in flags
        ]
        params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p.name != "given"]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            given: Given = {s: {} for s in names}
            for s, path, *_ in flags:
                value = kwargs.pop(ident(s, path))
                if value is not None and value != []:
                    given[s][path] = value
            return command(given=given, **kwargs)

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return run

    return decorate


def output_json(folder: Path, **extra: Any) -> dict[str, Any]:
    """A stage output as JSON for ``--json``: stage, dataset, key, output folder and the
    summary its manifest recorded (plus ``extra``)."""
    import json

    from clcr_cli.cache import MANIFEST

    manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).is_file() else {}
    return {"stage": manifest.get("stage"), "dataset": manifest.get("dataset"), "key": manifest.get("key"),
            "output": str(folder), "summary": manifest.get("summary", {}), **extra}


def echo_json(obj: Any) -> None:
    import json

    typer.echo(json.dumps(obj, indent=2, default=str))


def _seeds(text: str | None, default: int) -> tuple[int, ...]:
    """``--seeds 1,2,3`` (default: the run's own seed)."""
    try:
        seeds = coerce(text, tuple[int, ...]) if text else (default,)
    except ValueError as exc:
        raise ConfigError(f"--seeds: {exc}") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds: expected seeds of 0 or more, got {text!r}")
    return seeds


# --- the commands -------------------------------------------------------------------------


@app.command(cls=SectionedHelp)
@with_options("extract")
def extract(
    given: Given,
    shard: Annotated[str | None, typer.Option(help="I/N: extract only every N-th part starting at I (0-based); join with --merge.")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Join the parts written by --shard runs (extracting nothing).")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any extract option as KEY=VALUE (repeatable).")] = None,
    json_out: JsonOut = False,
    workdir: Workdir = Path("data"),
    config: ConfigFile = None,
    device: Device = "auto",
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """Decode raw media and write features (BERT levels, log-mel/MFCC, frames) to HDF5."""
    from clcr_cli.stages.extract import parse_shard, run_extract

    with user_errors(verbose):
        cfg = command_configs(config, given, parse_set(set_))["extract"]
        store = run_extract(
            cfg, workdir, force=force, device=device, console=console,
            shard=None if shard is None else parse_shard(shard), merge_only=merge,
        )
        if json_out:
            echo_json(output_json(store.parent if store.name.endswith(".h5") else store.parent, store=str(store)))
        else:
            typer.echo(str(store))


@app.command(cls=SectionedHelp)
@with_options("train")
def train(
    given: Given,
    seeds: Seeds = None,
    set_: SetTrain = None,
    nproc: Annotated[int, typer.Option(min=1, help="Train with N processes on this machine (torchrun + DDP).")] = 1,
    json_out: JsonOut = False,
    workdir: Workdir = Path("data"),
    config: ConfigFile = None,
    device: Device = "auto",
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """Fit CLCR (or a variant or baseline) on the cached features; resumable.

    The defaults shown are the declared ones (the paper's recipe); each task starts from its
    recipe file instead (clcr_cli/configs/<task>.toml; synth and manifests: the short-budget
    default.toml): `clcr config --task X` prints what X uses. The options you give win."""
    from clcr_cli import pipeline
    from clcr_cli.distributed import launch, launched

    if nproc > 1 and not launched():
        raise typer.Exit(launch(nproc, sys.argv[1:]))
    with user_errors(verbose):
        cfg = command_configs(config, given, parse_set(set_))
        runs = []
        for seed in _seeds(seeds, cfg["train"].seed):
            run = dataclasses.replace(cfg["train"], seed=seed)
            runs.append(pipeline.train(run, cfg["extract"], workdir, force=force, device=device, console=console))
            if not json_out:
                typer.echo(str(runs[-1]))
        if json_out:
            echo_json({"runs": [output_json(r) for r in runs]})


@app.command("eval", cls=SectionedHelp)
@with_options("train", "eval")
def evaluate(
    given: Given,
    seeds: Seeds = None,
    set_: SetTrain = None,
    run: Annotated[Path | None, typer.Option(help="Evaluate this train output folder instead.")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Evaluate the latest complete run of --task in --workdir (no train options to repeat).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON on stdout.")] = False,
    workdir: Workdir = Path("data"),
    config: ConfigFile = None,
    device: Device = "auto",
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """Acc / F1 / MAE and the rest of the task's standard metrics; trains first if needed.

    The train options name the run(s) evaluated, as they were given to `clcr train` (when they
    name no trained run, one is trained, and a note says so); --run DIR or --latest name one
    directly."""
    from clcr_cli import pipeline
    from clcr_cli.metrics import mean_std
    from clcr_cli.runs import latest_run

    with user_errors(verbose):
        if run is not None and latest:
            raise ConfigError("--run and --latest: give one")
        cfg = command_configs(config, given, parse_set(set_))
        runs = [run] if run is not None else [latest_run(workdir, cfg["train"].task)] if latest else [
            dataclasses.replace(cfg["train"], seed=s) for s in _seeds(seeds, cfg["train"].seed)
        ]
        results = pipeline.evaluate(runs, cfg["extract"], cfg["eval"], workdir, force=force, device=device,
                                    console=console)
        summary = mean_std([r["metrics"] for r in results])
        if json_out:
            echo_json({"runs": results, "mean_std": summary})
        else:
            _metrics_table(results, summary)


def _metrics_table(results: list[dict[str, Any]], summary: dict[str, tuple[float, float]]) -> None:
    from clcr_cli.metrics import metric_label

    first = results[0]
    title = f"{first['task']} ({first['split']}"
    title += f", missing {', '.join(first['missing'])}" if first["missing"] else ""
    title += ", the best TEST epoch's weights: optimistic)" if first.get("optimistic") else ")"
    table = Table(title=title)
    table.add_column("metric")
    for r in results:
        table.add_column(f"seed {r['seed']}", justify="right")
    if len(results) > 1:
        table.add_column("mean ± std (ddof 1)", justify="right")
    for name, (mean, std) in summary.items():
        cells = [f"{r['metrics'][name]:.4f}" for r in results]
        if len(results) > 1:
            cells.append(f"{mean:.4f} ± {std:.4f}")
        table.add_row(metric_label(name), *cells)
    Console().print(table)
    for r in results:
        console.print(f"metrics: {r['output']}")


# ablate and noise choose the model and variant of each of their runs
VARIED = ("model.model", "model.variant")


@app.command(cls=SectionedHelp)
@with_options("train", "ablate", skip=VARIED)
def ablate(
    given: Given,
    set_: SetTrain = None,
    json_out: JsonOut = False,
    workdir: Workdir = Path("data"),
    config: ConfigFile = None,
    device: Device = "auto",
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """The paper's ablations (Table 3), each a swapped component, plus the budget sweep."""
    from clcr_cli import pipeline

    with user_errors(verbose):
        cfg = command_configs(config, given, parse_set(set_))
        out = pipeline.ablate(cfg["train"], cfg["extract"], cfg["ablate"], workdir, force=force, device=device,
                              console=console)
        echo_json(output_json(out)) if json_out else typer.echo(str(out))


@app.command(cls=SectionedHelp)
@with_options("train", "noise", skip=VARIED)
def noise(
    given: Given,
    set_: SetTrain = None,
    json_out: JsonOut = False,
    workdir: Workdir = Path("data"),
    config: ConfigFile = None,
    device: Device = "auto",
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """Robustness sweeps: Gaussian noise on features (default), noise on the raw media
    (--level raw) or missing modalities (--missing-rate); curves, robustness, a plot."""
    from clcr_cli import pipeline

    with user_errors(verbose):
        cfg = command_configs(config, given, parse_set(set_))
        out = pipeline.noise(cfg["train"], cfg["extract"], cfg["noise"], workdir, force=force, device=device,
                             console=console)
        echo_json(output_json(out)) if json_out else typer.echo(str(out))


@app.command(cls=SectionedHelp)
@with_options("predict")
def predict(
    given: Given,
    run: Annotated[Path | None, typer.Option(help="The train output folder whose model predicts.")] = None,
    latest: Annotated[str | None, typer.Option("--latest", metavar="<task>", help="Predict with the latest complete run of this task in --workdir instead of --run.")] = None,
    files: Annotated[list[Path] | None, typer.Argument(help="Media files; files of one name (a1.wav, a1.mp4, a1.txt) are one sample.", show_default=False)] = None,
    manifest: Annotated[Path | None, typer.Option(help="CSV of the inputs instead: id and audio/video/image/text columns (split and label not needed).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the outputs here (default: <run>/predict/<task>-<key>/).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the predictions as JSON on stdout.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any predict option as KEY=VALUE (repeatable).")] = None,
    workdir: Workdir = Path("data"),
    config: ConfigFile = None,
    device: Device = "auto",
    force: Force = False,
    verbose: Verbose = False,
) -> None:
    """Apply a trained run to new media, extracted with exactly the settings of its store."""
    import json

    from clcr_cli.runs import latest_run
    from clcr_cli.stages.predict import predict_run

    with user_errors(verbose):
        if (run is None) == (latest is None):
            raise ConfigError("predict: give --run DIR or --latest TASK (one of the two)")
        cfg = command_configs(config, given, parse_set(set_))["predict"]
        run = run if run is not None else latest_run(workdir, latest)
        result = predict_run(run, cfg, files=files or (), manifest=manifest, out=out, force=force,
                             device=device, console=console)
        if json_out:
            typer.echo(json.dumps(result.as_json(), indent=2))
            return
        _predictions_table(result)


def _predictions_table(result: Any) -> None:
    table = Table(title=f"{result.task}: {len(result.rows)} prediction(s)")
    table.add_column("id")
    records = result.records()
    if result.target == "classification":
        table.add_column("class")
        table.add_column("probability", justify="right")
        for r in records:
            table.add_row(escape(r["id"]), escape(r["class"]), f"{r['probabilities'][r['class']]:.3f}")
    else:
        table.add_column("prediction", justify="right")
        for r in records:
            table.add_row(escape(r["id"]), f"{r['prediction']:.4f}")
    Console().print(table)
    console.print(f"predictions: {result.out / 'predictions.csv'}")


@app.command("config", cls=SectionedHelp)
def show_config(
    task: Annotated[str, typer.Option("--task", help="The task (dataset) whose options to print.")] = "synth",
    recipe: Annotated[str | None, typer.Option("--recipe", help="A recipe of clcr_cli/configs/ by name instead of the task's own (e.g. mosi-dlf).")] = None,
    set_: SetTrain = None,
    config: ConfigFile = None,
    verbose: Verbose = False,
) -> None:
    """Print the extract and train options TASK uses, as TOML: its recipe (clcr_cli/configs/)
    over the declared defaults, under --config and --set. The output is a valid --config file."""
    from clcr_cli.config import (
        effective_toml,
        extract_config,
        load_toml,
        recipe_layers,
        train_config,
    )

    with user_errors(verbose):
        toml, source = load_toml(config), str(config)
        chosen = {"recipe": recipe} if recipe else {}
        extract_cfg = extract_config(toml, {"dataset": task, **chosen}, source)
        train_cfg = train_config(toml, {"task": task, **chosen}, source, parse_set(set_))
        recipes = ", ".join(where.rsplit(":", 1)[0] for where, _ in recipe_layers(recipe or task, "train", recipe))
        header = f"clcr config --task {task}: the recipe {recipes}\nover the declared defaults"
        header += f", under {config}" if config else ""
        typer.echo(effective_toml({"extract": extract_cfg, "train": train_cfg}, header), nl=False)


@app.command(cls=SectionedHelp)
def report(workdir: Workdir = Path("data"), json_out: JsonOut = False, verbose: Verbose = False) -> None:
    """Every result in the workspace on one page: <workdir>/report/report.{md,html}."""
    from clcr_cli.stages.report import run_report

    with user_errors(verbose):
        out = run_report(workdir, console=console)
        if json_out:
            echo_json({"stage": "report", "output": str(out), "files": sorted(p.name for p in out.iterdir())})
        else:
            typer.echo(str(out))


def _human_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


STATES = {"complete": "[green]complete[/]", "partial": "[yellow]partial[/]", "corrupt": "[red]corrupt[/]"}


@app.command(cls=SectionedHelp)
def status(
    workdir: Workdir = Path("data"),
    stage: Annotated[str | None, typer.Option(help="Only this stage (extract, train, ...).")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check every file of every output against its recorded sha256 (reads them all); exit 1 if any is damaged.")] = False,
    json_out: JsonOut = False,
    verbose: Verbose = False,
) -> None:
    """List cached stage outputs: stage, dataset, key, state, size, age and options, grouped by
    stage in pipeline order, the newest last.

    The state is complete, partial (being written, or killed: it resumes) or corrupt (a
    file missing, truncated or changed: the stage redoes it). The options column shows
    what differs from the defaults (-v: every option)."""
    from clcr_cli.cache import human_size, list_outputs
    from clcr_cli.config import non_default_options
    from clcr_cli.runs import binding_problem

    with user_errors(verbose):
        if not workdir.is_dir():
            raise DataError(workdir, "no such workspace folder")
        rows = [r for r in list_outputs(workdir, verify) if stage is None or r.stage == stage]
        if verify:  # a train output whose model or checkpoint another run wrote is corrupt too
            rows = [dataclasses.replace(r, state="corrupt", problem=problem)
                    if r.stage == "train" and r.complete and (problem := binding_problem(r.path, r.key)) else r
                    for r in rows]
        order = {name: i for i, name in enumerate(("extract", "perturb", "train", "eval", "predict", "ablate", "noise"))}
        rows.sort(key=lambda r: (order.get(r.stage, len(order)), r.modified))
        if json_out:
            echo_json([{"stage": r.stage, "dataset": r.dataset, "key": r.key, "state": r.state, "problem": r.problem,
                        "bytes": r.size, "output": str(r.path), "options": non_default_options(r.stage, r.params)}
                       for r in rows])
            raise typer.Exit(1 if verify and any(r.state == "corrupt" for r in rows) else 0)
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
                STATES[r.state],
                human_size(r.size),
                _human_age(now - r.modified),
                options or "(defaults)",
            )
        Console().print(table)
        if not rows:
            console.print(f"no cached outputs under {workdir}")
        corrupt = [r for r in rows if r.state == "corrupt"]
        for r in corrupt:
            console.print(f"[red]corrupt[/] {r.path}: {escape(r.problem)}", highlight=False, soft_wrap=True)
        if corrupt:
            console.print(f"{len(corrupt)} corrupt output(s): running their stage again redoes them")
        if verify and corrupt:
            raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="clcr")
