"""The documentation stays true: every fenced code block of README.md and docs/*.md is
either run here or says why not, and every relative link resolves.

Each block carries a marker on the line before its fence:

- ``<!-- test: run -->``: run by :func:`test_run_block`. TOML is parsed and, when its
  sections are ``clcr`` config sections, loaded through ``clcr_cli.config.load_toml`` and
  resolved for every stage it names. Python is executed. A ``bash`` block of ``clcr``
  commands is run command by command, in-process, against a small ``synth`` workspace
  (:func:`workspace`) with heavy options shrunk (:func:`shrink`) and the placeholders
  ``data/train/synth-<key>`` and ``data/raw/synth/n1200-...`` replaced by the workspace's
  run and data; a ``python - <<'EOF'`` here-document runs in a Python subprocess. The
  shell syntax understood is deliberately small (``\\`` continuations, ``&&``, ``> FILE``,
  comments): anything else fails, so a new block cannot be silently half-run.
- ``<!-- test: skip: REASON -->``: not run (a listing, or a command needing a dataset on
  disk); REASON says why in words, and every ``clcr`` command in it must still name
  only options its command has (:func:`test_skipped_commands_name_real_options`).

A block with neither marker fails :func:`test_every_block_is_marked`. The blocks that need
the trained workspace are marked ``slow``; the workspace is built once per module.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from clcr_cli.cli import app
from clcr_cli.config import SECTIONS, load_toml, stage_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 300

MARKER = re.compile(r"^<!-- test: (?:(?P<run>run)|skip: (?P<reason>.*?)) -->$")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
RUNNABLE = ("bash", "python", "toml")

# The workspace the bash blocks run against. 71 samples (10 test) is the smallest synth
# whose test split holds a sample with its *text* corrupted at the local level, which the
# corruption-breakdown block of docs/results-synth.md looks up.
N_SAMPLES = "71"
TRAINING_STAGES = ("train", "eval", "ablate", "noise")
SHRINK = {"--epochs": "1", "--d": "16"}  # every training stage: one epoch, a narrow model
RAW_STEP = {"--snr-db": "10", "--pixel-sigma": "32", "--text-rate": "0.2"}  # noise --level raw


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: str | None  # "run", "skip" or None
    reason: str | None

    @property
    def id(self) -> str:
        return f"{rel(self.path)}:{self.line}"


def prose_and_blocks(path: Path) -> tuple[list[tuple[int, str]], list[Block], list[int]]:
    """The lines outside code blocks (numbered), the fenced blocks, and the lines of markers
    that stand before no fence."""
    lines = path.read_text(encoding="utf-8").split("\n")
    prose: list[tuple[int, str]] = []
    blocks: list[Block] = []
    orphans: list[int] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if not fence:
            if MARKER.match(line) and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
                orphans.append(i + 1)
            prose.append((i + 1, line))
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            i += 1
        assert i < len(lines), f"{rel(path)}:{start + 1}: code block never closed"
        marker = MARKER.match(lines[start - 1]) if start else None
        blocks.append(Block(
            path, start + 1, fence["lang"], "\n".join(lines[start + 1:i]),
            None if marker is None else ("run" if marker["run"] else "skip"),
            None if marker is None else marker["reason"],
        ))
        i += 1
    return prose, blocks, orphans


ALL_BLOCKS = [b for f in doc_files() for b in prose_and_blocks(f)[1]]
RUN_BLOCKS = [b for b in ALL_BLOCKS if b.marker == "run"]


# --- the rule: every block is marked --------------------------------------------------------


def test_every_block_is_marked() -> None:
    unmarked = [b.id for b in ALL_BLOCKS if b.marker is None]
    assert not unmarked, (
        "code blocks without a marker on the line before the fence "
        "(<!-- test: run --> or <!-- test: skip: REASON -->): " + ", ".join(unmarked))
    orphans = [f"{rel(f)}:{n}" for f in doc_files() for n in prose_and_blocks(f)[2]]
    assert not orphans, "test markers not followed by a fence: " + ", ".join(orphans)


def test_skip_reasons_are_words() -> None:
    vague = [b.id for b in ALL_BLOCKS if b.marker == "skip" and len((b.reason or "").split()) < 3]
    assert not vague, "a skip marker says why in words: " + ", ".join(vague)


def test_run_blocks_are_of_a_runnable_kind() -> None:
    other = [f"{b.id} ({b.lang or 'no language'})" for b in RUN_BLOCKS if b.lang not in RUNNABLE]
    assert not other, f"only {', '.join(RUNNABLE)} blocks can be run: " + ", ".join(other)


def test_the_docs_have_blocks_of_each_runnable_kind() -> None:
    """Guards the collection itself: a broken fence parser would find nothing to run."""
    assert {b.lang for b in RUN_BLOCKS} == set(RUNNABLE)


# --- the README and the links --------------------------------------------------------------


def test_readme_is_short() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; the reference belongs in docs/"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: links reduced to their text, lower case, punctuation
    but ``-`` and ``_`` dropped, each space a ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_and_blocks(path)[0]:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m[1])
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def links(path: Path) -> Iterator[tuple[int, str]]:
    """Every link target outside code blocks and inline code."""
    for n, line in prose_and_blocks(path)[0]:
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            yield n, target


def is_relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:


def test_relative_links_resolve() -> None:
    broken = []
    for f in doc_files():
        for n, target in links(f):
            if not is_relative(target):
                continue
            file, _, anchor = target.partition("#")
            dest = (f.parent / file).resolve() if file else f
            if not dest.exists():
                broken.append(f"{rel(f)}:{n}: {target} (no such file)")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                broken.append(f"{rel(f)}:{n}: {target} (no heading #{anchor} in {rel(dest)})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_doc_is_reachable_from_the_readme() -> None:
    seen, todo = {README}, [README]
    while todo:
        f = todo.pop()
        for _, target in links(f):
            file = target.partition("#")[0]
            dest = (f.parent / file).resolve() if file and is_relative(target) else None
            if dest and dest.suffix == ".md" and dest.is_file() and dest not in seen:
                seen.add(dest)
                todo.append(dest)
    unreachable = [rel(f) for f in doc_files() if f not in seen]
    assert not unreachable, "no link leads from README.md to: " + ", ".join(unreachable)


# --- skipped blocks: their commands still name real options ------------------------------


def command_options() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    return {name: {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
            for name, cmd in group.commands.items()}


def clcr_lines(text: str) -> Iterator[list[str]]:
    for line in text.replace("\\\n", " ").split("\n"):
        if line.lstrip().startswith("clcr "):
            yield shlex.split(line.replace("[", " ").replace("]", " "), comments=True)[1:]


def test_skipped_commands_name_real_options() -> None:
    known = command_options()
    wrong = []
    for b in ALL_BLOCKS:
        if b.marker != "skip":
            continue
        for args in clcr_lines(b.text):
            if not args or args[0] not in known:
                wrong.append(f"{b.id}: clcr {' '.join(args)}: no such command")
                continue
            wrong += [f"{b.id}: clcr {args[0]} has no option {a}"
                      for a in args[1:] if a.startswith("-") and a.split("=")[0] not in known[args[0]]]
    assert not wrong, "\n".join(wrong)


# --- the workspace the bash blocks run against ---------------------------------------------


@dataclass
class Workspace:
    work: Path  # stands for data/
    cwd: Path  # where a block runs: its relative files (new.csv, preds/) land here
    run: Path | None = None  # stands for data/train/synth-<key>
    eval: Path | None = None  # stands for data/train/synth-<key>/eval/synth-<key>
    raw: Path | None = None  # stands for data/raw/synth/n1200-seed0-v2


def shrink(args: list[str], ws: Workspace) -> list[str]:
    """A block's ``clcr`` command, cut to the tiny workspace: synth at N_SAMPLES, one epoch
    of a narrow model, one seed and one noise seed where the command has several, two
    missing rates, one step of raw noise per medium."""
    sub, rest = args[0], list(args[1:])

    def put(flag: str, value: str, only_if_given: bool = False) -> None:
        if flag in rest:
            rest[rest.index(flag) + 1] = value
        elif not only_if_given:
            rest.extend([flag, value])

    if sub == "extract":
        assert rest[rest.index("--dataset") + 1] == "synth", "a run block extracts only synth"
        put("--n-samples", N_SAMPLES)
    if sub in TRAINING_STAGES:
        for flag, value in SHRINK.items():
            put(flag, value)
        put("--seeds", "0", only_if_given=True)
    if sub == "noise":
        put("--noise-seeds", "0")
        if "--missing-rate" in rest:
            put("--missing-rate", "0,0.8")
        elif "raw" in rest:  # --level raw: one step of each medium
            for flag, value in RAW_STEP.items():
                put(flag, value)
    if sub not in ("predict", "config"):  # predict reads --run; config reads no workspace
        rest += ["--workdir", str(ws.work)]
    return [sub, *rest]


def check_config_file(path: Path) -> None:
    """A TOML file of clcr sections loads through load_toml and resolves for each stage."""
    toml = load_toml(path)
    for section in toml:
        stage_config(section, toml)


def clcr(args: list[str], ws: Workspace, stdout: str | None = None) -> str:
    """Run one (shrunk) clcr command in-process; ``stdout`` is the file of a ``>``."""
    known = command_options()
    if args[0] not in known:
        pytest.skip(f"`clcr {args[0]}` is not a command of this tree yet")
    argv = shrink(args, ws)
    result = CliRunner().invoke(app, argv)
    detail = result.output + ("" if result.exception is None or isinstance(result.exception, SystemExit)
                              else repr(result.exception))
    assert result.exit_code == 0, f"clcr {' '.join(argv)} exited {result.exit_code}:\n{detail}"
    if args[0] == "config":  # it prints TOML in the sections of a --config file
        out = Path(stdout) if stdout else ws.cwd / "config-stdout.toml"
        out.write_text(result.stdout)
        check_config_file(out)
    elif stdout:
        Path(stdout).write_text(result.stdout)
        if stdout.endswith(".json"):
            json.loads(result.stdout)  # --json prints JSON alone on stdout
    return result.stdout


def substitute(text: str, ws: Workspace) -> str:
    """The docs' placeholders replaced by the workspace's folders."""
    if ws.run is not None:
        text = text.replace("data/train/synth-<key>/eval/synth-<key>", str(ws.eval))
        text = text.replace("data/train/synth-<key>", str(ws.run))
        text = re.sub(r"data/raw/synth/n\d+-seed\d+-v\d+", str(ws.raw), text)
    assert "<key>" not in text and "data/" not in text, f"a placeholder this test cannot fill:\n{text}"
    return text


def run_bash(text: str, ws: Workspace) -> None:
    """Run a bash block's commands in order: ``clcr ...`` (``&&``, ``> FILE``) and
    ``python - <<'EOF'`` here-documents; any other shell syntax fails."""
    lines = substitute(text, ws).split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        while line.endswith("\\"):
            line, i = line[:-1] + " " + lines[i], i + 1
        heredoc = re.fullmatch(r"python - <<'?(\w+)'?", line.strip())
        if heredoc:
            end = lines.index(heredoc[1], i)
            subprocess.run([sys.executable, "-"], input="\n".join(lines[i:end]), text=True,
                           cwd=ws.cwd, check=True)
            i = end + 1
            continue
        tokens = shlex.split(line, comments=True)
        odd = [t for t in tokens if t not in ("&&", ">") and re.search(r"[|;&<>$`]", t)]
        assert not odd, f"shell syntax this test does not run: {line!r}"
        commands: list[list[str]] = [[]]
        for t in tokens:
            if t == "&&":
                commands.append([])
            else:
                commands[-1].append(t)
        for command in filter(None, commands):
            stdout = None
            if ">" in command:
                at = command.index(">")
                command, stdout = command[:at], command[at + 1]
            assert command[0] == "clcr", f"a run block runs clcr commands only: {line!r}"
            clcr(command[1:], ws, stdout)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Iterator[Workspace]:
    """synth at N_SAMPLES, extracted, trained and evaluated with the shrunk options (the
    run the ``data/train/synth-<key>`` of the docs stands for), and in its working folder
    the files the predict blocks name: clip07.wav/.mp4/.txt, new.csv, test-media.csv."""
    root = tmp_path_factory.mktemp("docs")
    ws = Workspace(root / "work", root / "cwd")
    ws.cwd.mkdir()
    with contextlib.chdir(ws.cwd):
        for command in (["extract", "--dataset", "synth"], ["train", "--task", "synth"],
                        ["eval", "--task", "synth"]):
            clcr(command, ws)
    (ws.raw,) = (ws.work / "raw" / "synth").iterdir()
    (ws.run,) = (ws.work / "train").iterdir()
    (ws.eval,) = (ws.run / "eval").iterdir()
    with open(ws.raw / "transcripts.csv", newline="", encoding="utf-8") as fh:
        test = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    first = test[0]["id"]
    shutil.copy(ws.raw / "audio" / f"{first}.wav", ws.cwd / "clip07.wav")
    shutil.copy(ws.raw / "video" / f"{first}.mp4", ws.cwd / "clip07.mp4")
    (ws.cwd / "clip07.txt").write_text(test[0]["text"], encoding="utf-8")
    for name, rows in (("new.csv", test[:3]), ("test-media.csv", test)):
        with open(ws.cwd / name, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "audio", "video", "text"])
            w.writerows([r["id"], ws.raw / "audio" / f"{r['id']}.wav", ws.raw / "video" / f"{r['id']}.mp4",
                         r["text"]] for r in rows)
    yield ws


# --- the run blocks ------------------------------------------------------------------------


def needs_workspace(block: Block) -> bool:
    """Python that reads ``data/``, or a bash block with a clcr command other than config."""
    if block.lang == "python":
        return "data/" in block.text
    if block.lang == "bash":
        return any(args[:1] != ["config"] for args in clcr_lines(block.text)) or "python -" in block.text
    return False


def run_block_params() -> list:
    return [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if needs_workspace(b) else [])
            for b in RUN_BLOCKS]


@pytest.mark.parametrize("block", run_block_params())
def test_run_block(block: Block, request, tmp_path: Path) -> None:
    ws = request.getfixturevalue("workspace") if needs_workspace(block) else Workspace(tmp_path, tmp_path)
    with contextlib.chdir(ws.cwd):
        if block.lang == "toml":
            toml = tomllib.loads(block.text)
            if set(toml) <= set(SECTIONS):  # a clcr config file
                path = tmp_path / "block.toml"
                path.write_text(block.text, encoding="utf-8")
                check_config_file(path)
        elif block.lang == "python":
            exec(compile(substitute(block.text, ws), block.id, "exec"), {"__name__": "__docs__"})
        elif block.lang == "bash":
            run_bash(block.text, ws)
        else:
            pytest.fail(f"{block.id}: a run block of language {block.lang!r}")
