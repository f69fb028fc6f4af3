"""From a dataset's samples to a feature store: the featurizer, the parts, the store's attributes.

Every stage that extracts features -- ``extract`` (a dataset), ``perturb`` (a split's media
with noise put on them) and ``predict`` (new media) -- goes through this module, so they
extract with the same code and write stores with the same attributes (:func:`store_attrs`).

- :class:`Featurizer` turns samples into per-modality arrays with the shared extractors
  (``features/audio.py``, ``video.py``, ``flow.py``, ``text.py``);
- :func:`build_store` writes resumable part files (``store.write_part``) and joins them
  into ``features.h5`` (``store.assemble_store``);
- :func:`dataset_options` and :func:`extract_key` say where a dataset lies and what
  identifies an extraction of it: its keyed options and the content of its data.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from clcr_cli.cache import StageKey, remove_stale_temps
from clcr_cli.config import ExtractConfig, key_options
from clcr_cli.datasets.base import Dataset, DatasetOptions, Sample
from clcr_cli.datasets.fingerprint import fingerprint
from clcr_cli.errors import ClcrError, DataError
from clcr_cli.features.perturb import RawNoise
from clcr_cli.progress import progress_bar
from clcr_cli.store import ModalityLayout, PartData, assemble_store, read_part_skipped, write_part

# 2: the data enter the key by content (datasets.fingerprint), no longer by their paths
EXTRACT_VERSION = 2
SOURCE_LAYOUT = {
    "text": ModalityLayout("levels", "text", "float32"),
    "audio": ModalityLayout("sequence", "audio", "float32"),
    "array": ModalityLayout("sequence", "array", "float32"),
    "video": ModalityLayout("frames", "video", "uint8"),
    "flow": ModalityLayout("frames", "flow", "uint8"),
}
TOKENS_LAYOUT = ModalityLayout("tokens", "text", "int32")  # --text-tokens
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
        ave_reading=cfg.ave_reading,
        aligned=cfg.aligned,
        manifest=None if cfg.manifest is None else Path(cfg.manifest).expanduser().resolve(),
        target=cfg.target,  # type: ignore[arg-type]
        n_samples=cfg.n_samples,
        seed=cfg.seed,
    )


def extract_key(cfg: ExtractConfig, dataset: Dataset) -> StageKey:
    """The extract stage's cache key: every option that can change what the store contains,
    and the content of the data (``inputs["data"]``, see ``clcr_cli.datasets.fingerprint``)."""
    data = fingerprint(dataset, verify=cfg.verify_inputs)
    return StageKey("extract", EXTRACT_VERSION, cfg.dataset, key_options(cfg), {"data": data})


def provenance(dataset: Dataset, cfg: ExtractConfig) -> dict[str, Any]:
    """Where the data were read from: the store records it, the key does not. ``loader``
    holds the options that find the data but are no part of the key, so that the samples
    can be found again (``runs.extraction_of``)."""
    given = {name: getattr(cfg, name) for name in LOADER_OPTIONS}
    loader = {k: v if v is None or isinstance(v, bool) else str(Path(v).expanduser().resolve())
              for k, v in given.items()}
    return {"root": str(dataset.root), "sources": [str(p) for p in dataset.sources], "loader": loader,
            "outside_root": [str(p) for p in outside_root(dataset)[:OUTSIDE_LISTED]]}


OUTSIDE_LISTED = 20  # files outside the dataset's folder named in the store's settings


def outside_root(dataset: Dataset) -> list[Path]:
    """The input files of ``dataset`` that lie outside its root once every symlink is
    followed: a manifest may name them (``..``, absolute paths, links), and they are read
    as given -- the policy is to follow them and say so (``extract`` prints the count and
    the first, the store records the first :data:`OUTSIDE_LISTED`)."""
    root = Path(dataset.root).resolve()
    out = []
    for sample in dataset.samples:
        for path in (sample.audio, sample.video, sample.text_file):
            if path is not None and not Path(path).resolve().is_relative_to(root):
                out.append(Path(path))
    return out


def package_versions() -> dict[str, str]:
    """The versions of the packages that decide what a store holds."""
    names = ("clcr", "torch", "transformers", "librosa", "opencv-python-headless", "av", "h5py")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


PEER_SPECTROGRAMS = ("stft", "fbank", "spectrogram")  # features/spectrogram.py


def _peer_spectrogram(y: np.ndarray, cfg: ExtractConfig) -> np.ndarray:
    """The audio-visual peers' spectrograms (``features/spectrogram.py``), time-major."""
    from clcr_cli.features.spectrogram import ave_spectrogram, kaldi_fbank, ogm_stft

    if cfg.audio_features == "stft":
        return ogm_stft(y, cfg.sample_rate)
    if cfg.audio_features == "fbank":
        return kaldi_fbank(y, cfg.sample_rate, num_mel_bins=cfg.n_mels)
    return ave_spectrogram(y, cfg.sample_rate)


def _native_flow(sample: Sample, cfg: ExtractConfig, noise: RawNoise | None) -> np.ndarray:
    """``--flow native``: Farneback flow from each sampled frame to the next one of the video."""
    from clcr_cli.features.flow import flow_to_uint8
    from clcr_cli.features.native_flow import flow_at_sampled_times

    if noise is not None:
        raise ClcrError("noise --level raw: optical flow between native frames (--flow native) cannot be "
                        "perturbed; extract with --flow sampled")
    return flow_to_uint8(flow_at_sampled_times(sample.video, cfg.num_frames, cfg.frame_size, fps=cfg.fps,
                                               window=sample.window))


def _tvl1_flow(sample: Sample, cfg: ExtractConfig, noise: RawNoise | None) -> np.ndarray:
    """``--flow tvl1``: the video's pre-extracted u/v JPEGs (``features/flow_frames.py``)."""
    from clcr_cli.features.flow_frames import read_flow_frames

    if cfg.flow_root is None:
        raise ClcrError("--flow tvl1 needs --flow-root, the folder of the TV-L1 u/v JPEGs")
    if noise is not None:
        raise ClcrError("noise --level raw: pre-extracted TV-L1 flow cannot be perturbed")
    root, video = Path(cfg.flow_root).expanduser(), Path(sample.video).stem
    folder = root / "u" / video if (root / "u" / video).is_dir() else root / video
    return read_flow_frames(folder, cfg.num_frames, cfg.frame_size)


class Featurizer:
    """Turns samples into per-modality arrays with the shared extractors.

    ``sources`` maps each modality to extract to its source (a dataset's
    ``info.modalities``, or some of them); ``noise`` perturbs the media before extraction
    (``clcr noise --level raw``); ``root`` is named by errors about a sample as a whole.
    With ``--text-tokens`` text is stored as token ids (kind ``tokens``), MMSA's own
    ``text_bert`` ids where ``samples`` show that the text model's tokenizer gives the same
    ids (:meth:`_ids_source`: decided once for the dataset, so parts and resumes agree).
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
        samples: list[Sample] = (),
    ) -> None:
        self.sources = dict(sources)
        self.cfg, self.root, self.noise = cfg, root, noise
        self.text_encoder = None
        self.ids_source: str | None = None  # --text-tokens: "text_bert" (the pickle's) or "raw_text"
        if "text" in self.sources.values():
            from clcr_cli.features.text import TextLevelEncoder

            self.text_encoder = TextLevelEncoder(
                cfg.text_model,
                layers=cfg.text_layers,
                max_len=cfg.text_max_len,
                device=device,
                batch_size=cfg.text_batch,
                load_model=not cfg.text_tokens,
            )
            if cfg.text_tokens:
                self.ids_source = self._ids_source(list(samples))

    def _ids_source(self, samples: list[Sample], checked: int = 32) -> str:
        """``text_bert`` when every one of the first ``checked`` samples that has MMSA's ids
        is tokenised to exactly those ids (the same vocabulary and length), else ``raw_text``."""
        having = [s for s in samples if "text_bert" in s.arrays and (s.text or "").strip()][:checked]
        if not having or any(s.arrays["text_bert"].shape[-1] != self.cfg.text_max_len for s in having):
            return "raw_text"
        ids, _ = self.text_encoder.tokens([s.text for s in having])
        same = all(np.array_equal(ids[i, :2], s.arrays["text_bert"][:2]) for i, s in enumerate(having))
        return "text_bert" if same else "raw_text"

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"modalities": self.sources}
        if self.text_encoder is not None:
            out["text"] = {**self.text_encoder.info,
                           **({"ids": self.ids_source} if self.ids_source is not None else {})}
        return out

    def layouts(self) -> dict[str, ModalityLayout]:
        """How each modality is stored, from its source (text as ``tokens`` with --text-tokens)."""
        return {m: TOKENS_LAYOUT if s == "text" and self.cfg.text_tokens else SOURCE_LAYOUT[s]
                for m, s in self.sources.items()}

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
            if cfg.audio_features in PEER_SPECTROGRAMS:
                return _peer_spectrogram(y, cfg)
            return audio_features(
                y, cfg.sample_rate, cfg.audio_features, cfg.n_mels, cfg.n_mfcc, cfg.hop_length, cfg.n_fft
            )
        if source in ("video", "flow"):
            from clcr_cli.features.video import read_frames

            if sample.video is None:
                raise DataError(self.root, f"sample {sample.id}: no video file")
            if source == "flow" and cfg.flow == "native":
                return _native_flow(sample, cfg, noise)
            if source == "flow" and cfg.flow == "tvl1":
                return _tvl1_flow(sample, cfg, noise)
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
            if texts and self.ids_source == "text_bert":  # MMSA's ids, as the peers fine-tune on them
                for i in texts:
                    ids = samples[i].arrays["text_bert"]
                    feats[modality][i] = ids[:, : int(ids[1].sum())]
            elif texts:
                encode = self.text_encoder.tokens if self.cfg.text_tokens else self.text_encoder.encode
                levels, lengths = encode(list(texts.values()))
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


def store_attrs(
    featurizer: Featurizer,
    dataset: str,
    settings: Mapping[str, Any],
    *,
    target: str = "classification",
    class_names: tuple[str, ...] | list[str] = (),
    extract_key: str = "",
) -> dict[str, Any]:
    """The attributes of a feature store (layout in ``clcr_cli.store``): ``settings`` (what
    made it: the extract options and provenance, or what a perturbation or prediction was)
    followed by the featurizer's own (modalities, text encoder), and the package versions."""
    return {
        "dataset": dataset,
        "target": target,
        "class_names": list(class_names),
        "extract_key": extract_key,
        "settings": {**settings, **featurizer.settings()},
        "versions": package_versions(),
    }


def part_paths(folder: Path, n_samples: int, part_size: int) -> list[Path]:
    """The paths of the part files of ``n_samples`` samples (``part_size`` each)."""
    n_parts = (n_samples + part_size - 1) // part_size
    return [folder / "parts" / f"part-{i:05d}.h5" for i in range(n_parts)]


def extract_parts(
    samples: list[Sample],
    featurizer: Featurizer,
    cfg: ExtractConfig,
    parts: list[Path],
    todo: list[int],
    console: Console,
    after_part: Callable[[int], None] | None = None,
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
    out: Path,
    samples: list[Sample],
    featurizer: Featurizer,
    cfg: ExtractConfig,
    attrs: dict[str, Any],
    console: Console,
    after_part: Callable[[int], None] | None = None,
    merge_only: bool = False,
) -> tuple[int, list[tuple[str, str, str]]]:
    """Featurize the parts of ``samples`` (``cfg.part_size`` each) that ``parts/`` beside
    ``out`` does not hold yet, then join every part into the store ``out`` with ``attrs``
    and remove the parts: (samples stored, (id, file, reason) of every sample skipped).
    With ``merge_only`` a missing part is an error instead."""
    parts = part_paths(out.parent, len(samples), cfg.part_size)
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
    extract_parts(samples, featurizer, cfg, parts, todo, console, after_part)
    skipped = [row for p in parts for row in read_part_skipped(p)]
    if skipped and len(skipped) == len(samples):  # nothing to store: say why, naming an input
        sample_id, file, reason = skipped[0]
        raise DataError(Path(file) if file else featurizer.root,
                        f"every one of the {len(samples)} samples failed and was skipped (first: {sample_id}: {reason})")
    n = assemble_store(parts, out, featurizer.layouts(), attrs)
    for p in parts:
        p.unlink()
    parts[0].parent.rmdir()
    return n, skipped
