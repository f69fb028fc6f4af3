"""Stage ``extract``: decode a dataset's media and write its features to the HDF5 store.

Inputs:   a dataset loader's samples (``clcr_cli.datasets``), raw media under its root;
          identified by their content (``clcr_cli.datasets.fingerprint``), not by where
          they lie: an edited manifest, list or transcript, or a changed media file, gives
          a new key.
Params:   :class:`~clcr_cli.config.ExtractConfig` minus the options that cannot change
          the result (declared ``key=False``: the text batch size, and the locations of
          the data, whose content is keyed instead): see ``features.featurize.extract_key``.
Outputs:  ``<workdir>/extract/<dataset>-<key>/``
            features.h5   the feature store (layout in ``clcr_cli.store``); its ``settings``
                          attribute records every keyed option and where the data were
                          found, so that ``noise --level raw`` and ``predict`` extract
                          with exactly these options (``runs.extract_config_of``)
            skipped.csv   id, file, reason of every sample left out
            parts/        resumable part files, removed once the store is complete
Cache:    a complete output is reused; a killed run resumes after its last whole part
          (parts are deterministic, so the result equals an uninterrupted run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from clcr_cli.cache import LOCK, StageDir, produce, write_csv
from clcr_cli.config import ExtractConfig
from clcr_cli.datasets import load_dataset, skipped_samples
from clcr_cli.datasets.base import Dataset
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.featurize import (
    Featurizer,
    build_store,
    dataset_options,
    extract_key,
    extract_parts,
    outside_root,
    part_paths,
    provenance,
    store_attrs,
)
from clcr_cli.runs import SKIPPED_FILE, SKIPPED_HEADER, STORE_FILE
from clcr_cli.runtime import resolve_device


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: I must be in 0..N-1")
    return i, n


def run_extract(
    cfg: ExtractConfig,
    workdir: Path,
    *,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
    lock_timeout: float | None = None,
    after_part: Callable[[int], None] | None = None,
    shard: tuple[int, int] | None = None,
    merge_only: bool = False,
) -> Path:
    """Run (or reuse, or resume) the extract stage; return the path of ``features.h5``.

    With ``shard=(i, n)`` only the parts whose number is i modulo n are extracted (under a
    lock of their own, so shards run side by side) and nothing is assembled; the parts
    folder is returned. A later run without ``shard`` extracts what is still missing and
    assembles the store; with ``merge_only`` it refuses to extract and only joins.
    """
    console = console or Console(stderr=True)
    if shard is not None and force:
        raise ConfigError("--force redoes the whole output: use it without --shard")
    if shard is not None and merge_only:
        raise ConfigError("--shard and --merge: a shard extracts its parts, --merge joins them all; give one")
    options = dataset_options(cfg, workdir)
    dataset = load_dataset(cfg.dataset, options)
    if not dataset.samples:
        raise DataError(options.root, "the dataset has no samples")
    stage = StageDir(workdir, extract_key(cfg, dataset))
    store = stage.path / STORE_FILE
    if shard is not None and not stage.is_complete():  # a complete output is reused below
        return _extract_shard(stage, cfg, dataset, shard, device, console, lock_timeout, after_part)

    def work() -> dict[str, Any]:
        return _extract_all(stage, cfg, dataset, merge_only, device, console, after_part)

    summary = produce(stage, work, force=force, console=console, lock_timeout=lock_timeout)
    if summary is not None:
        console.print(f"[green]extracted[/] {cfg.dataset}: {summary['samples']} samples, "
                      f"{summary['skipped']} skipped -> {store}")
    return store


def _extract_shard(
    stage: StageDir,
    cfg: ExtractConfig,
    dataset: Dataset,
    shard: tuple[int, int],
    device: str,
    console: Console,
    lock_timeout: float | None,
    after_part: Callable[[int], None] | None,
) -> Path:
    """Extract the missing parts of one shard, under that shard's own lock; the output is
    completed later by a run without a shard (``--merge``)."""
    parts = part_paths(stage.path, len(dataset.samples), cfg.part_size)
    i, n = shard
    with stage.lock(lock_timeout, on_wait=console.print, name=f"{LOCK}-shard-{i}-of-{n}"):
        stage.begin()
        parts[0].parent.mkdir(exist_ok=True)
        todo = [k for k in range(i, len(parts), n) if not parts[k].exists()]
        featurizer = Featurizer(dataset.info.modalities, cfg, resolve_device(device), dataset.root,
                                samples=dataset.samples)
        extract_parts(dataset.samples, featurizer, cfg, parts, todo, console, after_part)
    console.print(
        f"[green]shard {i}/{n}[/] of extract {cfg.dataset} done ({len(range(i, len(parts), n))} parts); "
        "join the shards with `clcr extract --merge` and the same options"
    )
    return parts[0].parent


def _extract_all(
    stage: StageDir,
    cfg: ExtractConfig,
    dataset: Dataset,
    merge_only: bool,
    device: str,
    console: Console,
    after_part: Callable[[int], None] | None,
) -> dict[str, Any]:
    """Extract every missing part, then join all parts into the store; the summary."""
    started = time.monotonic()
    featurizer = Featurizer(dataset.info.modalities, cfg, resolve_device(device), dataset.root,
                            samples=dataset.samples)
    outside = outside_root(dataset)
    if outside:
        console.print(f"[yellow]note:[/] {len(outside)} input file(s) lie outside {dataset.root} and are read as "
                      f"given (first: {outside[0]} -> {outside[0].resolve()})", soft_wrap=True, highlight=False)
    if featurizer.ids_source is not None:
        console.print(f"text ids of {cfg.dataset}: " + ("the pickle's text_bert, as its tokenizer gives them"
                      if featurizer.ids_source == "text_bert" else "raw_text tokenised by " + cfg.text_model))
    attrs = store_attrs(
        featurizer, cfg.dataset, {**stage.key.params, **provenance(dataset, cfg)},
        target=dataset.info.target, class_names=dataset.info.class_names, extract_key=stage.key.digest,
    )
    n, failed = build_store(stage.path / STORE_FILE, dataset.samples, featurizer, cfg, attrs, console,
                            after_part, merge_only)
    skipped = [(s.id, "", s.reason) for s in skipped_samples(dataset)] + failed
    write_csv(stage.path / SKIPPED_FILE, SKIPPED_HEADER, skipped)
    return {"samples": n, "skipped": len(skipped), "seconds": round(time.monotonic() - started, 2)}
