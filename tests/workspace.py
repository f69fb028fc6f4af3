"""Helpers of the tests that work on a workspace, imported by name (``from workspace import
clcr``: pytest puts tests/ on the import path, as it does tests/model/ for model_fixtures):

- the command line as a user runs it (:func:`clcr`) and its one error line
  (:func:`error_line`), on the workspace of the ``made`` and ``ws`` fixtures of
  tests/conftest.py (:data:`TRAIN`, :func:`train_dir`, :func:`extract_dir`);
- byte snapshots of a workspace (:func:`snapshot`, :func:`kept`): a command that fails
  leaves the complete outputs made before it byte-identical; :func:`rewrite` edits an
  output as a user would on purpose, its manifest updated, so that the content itself
  must be refused; :func:`temporaries` finds what an interrupted write left behind;
- the synth recipe of the stage tests (:data:`EXTRACT`, :data:`QUICK`, :func:`extract_cfg`:
  that of the ``synth_workspace`` fixture), and :func:`read_csv`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from typer.testing import CliRunner, Result

from clcr_cli.cli import app
from clcr_cli.config import ExtractConfig, extract_config

# --- the command line, on the workspace of the made and ws fixtures ---------------------------


TRAIN = ["--task", "synth", "--epochs", "1", "--d", "16", "--num-heads", "2", "--batch-size", "16"]


def clcr(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result: Result) -> str:
    """The one error line of a failed command (exit 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def train_dir(root: Path) -> Path:
    (run,) = (root / "data" / "train").iterdir()
    return run


def extract_dir(root: Path) -> Path:
    (out,) = (root / "data" / "extract").iterdir()
    return out


# --- what a workspace holds, byte for byte ----------------------------------------------------


def kept(before: dict[str, bytes], workdir: Path) -> bool:
    """True when every file of ``before`` is still there, byte for byte (a failed stage may
    leave its own partial output beside them)."""
    return {k: v for k, v in snapshot(workdir).items() if k in before} == before


def snapshot(workdir: Path) -> dict[str, bytes]:
    """Every file of every stage output (locks aside, which name their last holder)."""
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in sorted(workdir.rglob("*"))
        if p.is_file() and not p.name.startswith(".lock") and p.parts[len(workdir.parts)] != "raw"
    }


def rewrite(path: Path, content: bytes) -> None:
    """Replace a file of a complete output and record it in the output's manifest, as a
    deliberate edit would: the checksums then pass and the content itself must be refused."""
    path.write_bytes(content)
    manifest_path = path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][path.name] = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    manifest_path.write_text(json.dumps(manifest))


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


# --- the synth recipe of the stage tests --------------------------------------------------------


EXTRACT = {"dataset": "synth", "n_samples": 160, "part_size": 40}  # 24 test samples
QUICK = dict(epochs=12, batch_size=16, lr=3e-3, optimizer="adamw", d=32, num_heads=2)


def extract_cfg(task: str = "synth") -> ExtractConfig:
    return extract_config({}, {**EXTRACT, "dataset": task})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
