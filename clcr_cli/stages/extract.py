"""Stage ``extract``: decode a dataset's media and write its features to the HDF5 store.

Inputs:   a dataset loader's samples (``clcr_cli.datasets``), raw media under its root;
          identified by their content (``clcr_cli.datasets.fingerprint``), not by where
          they lie: an edited manifest, list or transcript, or a changed media file, gives
          a new key.
Params:   :class:`~clcr_cli.config.ExtractConfig` minus the options that cannot change
          the result (declared ``key=False``: the text batch size, and the locations of
          the data, whose content is keyed instead): see :func:`extract_key`.
Outputs:  ``<workdir>/extract/<dataset>-<key>/``
            features.h5   the feature store (layout in ``clcr_cli.store``); its ``settings``
                          attribute records every keyed option and where the data were
                          found, so that ``noise --level raw`` and ``predict`` extract
                          with exactly these options (:func:`extract_config_of`)
            skipped.csv   id, file, reason of every sample left out
            parts/        resumable part files, removed once the store is complete
Cache:    a complete output is reused; a killed run resumes after its last whole part
          (parts are deterministic, so the result equals an uninterrupted run).
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from clcr_cli.cache import (
    LOCK,
    StageDir,
    StageKey,
    complete_outputs,
    produce,
    remove_stale_temps,
    write_csv,
)
from clcr_cli.config import ExtractConfig, extract_config, key_options, options, resolve
from clcr_cli.datasets import LOADERS, load_dataset, skipped_samples
from clcr_cli.datasets.base import Dataset, DatasetOptions, Sample
from clcr_cli.datasets.fingerprint import fingerprint
from clcr_cli.errors import ClcrError, ConfigError, DataError
from clcr_cli.features.perturb import RawNoise
from clcr_cli.progress import progress_bar
from clcr_cli.runtime import resolve_device
from clcr_cli.store import (
    FeatureStore,
    ModalityLayout,
    PartData,
    assemble_store,
    read_part_skipped,
    write_part,
)

# 2: the data enter the key by content (datasets.fingerprint), no longer by their paths
EXTRACT_VERSION = 2
STORE_FILE = "features.h5"
SKIPPED_FILE = "skipped.csv"
SKIPPED_HEADER = ["id", "file", "reason"]  # one row per sample left out
SOURCE_LAYOUT = {
    "text": ModalityLayout("levels", "text", "float32"),
    "audio": ModalityLayout("sequence", "audio", "float32"),
    "array": ModalityLayout("sequence", "array", "float32"),
    "video": ModalityLayout("frames", "video", "uint8"),
    "flow": ModalityLayout("frames", "flow", "uint8"),
}
# the options that find the data: no part of the key (the data's content is), but recorded
LOADER_OPTIONS = ("root", "manifest", "split_file", "verify_inputs")


def dataset_options(cfg: ExtractConfig, workdir: Path) -> DatasetOptions:
    """The loader's options, with the dataset root resolved (default ``<workdir>/raw/<name>``)."""
    if cfg.root is not None:
        root = Path(cfg.root).expanduser().resolve()
    elif cfg.manifest is not None:
        root = Path(cfg.manifest).expanduser().resolve().parent
    else:
        raw_name = "synth" if cfg.dataset.startswith("synth") else cfg.dataset
        root = (Path(workdir) / "raw" / raw_name).resolve()
    return DatasetOptions(
        root=root,
        split_file=None if cfg.split_file is None else Path(cfg.split_file).expanduser().resolve(),
        fold=cfg.fold,
        aligned=cfg.aligned,
        manifest=None if cfg.manifest is None else Path(cfg.manifest).expanduser().resolve(),
        target=cfg.target,  # type: ignore[arg-type]
        n_samples=cfg.n_samples,
        seed=cfg.seed,
    )


def extract_key(cfg: ExtractConfig, dataset: Dataset) -> StageKey:
    """The cache key: every option that can change what the store contains, and the
    content of the data (``inputs["data"]``, see ``clcr_cli.datasets.fingerprint``)."""
    data = fingerprint(dataset, verify=cfg.verify_inputs)
    return StageKey("extract", EXTRACT_VERSION, cfg.dataset, key_options(cfg), {"data": data})


def _provenance(dataset: Dataset, cfg: ExtractConfig) -> dict[str, Any]:
    """Where the data were read from: the store records it, the key does not. ``loader``
    holds the options that find the data but are no part of the key, so that the samples
    can be found again (:func:`extraction_of`)."""
    given = {name: getattr(cfg, name) for name in LOADER_OPTIONS}
    loader = {k: v if v is None or isinstance(v, bool) else str(Path(v).expanduser().resolve())
              for k, v in given.items()}
    return {"root": str(dataset.root), "sources": [str(p) for p in dataset.sources], "loader": loader}


class Featurizer:
    """Turns samples into per-modality arrays with the shared extractors.

    ``sources`` maps each modality to extract to its source (a dataset's
    ``info.modalities``, or some of them); ``noise`` perturbs the media before extraction
    (``clcr noise --level raw``); ``root`` is named by errors about a sample as a whole.
    Per-sample failures raise :class:`DataError` naming the sample's file; the caller
    decides (``--on-error``) whether that stops the run or skips the sample.
    """

    def __init__(
        self,
        sources: Mapping[str, str],
        cfg: ExtractConfig,
        device: str,
        root: Path,
        noise: RawNoise | None = None,
    ) -> None:
        self.sources = dict(sources)
        self.cfg, self.root, self.noise = cfg, root, noise
        self.text_encoder = None
        if "text" in self.sources.values():
            from clcr_cli.features.text import TextLevelEncoder

            self.text_encoder = TextLevelEncoder(
                cfg.text_model,
                layers=cfg.text_layers,
                max_len=cfg.text_max_len,
                device=device,
                batch_size=cfg.text_batch,
            )

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"modalities": self.sources}
        if self.text_encoder is not None:
            out["text"] = self.text_encoder.info
        return out

    def layouts(self) -> dict[str, ModalityLayout]:
        """How each modality is stored, from its source."""
        return {m: SOURCE_LAYOUT[s] for m, s in self.sources.items()}

    def _media(self, sample: Sample, modality: str, source: str) -> np.ndarray:
        cfg, noise = self.cfg, self.noise
        if source == "audio":
            from clcr_cli.features.audio import audio_features, load_audio

            path = sample.audio or sample.video
            if path is None:
                raise DataError(self.root, f"sample {sample.id}: no audio file")
            y = load_audio(path, cfg.sample_rate, window=sample.window, max_seconds=cfg.max_seconds)
            if noise is not None:
                y = noise.audio(y, sample.id)
            return audio_features(
                y, cfg.sample_rate, cfg.audio_features, cfg.n_mels, cfg.n_mfcc, cfg.hop_length, cfg.n_fft
            )
        if source in ("video", "flow"):
            from clcr_cli.features.video import read_frames

            if sample.video is None:
                raise DataError(self.root, f"sample {sample.id}: no video file")
            frames = read_frames(
                sample.video, cfg.num_frames, cfg.frame_size, fps=cfg.fps, window=sample.window,
                perturb=None if noise is None else noise.frames(sample.id),
            )
            if source == "video":
                return frames
            from clcr_cli.features.flow import flow_to_uint8, optical_flow

            if len(frames) < 2:
                raise DataError(sample.video, "optical flow needs at least two frames")
            return flow_to_uint8(optical_flow(frames))
        if source == "array":
            if modality not in sample.arrays:
                raise DataError(self.root, f"sample {sample.id}: no {modality!r} array")
            a = np.asarray(sample.arrays[modality], dtype="float32")
            if a.ndim != 2 or a.shape[0] == 0:
                raise DataError(self.root, f"sample {sample.id}: {modality!r} is not a (T, F) sequence")
            return a
        raise ClcrError(f"unknown modality source {source!r}")

    def _text(self, sample: Sample) -> str:
        """A sample's transcript: inline, or read from its file (a bad file fails the sample)."""
        if sample.text_file is not None:
            from clcr_cli.features.text import read_text_file

            text = read_text_file(sample.text_file)
        elif not (sample.text or "").strip():
            raise DataError(self.root, f"sample {sample.id}: empty transcript")
        else:
            text = sample.text
        return text if self.noise is None else self.noise.text(text, sample.id)

    def part(self, samples: list[Sample]) -> tuple[PartData, list[tuple[Sample, DataError]]]:
        """Featurize ``samples``; failed samples come back with their error, not in the part."""
        feats: dict[str, dict[int, np.ndarray]] = {m: {} for m in self.sources}
        failed: dict[int, DataError] = {}
        for i, sample in enumerate(samples):
            for modality, source in self.sources.items():
                if source == "text":
                    continue
                try:
                    feats[modality][i] = self._media(sample, modality, source)
                except DataError as err:
                    failed.setdefault(i, err)
        for modality, source in self.sources.items():
            if source != "text":
                continue
            texts: dict[int, str] = {}
            for i, sample in enumerate(samples):
                if i in failed:
                    continue
                try:
                    texts[i] = self._text(sample)
                except DataError as err:
                    failed[i] = err
            if texts:
                levels, lengths = self.text_encoder.encode(list(texts.values()))
                for j, i in enumerate(texts):
                    feats[modality][i] = levels[j][:, : lengths[j]]
        part = PartData()
        for i, sample in enumerate(samples):
            if i in failed:
                continue
            part.ids.append(sample.id)
            part.splits.append(sample.split)
            part.labels.append(float(sample.label))
            for modality in self.sources:
                part.features.setdefault(modality, []).append(feats[modality][i])
        return part, [(samples[i], failed[i]) for i in sorted(failed)]


def _package_versions() -> dict[str, str]:
    names = ("clcr", "torch", "transformers", "librosa", "opencv-python-headless", "av", "h5py")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def latest_store(workdir: Path, dataset: str) -> Path | None:
    """The most recently completed ``features.h5`` of ``dataset`` under ``workdir``, if any."""
    found = complete_outputs(workdir, "extract", dataset)
    return found[-1] / STORE_FILE if found else None


def resolve_store(
    dataset: str,
    workdir: Path,
    cfg: ExtractConfig | None,
    device: str = "auto",
    console: Console | None = None,
) -> Path:
    """The store a downstream stage reads.

    With explicit extract options (``cfg``), exactly that extraction (run or reused).
    Without, the latest complete extraction of the dataset in ``workdir`` -- so that
    ``clcr extract --dataset cremad --root ...`` then ``clcr train --task cremad`` just
    works -- or, when there is none, an extraction with the default options.
    """
    console = console or Console(stderr=True)
    if cfg is None:
        found = latest_store(workdir, dataset)
        if found is not None:
            console.print(f"using extract {found.parent.name} (the latest for {dataset})")
            return found
        if dataset not in LOADERS:  # a manifest's dataset: its CSV is needed to extract it
            raise ConfigError(f"no extracted features for {dataset!r} in {workdir}, and no built-in dataset of "
                              f"that name: extract it first (clcr extract --dataset {dataset} --manifest FILE.csv)")
        console.print(f"no extracted features for {dataset} yet: extracting with default options")
        cfg = extract_config({}, {"dataset": dataset})
    if cfg.dataset != dataset:
        raise ConfigError(f"extract options are for {cfg.dataset!r}, not the task {dataset!r}")
    return run_extract(cfg, workdir, device=device, console=console)


def _extract_parts(
    samples: list[Sample],
    featurizer: Featurizer,
    cfg: ExtractConfig,
    parts: list[Path],
    todo: list[int],
    console: Console,
    after_part: Callable[[int], None] | None,
) -> None:
    """Featurize and write the parts numbered ``todo`` (each atomically, in order)."""
    total = sum(len(samples[i * cfg.part_size : (i + 1) * cfg.part_size]) for i in todo)
    with progress_bar(console, unit="clips") as progress:
        task = progress.add_task(f"extract {cfg.dataset}", total=total)
        for i in todo:
            chunk = samples[i * cfg.part_size : (i + 1) * cfg.part_size]
            part, failed = featurizer.part(chunk)
            for sample, err in failed:
                if cfg.on_error == "fail":
                    raise err
                part.skipped.append((sample.id, str(err.path), err.problem))
            write_part(parts[i], part, featurizer.layouts())
            progress.advance(task, len(chunk))
            if after_part is not None:
                after_part(i)


def build_store(
    folder: Path,
    samples: list[Sample],
    featurizer: Featurizer,
    cfg: ExtractConfig,
    attrs: dict[str, Any],
    console: Console,
    after_part: Callable[[int], None] | None = None,
    merge_only: bool = False,
) -> tuple[int, list[tuple[str, str, str]]]:
    """Featurize the parts of ``samples`` (``cfg.part_size`` each) that ``folder/parts``
    does not hold yet, then join every part into ``folder/features.h5`` with ``attrs``
    and remove the parts: (samples stored, (id, file, reason) of every sample skipped).
    With ``merge_only`` a missing part is an error instead."""
    parts = _parts(folder, len(samples), cfg.part_size)
    parts[0].parent.mkdir(exist_ok=True)
    remove_stale_temps(parts[0].parent)  # parts of writers that died (shards are done by now)
    todo = [k for k, p in enumerate(parts) if not p.exists()]
    if merge_only and todo:
        raise ClcrError(
            f"{parts[0].parent}: cannot merge, {len(todo)} of {len(parts)} parts are missing "
            f"(first: {parts[todo[0]].name}); run the missing shards first"
        )
    if len(todo) < len(parts):
        console.print(f"resuming extract {cfg.dataset}: {len(parts) - len(todo)}/{len(parts)} parts done")
    _extract_parts(samples, featurizer, cfg, parts, todo, console, after_part)
    skipped = [row for p in parts for row in read_part_skipped(p)]
    n = assemble_store(parts, folder / STORE_FILE, featurizer.layouts(), attrs)
    for p in parts:
        p.unlink()
    parts[0].parent.rmdir()
    return n, skipped


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


def _parts(folder: Path, n_samples: int, part_size: int) -> list[Path]:
    """The paths of the part files of ``n_samples`` samples (``part_size`` each)."""
    n_parts = (n_samples + part_size - 1) // part_size
    return [folder / "parts" / f"part-{i:05d}.h5" for i in range(n_parts)]


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
    parts = _parts(stage.path, len(dataset.samples), cfg.part_size)
    i, n = shard
    with stage.lock(lock_timeout, on_wait=console.print, name=f"{LOCK}-shard-{i}-of-{n}"):
        stage.begin()
        parts[0].parent.mkdir(exist_ok=True)
        todo = [k for k in range(i, len(parts), n) if not parts[k].exists()]
        featurizer = Featurizer(dataset.info.modalities, cfg, resolve_device(device), dataset.root)
        _extract_parts(dataset.samples, featurizer, cfg, parts, todo, console, after_part)
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
    featurizer = Featurizer(dataset.info.modalities, cfg, resolve_device(device), dataset.root)
    attrs = {
        "dataset": cfg.dataset,
        "target": dataset.info.target,
        "class_names": list(dataset.info.class_names),
        "extract_key": stage.key.digest,
        "settings": {**stage.key.params, **_provenance(dataset, cfg), **featurizer.settings()},
        "versions": _package_versions(),
    }
    n, failed = build_store(stage.path, dataset.samples, featurizer, cfg, attrs, console, after_part, merge_only)
    skipped = [(s.id, "", s.reason) for s in skipped_samples(dataset)] + failed
    write_csv(stage.path / SKIPPED_FILE, SKIPPED_HEADER, skipped)
    return {"samples": n, "skipped": len(skipped), "seconds": round(time.monotonic() - started, 2)}


# --- the extraction a store was made from ---------------------------------------------------


def extract_config_of(store: FeatureStore) -> ExtractConfig:
    """The extract options ``store`` was made with, from its ``settings`` attribute: every
    option of its key, and where the data were found (recorded since this version; a store
    without that record is taken to have used the default locations)."""
    settings = store.settings
    keyed = [name for name, f in options(ExtractConfig).items() if f.metadata.get("key", True)]
    absent = [name for name in keyed if name not in settings]
    if absent:
        raise DataError(store.path, f"its settings lack {', '.join(absent)}: "
                                    "extract it again with this version of clcr")
    values = {name: settings[name] for name in keyed}
    values.update({k: v for k, v in settings.get("loader", {}).items() if k in LOADER_OPTIONS and v is not None})
    return resolve(ExtractConfig, [(f"{store.path}: settings", values)])


@dataclass(frozen=True)
class Extraction:
    """A store and what it was made from: its path and key, its extract options and the
    dataset's samples (found again, with the same content)."""

    store: Path
    key: str
    cfg: ExtractConfig
    dataset: Dataset


def extraction_of(store_path: Path, workdir: Path) -> Extraction:
    """Find again the samples the store at ``store_path`` was extracted from, with its
    options (:func:`extract_config_of`), and check that they are the same: options and
    data must give the store's own key, or the media have changed (or moved) since."""
    with FeatureStore(store_path) as store:
        cfg, key = extract_config_of(store), store.extract_key
        recorded = "loader" in store.settings
    try:
        dataset = load_dataset(cfg.dataset, dataset_options(cfg, workdir))
    except ClcrError as exc:
        if recorded:
            raise
        raise DataError(store_path, f"cannot find its data again ({exc}): it was extracted before clcr "
                                    "recorded where the data lie; extract it again") from None
    if extract_key(cfg, dataset).digest != key:
        raise DataError(store_path, "its dataset is not what it was extracted from (the media, lists or "
                                    "manifest changed or moved since): extract it again")
    return Extraction(Path(store_path), key, cfg, dataset)
