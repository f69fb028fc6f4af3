"""The generated tri-modal dataset: determinism, labels, splits, files, atomicity, signal;
its bounds, and a full disk or an interruption while generating (one line, nothing left)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clcr_cli.datasets import synth
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.datasets.synth import files, recipe
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.audio import load_audio
from clcr_cli.features.video import read_frames

N = 40


def read_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "transcripts.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> synth.Dataset:
    return synth.load(DatasetOptions(root=tmp_path_factory.mktemp("raw"), n_samples=N, seed=0))


def test_generation_is_deterministic_per_seed(dataset: synth.Dataset, tmp_path: Path) -> None:
    again = synth.load(DatasetOptions(root=tmp_path / "a", n_samples=N, seed=0))
    assert folder_bytes(again.root) == folder_bytes(dataset.root)
    other = synth.load(DatasetOptions(root=tmp_path / "b", n_samples=N, seed=1))
    assert other.root.name == f"n{N}-seed1-v{recipe.GENERATOR_VERSION}"
    assert read_rows(other.root) != read_rows(dataset.root)
    same_name = "audio/synth00000.wav"
    assert folder_bytes(other.root)[same_name] != folder_bytes(dataset.root)[same_name]


def test_labels_follow_the_latent_factors(dataset: synth.Dataset, tmp_path: Path) -> None:
    rows = read_rows(dataset.root)
    assert [s.id for s in dataset.samples] == [r["id"] for r in rows]
    for sample, row in zip(dataset.samples, rows, strict=True):
        g, m, loc = int(row["global"]), int(row["mid"]), int(row["local"])
        assert sample.label == 4 * g + 2 * m + loc == int(row["label"])
        assert recipe.CLASS_NAMES[int(sample.label)] == row["class_name"]
        assert row["class_name"] == "-".join(
            (
                recipe.FACTOR_NAMES["global"][g],
                recipe.FACTOR_NAMES["mid"][m],
                recipe.FACTOR_NAMES["local"][loc],
            )
        )
        assert sample.text == row["text"]
        mean = 1.5 * (2 * g - 1) + 1.0 * (2 * m - 1) + 0.5 * (2 * loc - 1)
        assert abs(float(row["target"]) - mean) < 1.0  # N(0, 0.2^2) noise: 5 sigma
    regression = synth.load_regression(
        DatasetOptions(root=dataset.root.parent, n_samples=N, seed=0)
    )
    assert regression.info.name == "synth-reg" and regression.info.target == "regression"
    assert regression.root == dataset.root, "both tasks read the same files"
    assert [s.label for s in regression.samples] == [float(r["target"]) for r in rows]
    assert dataset.info.num_classes == 8 and dict(dataset.info.modalities) == {
        "text": "text", "audio": "audio", "video": "video",
    }  # fmt: skip


def test_splits_are_70_15_15_and_seeded(dataset: synth.Dataset) -> None:
    splits = [s.split for s in dataset.samples]
    assert (splits.count("train"), splits.count("valid"), splits.count("test")) == (28, 6, 6)
    big = recipe.assign_splits(240, 0)
    assert (big.count("train"), big.count("valid"), big.count("test")) == (168, 36, 36)
    assert recipe.assign_splits(240, 0) == big != recipe.assign_splits(240, 1)


def test_files_decode_to_the_expected_shapes(dataset: synth.Dataset) -> None:
    for sample in dataset.samples[:3]:
        audio = load_audio(sample.audio)
        assert audio.shape == (int(recipe.CLIP_SECONDS * recipe.SAMPLE_RATE),)
        assert np.abs(audio).max() > 0.05
        frames = read_frames(sample.video, num_frames=16, size=32)
        assert frames.shape == (16, 32, 32, 3)
        raw = recipe.generate_sample(0, int(sample.id.removeprefix("synth"))).frames

        def blocks(x: np.ndarray) -> np.ndarray:  # 4x4-pixel means: mp4v smooths pixel noise
            return x.reshape(16, 8, 4, 8, 4, 3).astype(float).mean(axis=(2, 4))

        assert np.abs(blocks(frames) - blocks(raw)).mean() < 3, "mp4v keeps the frames"


def test_generation_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "raw"
    root.mkdir()
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = root / f".n20-seed0-v{recipe.GENERATOR_VERSION}.tmp-{finished.pid}-deadbeef"
    (dead / "audio").mkdir(parents=True)
    (dead / "transcripts.csv").write_text("half a file")
    running = root / f".n99-seed0-v1.tmp-{__import__('os').getpid()}-0000beef"
    running.mkdir()

    def broken_writer(path: Path, frames: np.ndarray) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files, "write_video", broken_writer)
    with pytest.raises(OSError, match="disk full"):
        synth.load(DatasetOptions(root=root, n_samples=20))
    assert not dead.exists(), "a dead generation's temp folder is cleaned"
    assert running.exists(), "a live generation's temp folder is left alone"
    assert sorted(p.name for p in root.iterdir()) == [running.name], "a failed run leaves nothing"

    monkeypatch.undo()
    dataset = synth.load(DatasetOptions(root=root, n_samples=20))
    assert len(dataset.samples) == 20 and (dataset.root / "generator.json").is_file()


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="root"):
        synth.load(DatasetOptions(root=None))
    with pytest.raises(ConfigError, match="at least"):
        synth.load(DatasetOptions(root=Path("/nonexistent"), n_samples=3))


def test_corruption_rate_and_its_rendering() -> None:
    rng = np.random.default_rng(0)
    latents = [recipe.draw_latent(rng) for _ in range(4000)]
    corrupted = [lat.corrupted for lat in latents if lat.corrupted]
    assert abs(len(corrupted) / len(latents) - recipe.CORRUPTION_RATE) < 0.03
    assert {m for m, _ in corrupted} == set(recipe.MODALITIES) and {
        lv for _, lv in corrupted
    } == set(recipe.LEVELS)
    for lat in latents[:50]:
        for modality in recipe.MODALITIES:
            flipped = {lv for lv in recipe.LEVELS if lat.view(modality)[lv] != lat.factors[lv]}
            assert flipped == (
                {lat.corrupted[1]} if lat.corrupted and lat.corrupted[0] == modality else set()
            )


def test_text_expresses_each_level() -> None:
    """Text: event words carry the local factor, their run the rhythm, the order of the
    quiet and loud sentences the trend -- flipped where the text is corrupted."""
    for index in range(60):
        row = recipe.generate_sample(7, index).row
        view = {lv: int(row[lv]) for lv in recipe.LEVELS}
        if row["corrupted_modality"] == "text":
            view[row["corrupted_level"]] ^= 1
        words = str(row["text"]).replace(".", " ").replace(",", " ").split()
        events = [w for w in words if w in recipe._EVENT_WORDS[0] + recipe._EVENT_WORDS[1]]
        assert events and all(w in recipe._EVENT_WORDS[view["local"]] for w in events)
        assert (len(events) == recipe.TEXT_SLOTS) == bool(view["mid"])
        text = str(row["text"])
        quiet = min(text.find(s) for s in recipe._QUIET if s in text)
        loud = min(text.find(s) for s in recipe._LOUD if s in text)
        assert (quiet < loud) == bool(view["global"])


def test_simple_features_carry_the_factors(dataset: synth.Dataset) -> None:
    """Learnability without a model: the audio loudness slope and the video brightness
    slope give the global factor; whether the object ever turns black gives the local one."""
    rows = read_rows(dataset.root)
    hits = {"audio global": [], "video global": [], "video local": []}
    for sample, row in zip(dataset.samples, rows, strict=True):
        audio = load_audio(sample.audio)
        rms = np.sqrt(np.mean(audio.reshape(20, -1) ** 2, axis=1))
        frames = read_frames(sample.video, num_frames=16, size=32).astype(float)
        x, y = int(row["object_x"]), int(row["object_y"])
        patch = frames[:, y + 2 : y + 6, x + 2 : x + 6].mean(axis=(1, 2, 3))
        observed = {
            "audio global": np.polyfit(np.arange(20), rms, 1)[0] > 0,
            "video global": np.polyfit(np.arange(16), frames.mean(axis=(1, 2, 3)), 1)[0] > 0,
            "video local": patch.min() > 12,  # a dark (thud) flash is black whatever the gain
        }
        for key, value in observed.items():
            modality, level = key.split()
            if (row["corrupted_modality"], row["corrupted_level"]) != (modality, level):
                hits[key].append(value == bool(int(row[level])))
    accuracy = {key: float(np.mean(values)) for key, values in hits.items()}
    assert min(accuracy.values()) > 0.8, accuracy


def test_every_text_fits_the_token_budget() -> None:
    """The longest possible text (longest choice of every part) fits TEXT_MAX_TOKENS
    MiniLM tokens, so truncation can never cut off the final, trend-bearing sentence."""
    from transformers import AutoTokenizer

    from clcr_cli.features.text import resolve_text_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model("minilm"), local_files_only=True)

    def longest(words: tuple[str, ...]) -> str:
        return max(words, key=lambda w: len(tokenizer.tokenize(w)))

    event = longest(recipe._EVENT_WORDS[0] + recipe._EVENT_WORDS[1] + recipe._GAP_WORDS)
    sentences = [
        longest(recipe._QUIET),
        f"{longest(recipe._HEDGES)}{longest(recipe._NAMES)} heard {' '.join([event] * recipe.TEXT_SLOTS)}.",
        longest(recipe._FILLERS),
        longest(recipe._LOUD),
    ]
    assert len(tokenizer(" ".join(sentences))["input_ids"]) <= recipe.TEXT_MAX_TOKENS


# --- bounds, full disks and interruptions -----------------------------------------------------


def test_too_many_samples_is_one_line_before_any_work(tmp_path: Path) -> None:
    """A billion samples took 8 GB of memory in 25 s, printing nothing: refused at once."""
    with pytest.raises(ConfigError, match=r"^--n-samples 1000001: synth generates at most 1,000,000 samples$"):
        synth.load(DatasetOptions(root=tmp_path / "raw", n_samples=files.MAX_SAMPLES + 1))
    start = time.monotonic()
    workdir = tmp_path / "wd"
    result = subprocess.run(
        [sys.executable, "-m", "clcr_cli", "extract", "--dataset", "synth", "--n-samples", "1000000000",
         "--workdir", str(workdir)], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    # refused when the option is parsed (config.py's bound, equal to the generator's MAX_SAMPLES)
    assert result.stderr == "error: --n-samples: must be at most 1000000, got 1000000000\n"
    assert time.monotonic() - start < 60
    assert not (workdir / "raw").exists() or not any((workdir / "raw").rglob("*")), "nothing written"


def test_more_samples_than_the_free_space_is_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    free = SimpleNamespace(total=10**9, used=10**9 - 10**6, free=10**6)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: free)
    with pytest.raises(ConfigError, match=r"^--n-samples 100: the synth files need about 8\.0 MB, .+ has 1\.0 MB free$"):
        synth.load(DatasetOptions(root=tmp_path / "raw", n_samples=100))
    assert not (tmp_path / "raw").exists()


def test_an_incomplete_video_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """cv2.VideoWriter reports no failure: a video cut short is found, and named."""
    frames = recipe.generate_sample(0, 0).frames
    whole = tmp_path / "whole.mp4"
    files.write_video(whole, frames)
    assert files.mp4_complete(whole)
    cut = whole.read_bytes()[: whole.stat().st_size // 2]
    real_writer = files.cv2.VideoWriter

    class CutShort:  # writes, then loses the end of the file, silently, as on a full disk
        def __init__(self, path: str, *args: object) -> None:
            self.path = Path(path)
            self.writer = real_writer(path, *args)

        def isOpened(self) -> bool:  # noqa: N802 - cv2's name
            return self.writer.isOpened()

        def write(self, frame: np.ndarray) -> None:
            self.writer.write(frame)

        def release(self) -> None:
            self.writer.release()
            self.path.write_bytes(cut)

    monkeypatch.setattr(files.cv2, "VideoWriter", CutShort)
    target = tmp_path / "v.mp4"
    with pytest.raises(DataError, match=rf"^{target}: OpenCV wrote an incomplete video$"):
        files.write_video(target, frames)


# The CLI's handling in a process of its own: one line and exit 2, the earlier dataset on
# the same disk byte-identical, no temporary folder. The size estimate is set to nothing,
# as if the disk filled from elsewhere while generating; "video": the .wav files are left
# empty, so that the videos (whose writer fails silently) meet the full disk.
GENERATE = """
import hashlib, json, resource, signal, sys
from pathlib import Path

import typer

from clcr_cli.cli import user_errors
from clcr_cli.datasets import synth
from clcr_cli.datasets.base import DatasetOptions
from clcr_cli.datasets.synth import files

root, limit, n, fail = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
earlier = synth.load(DatasetOptions(root=root, n_samples=10)).root


def digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


before = digest(earlier)
files.BYTES_PER_SAMPLE = 1
if fail == "video":
    files.write_audio = lambda path, audio: path.write_bytes(b"")
if limit:  # files may grow to `limit` bytes: past it a write fails (EFBIG)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
code = 0
try:
    with user_errors(False):
        synth.load(DatasetOptions(root=root, n_samples=n))
except typer.Exit as exc:
    code = exc.exit_code
print(json.dumps({"before": before, "after": digest(earlier), "listing": sorted(p.name for p in root.iterdir())}))
sys.exit(code)
"""


def generate_command(root: Path, n: int, fail: str, limit: int = 0) -> list[str]:
    return [sys.executable, "-c", GENERATE, str(root), str(limit), str(n), fail]


def check_one_line(result: subprocess.CompletedProcess, root: Path, n: int, cause: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr == f"error: {root / files.fingerprint(n, 0)}: {cause}\n"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["after"] == report["before"], "the earlier dataset is byte-identical"
    assert report["listing"] == [files.fingerprint(10, 0)], "no temporary folder"


@pytest.mark.parametrize(("fail", "limit"), [("audio", 32_000), ("video", 2_000)])
def test_a_file_size_limit_while_generating_is_one_line(tmp_path: Path, fail: str, limit: int) -> None:
    """RLIMIT_FSIZE makes writes past ``limit`` bytes fail for real (EFBIG), no root needed:
    the .wav (64 kB) meets it, or the .mp4, which OpenCV writes without a word."""
    root = tmp_path / "raw"
    result = subprocess.run(generate_command(root, 40, fail, limit), capture_output=True, text=True, timeout=300)
    check_one_line(result, root, 40, "File too large")


def tmpfs_runner(mountpoint: Path) -> list[str]:
    """A command prefix that runs its command with a tmpfs mounted on ``mountpoint``, in a
    mount namespace of its own (nothing stays mounted; no root needed where user namespaces
    are allowed); skips the test, saying why, where no tmpfs can be mounted."""
    if shutil.which("unshare") is None:
        pytest.skip("cannot mount a tmpfs: no `unshare` here")
    script = 'mount -t tmpfs -o "size=$1" tmpfs "$2" || exit 97; shift 2; exec "$@"'
    mountpoint.mkdir(parents=True, exist_ok=True)
    refusals = []
    for namespace in (["--user", "--map-root-user", "--mount"], ["--mount"]):
        runner = ["unshare", *namespace, "sh", "-c", script, "sh"]
        probe = subprocess.run([*runner, "1m", str(mountpoint), "true"], capture_output=True, text=True)
        if probe.returncode == 0:
            return runner
        refusals.append(" ".join(probe.stderr.split())[:200] or f"exit {probe.returncode}")
    pytest.skip(f"mount -t tmpfs is not permitted here ({'; '.join(refusals)})")


@pytest.mark.parametrize(("fail", "n"), [("audio", 100), ("video", 1000)])
def test_a_full_tmpfs_while_generating_is_one_line(tmp_path: Path, fail: str, n: int) -> None:
    """A real 2 MB tmpfs: 10 samples fit (0.7 MB), ``n`` do not. Exit 2 and one line."""
    root = tmp_path / "tmpfs"
    runner = tmpfs_runner(root)
    result = subprocess.run([*runner, "2m", str(root), *generate_command(root, n, fail)],
                            capture_output=True, text=True, timeout=300)
    check_one_line(result, root, n, "No space left on device")


def test_the_free_space_of_a_small_tmpfs_is_checked_first(tmp_path: Path) -> None:
    root = tmp_path / "tmpfs"
    runner = tmpfs_runner(root)
    code = ("import sys; from pathlib import Path; from clcr_cli.datasets.synth import files\n"
            "try:\n    files.ensure_generated(Path(sys.argv[1]), 100, 0)\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
            "print(sorted(p.name for p in Path(sys.argv[1]).iterdir()))")
    result = subprocess.run([*runner, "2m", str(root), sys.executable, "-c", code, str(root)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    first, listing = result.stdout.splitlines()
    assert first == f"ConfigError --n-samples 100: the synth files need about 8.0 MB, {root} has 2.1 MB free"
    assert listing == "[]"


def test_sigterm_while_generating_leaves_no_temporary_folder(tmp_path: Path) -> None:
    """``timeout`` or ``kill`` mid-generation: interrupted as by Ctrl-C, the half-written
    folder removed (a SIGKILL's is removed by the next generation)."""
    workdir = tmp_path / "wd"
    raw = workdir / "raw" / "synth"
    process = subprocess.Popen(
        [sys.executable, "-m", "clcr_cli", "extract", "--dataset", "synth", "--n-samples", "3000",
         "--workdir", str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(raw.glob(".n3000-*/audio/*.wav")):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(os.listdir(raw)) == []
