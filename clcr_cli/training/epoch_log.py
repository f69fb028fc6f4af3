"""What a run records while it trains: history.csv, TensorBoard event files and train.log.

Every epoch writes one row to ``history.csv`` (rewritten whole, atomically) and the same
numbers as TensorBoard scalars into the run's folder (``tensorboard --logdir data/train``
shows every run), tagged by :func:`tensorboard_tag`: ``train/<term>`` for each loss term,
``valid/<metric>``, ``lr``, ``participation/level_<l>``, ``level_weights/level_<l>`` and
``time/...``. A resumed run purges the events of the epochs it trains again, so a killed
and resumed run shows one value per epoch.

``train.log`` keeps what the run printed (:class:`RunLog`), appended across resumes. When
the console is not a terminal (a SLURM log, CI, ``2>log``) each epoch is also printed as
one plain line, since a progress bar there would collapse into a single final line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from clcr_cli.cache import write_csv

HISTORY = "history.csv"
LOG = "train.log"
TERM_GROUPS = {"participation_": "participation", "level_weight_": "level_weights"}


def tensorboard_tag(column: str) -> str:
    """The TensorBoard tag of a history.csv column: ``train_loss`` -> ``train/loss``,
    ``valid_acc`` -> ``valid/acc``, ``train_participation_0`` -> ``participation/level_1``,
    ``valid_level_weight_2`` -> ``level_weights/level_3``, ``seconds`` -> ``time/seconds``."""
    split, _, name = column.partition("_")
    if split in ("train", "valid", "test"):
        for prefix, group in TERM_GROUPS.items():
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                return f"{group}/level_{int(name[len(prefix):]) + 1}"
        return f"{split}/{name}"
    return "lr" if column == "lr" else f"time/{column}"


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """history.csv: one row per epoch; the columns are every key of any row, in order of
    first appearance (a row without one leaves it empty)."""
    header = list(dict.fromkeys(k for row in rows for k in row))
    write_csv(path, header, ([row.get(k, "") for k in header] for row in rows))


class RunLog:
    """A run's messages, printed to ``console`` and appended to ``train.log`` (``path``)."""

    def __init__(self, console: Console, path: Path | None) -> None:
        self.console = console
        self._file = None if path is None else open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._log = None if self._file is None else Console(
            file=self._file, width=160, no_color=True, highlight=False, soft_wrap=True, log_path=False)

    @property
    def is_terminal(self) -> bool:
        return self.console.is_terminal

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.console.print(*objects, **kwargs)
        if self._log is not None:
            self._log.print(*objects, **kwargs)
            self._file.flush()

    def to_file(self, text: str) -> None:
        """A line for train.log only."""
        if self._log is not None:
            self._log.print(text)
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._log = None


def epoch_line(row: dict[str, Any], epochs: int, metric: str) -> str:
    """One epoch in words: ``epoch 3/10: train loss 1.234 (task 1.10, intra 0.31, ...),
    valid loss 1.30 acc 0.812, lr 0.002, 12.3 s``."""
    terms = ", ".join(f"{k[6:]} {v:.4g}" for k, v in row.items()
                      if k.startswith("train_") and k != "train_loss" and isinstance(v, float))
    return (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} ({terms}), "
            f"valid loss {row['valid_loss']:.4f} {metric} {row[f'valid_{metric}']:.4f}, "
            f"lr {row['lr']:.3g}, {row['seconds']:.1f} s")


class EpochLog:
    """history.csv, the TensorBoard events and the epoch lines of one run in ``out``.

    Only the main process writes (``main``); ``start`` is the number of epochs already done
    (their events are purged and written again by the resumed run's first epochs: none are).
    """

    def __init__(self, out: Path, start: int, epochs: int, metric: str, log: RunLog, main: bool) -> None:
        self.out, self.epochs, self.metric, self.log, self.main = out, epochs, metric, log, main
        self.writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out), purge_step=start + 1 if start else None)

    def record(self, history: list[dict[str, Any]]) -> None:
        """The last row of ``history`` (one epoch), written everywhere it goes."""
        row = history[-1]
        line = epoch_line(row, self.epochs, self.metric)
        if self.main:
            write_history(self.out / HISTORY, history)
            for column, value in row.items():
                if column != "epoch" and isinstance(value, int | float):
                    self.writer.add_scalar(tensorboard_tag(column), value, row["epoch"])
            self.writer.flush()
        if self.log.is_terminal:
            self.log.to_file(line)
        else:
            self.log.print(line, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
