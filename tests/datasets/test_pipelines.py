"""The documented commands, ``pipelines/<dataset>.sh ROOT``, on miniature copies of the four
audio-visual datasets in their official layouts (tests/datasets/miniature.py: real clip
lengths, real codecs, a handful of clips).

Not slow: each miniature is what its loader expects (the counts per split, the classes,
the skipped clips) and its media are what the release holds (lengths, codecs, an audio
track or none). Slow: the pipeline runs end to end with nothing but the root, the quick
run of its header (``EPOCHS=1 SEEDS=1 STAGES=extract,train,eval``), and leaves a store of
the recipe's shapes and the metrics of its task. (The whole protocol, ablate and noise
included, is 17 ablation runs and 4 noise sweeps: too long for a test on 2 cores; their
stages have their own tests on synth.)

The scripts source ``pipelines/env.sh``, which (re)installs clcr into ``$CLCR_VENV`` when
pyproject.toml changed: the tests point ``CLCR_VENV`` at a stand-in for the environment
running them (its interpreter and its ``clcr``), so that nothing is installed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from fractions import Fraction
from pathlib import Path

import h5py
import pytest
from miniature import WRITERS, Miniature, write_cremad_lists

from clcr_cli.config import extract_config
from clcr_cli.datasets import load_dataset, skipped_samples
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.features.featurize import dataset_options

REPO = Path(__file__).resolve().parents[2]
DATASETS = ("cremad", "ks", "ave", "ucf101")
QUICK = {"EPOCHS": "1", "SEEDS": "1", "STAGES": "extract,train,eval"}

# modality -> one sample's stored shape, from the recipes (clcr_cli/configs/<task>.toml)
STORE_SHAPES = {
    "cremad": {"audio": (188, 257), "video": (1, 256, 256, 3)},  # OGM-GE log-STFT, 1 frame
    "ks": {"audio": (1024, 128), "video": (3, 256, 256, 3)},  # Kaldi fbank, 3 frames
    "ave": {"audio": (1004, 257), "video": (1, 256, 256, 3)},  # ARL/PMR spectrogram, 1 frame
    "ucf101": {"video": (3, 256, 256, 3), "flow": (3, 256, 256, 2)},  # RGB + 2-channel flow
}
# what each miniature's media are: (file pattern, seconds (low, high), video codec, audio
# codec), as FFmpeg's decoders name them (flv: Sorenson Spark, mp3float: MP3)
MEDIA = {
    "cremad": [("VideoFlash/*.flv", (2.2, 2.95), "flv", "mp3float")],
    "ks": [("**/*.mp4", (9.95, 10.1), "h264", "aac")],
    "ave": [("AVE/*.mp4", (9.95, 10.1), "h264", "aac")],
    "ucf101": [("UCF-101/*/*.avi", (3.0, 7.0), "mpeg4", None)],
}


@pytest.fixture(scope="module")
def miniatures(tmp_path_factory):
    """name -> its miniature, written on first use, once per module."""
    made: dict[str, Miniature] = {}
    folder = tmp_path_factory.mktemp("miniatures")

    def get(name: str) -> Miniature:
        if name not in made:
            made[name] = WRITERS[name](folder / name)
        return made[name]

    return get


# --- the miniatures are what the loaders and the release have --------------------------------


def probe(path: Path) -> tuple[float, str | None, str | None, tuple[int, int] | None]:
    """(seconds, video codec, audio codec, (width, height)) of a media file."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if container.duration is not None:
            seconds = container.duration / 1_000_000
        else:
            stream = video or audio
            seconds = float(stream.duration * Fraction(stream.time_base))
        return (
            seconds,
            None if video is None else video.codec_context.name,
            None if audio is None else audio.codec_context.name,
            None if video is None else (video.codec_context.width, video.codec_context.height),
        )


@pytest.mark.parametrize("name", DATASETS)
def test_miniature_is_read_by_its_loader(name, miniatures, tmp_path):
    """Read with the options of the dataset's recipe, as ``clcr extract --dataset NAME --root
    ROOT`` reads it."""
    mini = miniatures(name)
    cfg = extract_config({}, {"dataset": name, "root": str(mini.root)})
    dataset = load_dataset(name, dataset_options(cfg, tmp_path))
    counts = {split: sum(s.split == split for s in dataset.samples) for split in mini.counts}
    assert counts == mini.counts
    assert dataset.info.class_names == mini.class_names
    assert len(skipped_samples(dataset)) == mini.skipped
    assert {s.label for s in dataset.samples if s.split == "test"} == set(
        range(len(mini.class_names))
    )  # every class is in test
    for pattern, (low, high), video_codec, audio_codec in MEDIA[name]:
        files = sorted(mini.root.glob(pattern))
        assert files, pattern
        for path in files:
            seconds, vcodec, acodec, _ = probe(path)
            assert low <= seconds <= high and vcodec == video_codec and acodec == audio_codec, path


def test_cremad_miniature_media_and_split_lists(miniatures, tmp_path):
    """The .wav beside each .flv (16 kHz mono, the same length); OGM-GE's and D&R's lists
    written for the miniature give D&R's val.csv as the valid split."""
    import soundfile

    mini = miniatures("cremad")
    for wav in sorted((mini.root / "AudioWAV").glob("*.wav")):
        info = soundfile.info(str(wav))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        flv_seconds, _, _, size = probe(mini.root / "VideoFlash" / f"{wav.stem}.flv")
        assert abs(info.duration - flv_seconds) < 0.1 and size == (480, 360)
    lists = write_cremad_lists(mini, tmp_path / "lists")
    dataset = load_dataset("cremad", DatasetOptions(root=mini.root, split_file=lists["my_train"]))
    listed = {
        split: len(lists[k].read_text().splitlines()) - header
        for split, k, header in (("train", "my_train", 1), ("valid", "val", 1), ("test", "test", 0))
    }
    counts = {split: sum(s.split == split for s in dataset.samples) for split in listed}
    assert counts == listed


def test_ave_miniature_in_the_peers_reading(miniatures):
    """One sample per whole video (the two-event video and the repeated line give one),
    classes in order of first appearance in testSet.txt."""
    mini = miniatures("ave")
    dataset = load_dataset("ave", DatasetOptions(root=mini.root, ave_reading="video"))
    counts = {split: sum(s.split == split for s in dataset.samples) for split in mini.counts}
    assert counts == mini.counts
    assert mini.counts["train"] == 3 * 4  # 4 videos per class, though 13 distinct train lines
    assert dataset.info.class_names == ("Bark", "Church bell", "Male speech, man speaking")
    assert all(s.window is None for s in dataset.samples)
    assert len(skipped_samples(dataset)) == mini.skipped == 2  # the repeated line, the second event


def test_ucf101_miniature_has_no_audio_and_the_release_size(miniatures):
    mini = miniatures("ucf101")
    for path in sorted(mini.root.glob("UCF-101/*/*.avi")):
        _, _, audio, size = probe(path)
        assert audio is None and size == (320, 240)
    assert b"\r\n" in (mini.root / "ucfTrainTestlist" / "trainlist01.txt").read_bytes()


# --- the documented commands run on them ------------------------------------------------------


def stand_in_venv(folder: Path) -> Path:
    """A folder that pipelines/env.sh takes for an installed ``CLCR_VENV``: the interpreter
    running these tests, its ``clcr`` on PATH, and the install stamp of pyproject.toml."""
    clcr = shutil.which(
        "clcr", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    assert clcr is not None, "the clcr command is not installed next to this Python"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").symlink_to(sys.executable)
    (folder / "bin" / "activate").write_text(f'export PATH="{Path(clcr).parent}:$PATH"\n')
    stamp = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    (folder / ".clcr-installed").write_text(stamp + "\n")
    return folder


def run_pipeline(name: str, root: Path, tmp_path: Path, env: dict[str, str]) -> Path:
    """``pipelines/<name>.sh ROOT`` with ``env``; the workdir it filled."""
    workdir = tmp_path / "work"
    full_env = {
        **os.environ,
        "CLCR_VENV": str(stand_in_venv(tmp_path / "venv")),
        "WORKDIR": str(workdir),
        **env,
    }
    full_env.pop("CONFIG", None)  # nothing beyond the root and the quick-run settings
    command = [str(REPO / "pipelines" / f"{name}.sh"), str(root)]
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=1500
    )
    elapsed = time.monotonic() - started
    log = result.stdout + result.stderr
    print(f"{' '.join(command)}: {elapsed:.0f} s\n{log[-4000:]}")
    assert result.returncode == 0, log[-4000:]
    return workdir


def check_store(name: str, workdir: Path, mini: Miniature) -> None:
    (store,) = sorted(workdir.glob(f"extract/{name}-*/features.h5"))
    with h5py.File(store, "r") as f:
        modalities = {k for k in f if k != "meta"}
        assert modalities == set(STORE_SHAPES[name])
        for modality, shape in STORE_SHAPES[name].items():
            assert f[modality]["data"].shape == (mini.n_samples, *shape), modality
        splits = [s.decode() if isinstance(s, bytes) else s for s in f["meta"]["split"][:]]
        assert {split: splits.count(split) for split in mini.counts} == mini.counts
        assert json.loads(f.attrs["class_names"]) == list(mini.class_names)
        settings = json.loads(f.attrs["settings"])
    # the extraction is the recipe's, with nothing given beyond the root
    recipe = tomllib.loads((REPO / "clcr_cli" / "configs" / f"{name}.toml").read_text())
    assert {k: settings.get(k) for k in recipe["extract"]} == recipe["extract"]
    assert settings["loader"]["split_file"] is None


def check_metrics(name: str, workdir: Path, mini: Miniature, seeds: int) -> None:
    found = sorted(workdir.glob("train/*/eval/*/metrics.json"))
    evaluated = [json.loads(p.read_text()) for p in found]
    clcr_runs = [m for m in evaluated if m.get("model") == "clcr" and m.get("variant") == "full"]
    assert len(clcr_runs) >= seeds, found
    for metrics in clcr_runs:
        assert metrics["task"] == name and metrics["split"] == "test"
        assert metrics["num_samples"] == mini.counts["test"]
        assert {"acc", "f1_macro"} <= set(metrics["metrics"])
        assert 0.0 <= metrics["metrics"]["acc"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASETS)
def test_documented_pipeline_runs_on_the_miniature(name, miniatures, tmp_path):
    """pipelines/<name>.sh ROOT, the quick run of its header: extract, train, eval."""
    mini = miniatures(name)
    workdir = run_pipeline(name, mini.root, tmp_path, QUICK)
    check_store(name, workdir, mini)
    check_metrics(name, workdir, mini, seeds=1)
