"""Miniature copies of the four audio-visual datasets, in their official layouts.

Each ``write_*`` function writes a handful of clips under a folder, laid out and named as
the real release is (docs/datasets.md), with the real clip lengths and real codecs, so
that ``pipelines/<dataset>.sh ROOT`` runs on it as it would on the real copy:

- CREMA-D: ``AudioWAV/<Actor>_<Sentence>_<Emotion>_<Level>.wav`` (16 kHz PCM-16 mono,
  2.2-2.9 s) and ``VideoFlash/<same>.flv`` (the same length, 480 x 360 at 30 fps, with an
  MP3 track as in the release; Sorenson Spark ``flv1`` video, since FFmpeg has no VP6
  encoder); all 6 emotions, actors 1001-1004 (train) and 1010 (the default test actor);
- Kinetics-Sounds: 10 s ``.mp4`` clips (H.264 340 x 256 at 25 fps, AAC 44.1 kHz stereo)
  in one sub-folder per class, and OGM-GE's ``my_train.txt`` / ``my_test.txt`` (CRLF,
  ``<id>,10,<label>``): train ids ``<ytid>_<start6>_<end6>``, test ids ``<ytid>_<n>`` as
  in OGM-GE's real ``my_test.txt``; one listed train clip has no file (a video gone from
  YouTube), as in every real copy;
- AVE: ``AVE/<VideoID>.mp4`` 10 s videos (H.264 320 x 240 at 30 fps, AAC 44.1 kHz stereo),
  ``Annotations.txt`` (with its header line) and ``trainSet.txt`` / ``valSet.txt`` /
  ``testSet.txt`` (``Category&VideoID&Quality&StartTime&EndTime``); one train video has
  two events, one event line is repeated, as in the release;
- UCF101: ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` (MPEG-4 part 2 in AVI, 320 x 240 at
  25 fps, 3-7 s, no audio track) and ``ucfTrainTestlist/classInd.txt``,
  ``trainlist01.txt``, ``testlist01.txt`` (CRLF); groups 1-7 are test in split 1 as in
  the release, the train clips come from groups 8-10.

The label is a little learnable: each class has its own tone frequency in the audio, its
own colour in the frames (and, for UCF101, its own direction of motion for the flow),
under per-clip noise. Everything is deterministic from ``seed``.

Each function returns a :class:`Miniature`: the root to pass to ``--root``, the class
names in label order and the number of samples the loader should find per split.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# what a writer returns


@dataclass(frozen=True)
class Miniature:
    root: Path
    class_names: tuple[str, ...]
    counts: dict[str, int]  # samples the loader finds per split (train, valid, test)
    skipped: int = 0  # clips the loader leaves out (listed in skipped.csv)
    extra: dict[str, Path] = field(default_factory=dict)  # split lists written beside

    @property
    def n_samples(self) -> int:
        return sum(self.counts.values())


# ---------------------------------------------------------------------------------------------
# signals


def class_colour(label: int, n_classes: int) -> np.ndarray:
    """An RGB colour (0-255) per class, evenly spaced in hue."""
    r, g, b = colorsys.hsv_to_rgb(label / n_classes, 0.8, 0.9)
    return np.array([r, g, b]) * 255.0


def class_tone(label: int) -> float:
    """A tone frequency (Hz) per class, a major third (0.4 octave) apart."""
    return 220.0 * 2 ** (label * 0.4)


def tone(
    rng: np.random.Generator, seconds: float, rate: int, freq: float, channels: int = 1
) -> np.ndarray:
    """(channels, samples) float32: a tone with two harmonics, a syllable-like amplitude
    envelope and background noise, in [-1, 1]."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    phase = rng.uniform(0, 2 * math.pi)
    wave = (
        np.sin(2 * math.pi * freq * t + phase)
        + 0.4 * np.sin(4 * math.pi * freq * t)
        + 0.2 * np.sin(6 * math.pi * freq * t)
    )
    envelope = 0.55 + 0.45 * np.sin(2 * math.pi * rng.uniform(2.0, 4.0) * t + phase) ** 2
    signal = 0.25 * wave * envelope + rng.normal(0, rng.uniform(0.01, 0.05), n)
    stereo = np.stack([signal * rng.uniform(0.8, 1.0) for _ in range(channels)])
    return np.clip(stereo, -1, 1).astype(np.float32)


FrameFn = Callable[[int], np.ndarray]  # frame index -> (H, W, 3) uint8 RGB


def moving_square_frames(
    rng: np.random.Generator,
    width: int,
    height: int,
    colour: np.ndarray,
    velocity: tuple[float, float] | None = None,
) -> FrameFn:
    """Frames of a textured background tinted with ``colour`` and a bright square moving at
    ``velocity`` pixels per frame (random when None), with pixel noise."""
    yy, xx = np.mgrid[0:height, 0:width]
    fx, fy = rng.uniform(1, 4, 2)
    texture = 0.15 * np.sin(2 * math.pi * (fx * xx / width + fy * yy / height))
    base = np.clip(colour * (0.75 + texture)[..., None], 0, 255).astype(np.float32)
    side = max(8, height // 5)
    x0, y0 = rng.uniform(0, width - side), rng.uniform(0, height - side)
    vx, vy = velocity if velocity is not None else tuple(rng.uniform(-3, 3, 2))
    square = (255 - colour * 0.3).astype(np.float32)
    # pixel noise: a few fields drawn once and cycled (drawing one per frame is slow)
    noise = rng.normal(0, rng.uniform(2, 8), (5, height, width, 3)).astype(np.float32)

    def frame(i: int) -> np.ndarray:
        image = base + noise[i % len(noise)]
        x = int((x0 + vx * i) % (width - side))
        y = int((y0 + vy * i) % (height - side))
        image[y : y + side, x : x + side] = square
        return np.clip(image, 0, 255).astype(np.uint8)

    return frame


# ---------------------------------------------------------------------------------------------
# writers of media files


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """PCM-16 WAV of (channels, samples) float32."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples.T, rate, subtype="PCM_16")


def write_video(
    path: Path,
    frames: FrameFn,
    seconds: float,
    fps: int,
    size: tuple[int, int],
    video_codec: str,
    audio: np.ndarray | None = None,
    audio_rate: int = 44100,
    audio_codec: str = "aac",
    container_format: str | None = None,
) -> None:
    """A video file of ``seconds`` s at ``fps`` and ``size`` (width, height), with an audio
    track of ``audio`` ((channels, samples) float32) when given, written with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    n_frames = int(round(seconds * fps))
    with av.open(str(path), "w", format=container_format) as out:
        video = out.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if video_codec in ("libx264", "h264"):
            video.options = {"preset": "ultrafast", "crf": "28"}
        else:
            video.bit_rate = 800_000
        sound = None
        if audio is not None:
            layout = "stereo" if audio.shape[0] == 2 else "mono"
            sound = out.add_stream(audio_codec, rate=audio_rate, layout=layout)
            sound.bit_rate = 96_000
        written = 0  # audio samples muxed so far
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frames(i), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
            if sound is None:
                continue
            # the audio up to the end of this frame; PyAV converts it to the encoder's
            # sample format and cuts it to the encoder's frame size
            until = audio.shape[1] if i == n_frames - 1 else int(round((i + 1) / fps * audio_rate))
            if until > written:
                part = np.ascontiguousarray(audio[:, written:until], dtype=np.float32)
                aframe = av.AudioFrame.from_ndarray(part, format="fltp", layout=layout)
                aframe.sample_rate = audio_rate
                aframe.pts = written
                aframe.time_base = Fraction(1, audio_rate)
                for packet in sound.encode(aframe):
                    out.mux(packet)
                written = until
        for stream in (video, sound):
            if stream is not None:
                for packet in stream.encode(None):
                    out.mux(packet)


def write_lines(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode())
    return path


# ---------------------------------------------------------------------------------------------
# CREMA-D

CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # clcr's label order
CREMAD_SENTENCES = (
    "DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "MTI", "TAI", "TIE", "TSI", "WSI"
)  # fmt: skip
CREMAD_LEVELS = ("LO", "MD", "HI", "XX")


def cremad_clip_names(actors: tuple[str, ...]) -> list[str]:
    names = []
    for a, actor in enumerate(actors):
        for e, emotion in enumerate(CREMAD_EMOTIONS):
            sentence = CREMAD_SENTENCES[(a + e) % len(CREMAD_SENTENCES)]
            level = "XX" if sentence != "IEO" else CREMAD_LEVELS[e % 3]
            names.append(f"{actor}_{sentence}_{emotion}_{level}")
    return names


def write_cremad(
    root: Path,
    train_actors: tuple[str, ...] = ("1001", "1002", "1003", "1004"),
    test_actors: tuple[str, ...] = ("1010",),
    seed: int = 0,
) -> Miniature:
    """CREMA-D in its release layout: one clip per actor and emotion (see the module
    docstring). With the default split (by actor, 10 % of the train actors in valid)."""
    rng = np.random.default_rng(seed)
    actors = train_actors + test_actors
    for clip in cremad_clip_names(actors):
        label = CREMAD_EMOTIONS.index(clip.split("_")[2])
        seconds = float(rng.uniform(2.2, 2.9))
        freq = class_tone(label) * rng.uniform(0.97, 1.03)
        clip_rng = np.random.default_rng(rng.integers(2**32))
        write_wav(root / "AudioWAV" / f"{clip}.wav", tone(clip_rng, seconds, 16000, freq), 16000)
        frames = moving_square_frames(clip_rng, 480, 360, class_colour(label, 6))
        write_video(
            root / "VideoFlash" / f"{clip}.flv",
            frames,
            seconds,
            30,
            (480, 360),
            "flv",
            audio=tone(clip_rng, seconds, 22050, freq),
            audio_rate=22050,
            audio_codec="libmp3lame",
            container_format="flv",
        )
    n_valid_actors = max(1, round(0.1 * len(train_actors)))
    counts = {
        "train": 6 * (len(train_actors) - n_valid_actors),
        "valid": 6 * n_valid_actors,
        "test": 6 * len(test_actors),
    }
    return Miniature(root, CREMAD_EMOTIONS, counts)


def write_cremad_lists(miniature: Miniature, folder: Path) -> dict[str, Path]:
    """OGM-GE's ``train.csv`` / ``test.csv`` (CRLF, no header, ``clip,LABEL``) and D&R's
    carve of that train list, ``my_train.csv`` + ``val.csv`` (``name,label`` header), for
    the clips of a CREMA-D miniature: a clip-level split, every actor in train and test
    (as OGM-GE's), one clip in five to test, one train clip in eight to val."""
    clips = sorted(p.stem for p in (miniature.root / "AudioWAV").glob("*.wav"))
    test = clips[::5]
    train = [c for c in clips if c not in test]
    val = train[::8]
    my_train = [c for c in train if c not in val]

    def rows(names: list[str]) -> list[str]:
        return [f"{c},{c.split('_')[2]}" for c in names]

    paths = {
        "train": write_lines(folder / "train.csv", rows(train), "\r\n"),
        "test": write_lines(folder / "test.csv", rows(test), "\r\n"),
        "my_train": write_lines(folder / "my_train.csv", ["name,label", *rows(my_train)]),
        "val": write_lines(folder / "val.csv", ["name,label", *rows(val)]),
    }
    return paths


# ---------------------------------------------------------------------------------------------
# Kinetics-Sounds

KS_CLASSES = ("playing bagpipes", "playing harmonica", "dog barking")


def _ytid(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), 11))


def write_ks(
    root: Path, train_per_class: int = 5, test_per_class: int = 2, seed: int = 0
) -> Miniature:
    """Kinetics-Sounds as OGM-GE's lists name it (see the module docstring); the clips sit
    in one sub-folder per class, so the folder names become the class names."""
    rng = np.random.default_rng(seed)
    train_rows, test_rows = [], []
    n_test = 0
    for label in range(len(KS_CLASSES)):
        for _ in range(train_per_class):
            start = int(rng.integers(0, 290))
            train_rows.append((f"{_ytid(rng)}_{start:06d}_{start + 10:06d}", label))
        for _ in range(test_per_class):
            test_rows.append((f"{_ytid(rng)}_{int(rng.integers(0, 4009))}", label))
            n_test += 1
    gone = train_rows[-1][0]  # listed, never downloaded
    for split, rows in (("train", train_rows), ("test", test_rows)):
        for clip, label in rows:
            if clip == gone:
                continue
            clip_rng = np.random.default_rng(rng.integers(2**32))
            freq = class_tone(2 * label) * rng.uniform(0.97, 1.03)
            write_video(
                root / split / KS_CLASSES[label] / f"{clip}.mp4",
                moving_square_frames(clip_rng, 340, 256, class_colour(label, len(KS_CLASSES))),
                10.0,
                25,
                (340, 256),
                "libx264",
                audio=tone(clip_rng, 10.0, 44100, freq, channels=2),
                audio_rate=44100,
            )
    write_lines(root / "my_train.txt", [f"{c},10,{k}" for c, k in train_rows], "\r\n")
    write_lines(root / "my_test.txt", [f"{c},10,{k}" for c, k in test_rows], "\r\n")
    n_train = len(train_rows) - 1
    n_valid = max(1, round(0.1 * n_train))
    counts = {"train": n_train - n_valid, "valid": n_valid, "test": n_test}
    return Miniature(root, KS_CLASSES, counts, skipped=1)


# ---------------------------------------------------------------------------------------------
# AVE

AVE_HEADER = "Category&VideoID&Quality&StartTime&EndTime"
AVE_CLASSES = ("Church bell", "Male speech, man speaking", "Bark")  # Annotations.txt order


def write_ave(
    root: Path, train_per_class: int = 4, valid_per_class: int = 1, test_per_class: int = 1,
    seed: int = 0,
) -> Miniature:  # fmt: skip
    """AVE_Dataset as released (see the module docstring): 10 s videos, each with one
    event of its class (window of 2-10 s) at a random place, its sound and its colour
    inside the window, background noise outside; one train video with two events (of the
    same class) and one exact repeated line."""
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    per_split = {"train": train_per_class, "valid": valid_per_class, "test": test_per_class}
    events: dict[str, list[tuple[int, int, int]]] = {}  # video -> (label, start, end)
    # the test list starts with the last class: its order of first appearance differs from
    # Annotations.txt's, as in the release
    order = {"train": range(3), "valid": range(3), "test": (2, 0, 1)}
    for split in ("train", "valid", "test"):
        for label in order[split]:
            for k in range(per_split[split]):
                video = _ytid(rng)
                if split == "train" and label == 2 and k == 0:  # two events in one video
                    windows = [(0, 4), (6, 10)]
                else:
                    start = int(rng.integers(0, 5))
                    windows = [(start, int(rng.integers(start + 2, 11)))]
                for start, end in windows:
                    events.setdefault(video, []).append((label, start, end))
                    lists[split].append(f"{AVE_CLASSES[label]}&{video}&good&{start}&{end}")
    lists["train"].insert(3, lists["train"][2])  # an exact repeat, as the release has
    for video, video_events in events.items():
        clip_rng = np.random.default_rng(rng.integers(2**32))
        label = video_events[0][0]
        colour = class_colour(label, len(AVE_CLASSES))
        grey = np.full(3, 110.0)
        seconds, fps, rate = 10.0, 30, 44100
        inside = np.zeros(int(seconds * rate), bool)
        frame_inside = np.zeros(int(seconds * fps), bool)
        for _, start, end in video_events:
            inside[start * rate : end * rate] = True
            frame_inside[start * fps : end * fps] = True
        sound = tone(clip_rng, seconds, rate, class_tone(2 * label), channels=2)
        noise = clip_rng.normal(0, 0.03, sound.shape).astype(np.float32)
        audio = np.where(inside, sound, noise)
        event_frames = moving_square_frames(clip_rng, 320, 240, colour)
        idle_frames = moving_square_frames(clip_rng, 320, 240, grey)

        def frames(i, event_frames=event_frames, idle_frames=idle_frames, on=frame_inside):
            return event_frames(i) if on[min(i, len(on) - 1)] else idle_frames(i)

        write_video(
            root / "AVE" / f"{video}.mp4", frames, seconds, fps, (320, 240), "libx264",
            audio=audio, audio_rate=rate,
        )  # fmt: skip
    all_lines = lists["train"] + lists["valid"] + lists["test"]
    write_lines(root / "Annotations.txt", [AVE_HEADER, *dict.fromkeys(all_lines)])
    write_lines(root / "trainSet.txt", lists["train"])
    write_lines(root / "valSet.txt", lists["valid"])
    write_lines(root / "testSet.txt", lists["test"])
    # the recipe's reading (ave_reading = "video"): one sample per video, its first event;
    # the repeated line and the two-event video's second line are skipped
    n_videos = {split: len(dict.fromkeys(line.split("&")[1] for line in lines)) for split, lines in lists.items()}
    # classes in order of first appearance in testSet.txt, as that reading numbers them
    return Miniature(root, tuple(AVE_CLASSES[i] for i in order["test"]), n_videos, skipped=2)


# ---------------------------------------------------------------------------------------------
# UCF101

UCF_CLASSES = ("ApplyEyeMakeup", "Basketball", "JumpingJack")
UCF_MOTION = ((3.0, 0.0), (0.0, 3.0), (-3.0, -1.5))  # pixels per frame, one per class


def write_ucf101(
    root: Path,
    train_groups: tuple[int, ...] = (8, 9, 10),
    test_groups: tuple[int, ...] = (1,),
    clips_per_group: int = 2,
    seed: int = 0,
) -> Miniature:
    """UCF101 with its split lists of split 1 (see the module docstring)."""
    rng = np.random.default_rng(seed)
    train_lines, test_lines = [], []
    for label, name in enumerate(UCF_CLASSES):
        for group in train_groups + test_groups:
            colour = class_colour(label, len(UCF_CLASSES)) * rng.uniform(0.8, 1.0)
            for c in range(1, clips_per_group + 1):
                clip = f"v_{name}_g{group:02d}_c{c:02d}"
                clip_rng = np.random.default_rng(rng.integers(2**32))
                write_video(
                    root / "UCF-101" / name / f"{clip}.avi",
                    moving_square_frames(clip_rng, 320, 240, colour, UCF_MOTION[label]),
                    float(rng.uniform(3.0, 7.0)),
                    25,
                    (320, 240),
                    "mpeg4",
                    container_format="avi",
                )
                if group in train_groups:
                    train_lines.append(f"{name}/{clip}.avi {label + 1}")
                else:
                    test_lines.append(f"{name}/{clip}.avi")
    lists = root / "ucfTrainTestlist"
    write_lines(lists / "classInd.txt", [f"{k + 1} {n}" for k, n in enumerate(UCF_CLASSES)], "\r\n")
    write_lines(lists / "trainlist01.txt", train_lines, "\r\n")
    write_lines(lists / "testlist01.txt", test_lines, "\r\n")
    n_groups = len(UCF_CLASSES) * len(train_groups)
    n_valid = max(1, round(0.1 * n_groups)) * clips_per_group
    counts = {"train": len(train_lines) - n_valid, "valid": n_valid, "test": len(test_lines)}
    return Miniature(root, UCF_CLASSES, counts)


WRITERS: dict[str, Callable[[Path], Miniature]] = {
    "cremad": write_cremad,
    "ks": write_ks,
    "ave": write_ave,
    "ucf101": write_ucf101,
}
