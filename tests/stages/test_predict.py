"""``clcr predict``: a trained synth run applied to media, as new inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from workspace import read_csv

from clcr_cli.cli import app
from clcr_cli.config import EvalConfig, PredictConfig
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.stages.evaluate import run_eval
from clcr_cli.stages.predict import predict_run


def _evaluated(run: Path, cfg: EvalConfig) -> dict[str, dict[str, str]]:
    """The rows of the predictions.csv of ``clcr eval`` with ``cfg``, by id."""
    run_eval(run, cfg)
    (folder,) = [d for d in (run / "eval").iterdir()
                 if json.loads((d / "metrics.json").read_text())["missing"] == list(cfg.missing)]
    return {r["id"]: r for r in read_csv(folder / "predictions.csv")}


@pytest.fixture(scope="module")
def media(synth_run, tmp_path_factory) -> dict:
    """The run's eval predictions, and its test media as a manifest and as files."""
    evaluated = _evaluated(synth_run.run, EvalConfig())
    (raw,) = (synth_run.workdir / "raw" / "synth").iterdir()
    texts = {r["id"]: r["text"] for r in read_csv(raw / "transcripts.csv")}
    folder = tmp_path_factory.mktemp("new-media")
    manifest = folder / "new.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "audio", "video", "text", "note"])
        for i in evaluated:  # absolute media paths; the text inline, as a manifest allows
            writer.writerow([i, raw / "audio" / f"{i}.wav", raw / "video" / f"{i}.mp4", texts[i], "x"])
    few = list(evaluated)[:3]
    files = []
    for i in few:  # the same clips as files: text in a .txt of the clip's name
        (folder / f"{i}.txt").write_text(texts[i], encoding="utf-8")
        files += [raw / "audio" / f"{i}.wav", raw / "video" / f"{i}.mp4", folder / f"{i}.txt"]
    return {"eval": evaluated, "manifest": manifest, "files": files, "few": few, "folder": folder}


def _probabilities(row: dict[str, str]) -> np.ndarray:
    return np.array([float(v) for k, v in row.items() if k.startswith("prob_")])


def test_predict_reproduces_the_runs_predictions_on_its_test_media(synth_run, media):
    result = predict_run(synth_run.run, PredictConfig(), manifest=media["manifest"])
    assert result.out.parent == synth_run.run / "predict"
    rows = read_csv(result.out / "predictions.csv")
    assert [r["id"] for r in rows] == list(media["eval"])
    assert list(rows[0])[:3] == ["id", "prediction", "class"]
    for row in rows:
        ev = media["eval"][row["id"]]
        assert row["prediction"] == ev["prediction"]
        assert row["class"] == [c[5:] for c in ev if c.startswith("prob_")][int(ev["prediction"])]
        # extracted again from the media, with the store's settings: the same numbers
        # (the 6th decimal may round the other way)
        np.testing.assert_allclose(_probabilities(row), _probabilities(ev), atol=2.1e-6)
    records = result.records()
    assert records[0]["class"] == rows[0]["class"] and len(records[0]["probabilities"]) == 8


def test_files_of_one_name_are_one_sample_and_match_the_manifest(synth_run, media):
    result = predict_run(synth_run.run, PredictConfig(), files=media["files"])
    rows = read_csv(result.out / "predictions.csv")
    assert [r["id"] for r in rows] == media["few"]
    for row in rows:
        ev = media["eval"][row["id"]]
        assert row["prediction"] == ev["prediction"]
        np.testing.assert_allclose(_probabilities(row), _probabilities(ev), atol=2.1e-6)


def test_predict_is_cached_by_content_and_out_is_honoured(synth_run, media, tmp_path: Path):
    first = predict_run(synth_run.run, PredictConfig(), files=media["files"])
    stamp = (first.out / "manifest.json").stat().st_mtime_ns
    assert predict_run(synth_run.run, PredictConfig(), files=media["files"]).out == first.out
    assert (first.out / "manifest.json").stat().st_mtime_ns == stamp  # reused
    text = media["folder"] / f"{media['few'][0]}.txt"
    original = text.read_text()
    try:
        text.write_text(original + " A different ending.")  # new content: a new prediction
        changed = predict_run(synth_run.run, PredictConfig(), files=media["files"])
        assert changed.out != first.out
    finally:
        text.write_text(original)
    out = tmp_path / "mine"
    mine = predict_run(synth_run.run, PredictConfig(), files=media["files"], out=out)
    assert mine.out == out
    assert read_csv(out / "predictions.csv") == read_csv(first.out / "predictions.csv")
    assert {p.name for p in out.iterdir()} >= {"predictions.csv", "features.h5", "manifest.json"}


def test_predict_without_a_modality_with_missing(synth_run, media):
    audio_video = [f for f in media["files"] if f.suffix != ".txt"]
    with pytest.raises(DataError, match=r"has no text .* --missing text"):
        predict_run(synth_run.run, PredictConfig(), files=audio_video)
    result = predict_run(synth_run.run, PredictConfig(missing=("text",)), files=audio_video)
    rows = read_csv(result.out / "predictions.csv")
    probs = np.array([_probabilities(r) for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    # the same as evaluating the test split without text
    evaluated = _evaluated(synth_run.run, EvalConfig(missing=("text",)))
    for row in rows:
        assert row["prediction"] == evaluated[row["id"]]["prediction"]
        np.testing.assert_allclose(_probabilities(row), _probabilities(evaluated[row["id"]]), atol=2.1e-6)


def test_cli_prints_a_table_or_json(synth_run, media):
    result = CliRunner().invoke(app, ["predict", "--run", str(synth_run.run), *map(str, media["files"])])
    assert result.exit_code == 0, result.output
    for i in media["few"]:
        assert i in result.stdout
    result = CliRunner().invoke(app, ["predict", "--run", str(synth_run.run), "--json",
                                      "--manifest", str(media["manifest"])])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["task"] == "synth" and payload["target"] == "classification"
    first = payload["predictions"][0]
    ev = media["eval"][first["id"]]
    assert first["prediction"] == int(ev["prediction"]) and set(first) == {"id", "prediction", "class", "probabilities"}


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda run, m: ["--run", str(run), str(m["folder"] / "clip.xyz")], "clip.xyz: unknown kind of media"),
        (lambda run, m: ["--run", str(run), str(m["folder"] / "gone.mp4")], "gone.mp4: no such file"),
        (lambda run, m: ["--run", str(run.parent), str(m["files"][0])], "not a complete train output"),
        (lambda run, m: ["--run", str(run) + "-gone", str(m["files"][0])], "-gone: no such folder"),
        (lambda run, m: ["--run", str(run)], "give media files or --manifest"),
        (lambda run, m: ["--run", str(run), "--manifest", str(m["files"][0])], "not a readable CSV manifest"),
        (lambda run, m: ["--run", str(run), "--missing", "smell", str(m["files"][0])], "--missing smell"),
        (lambda run, m: ["--run", str(run), "--out", str(m["folder"]), *map(str, m["files"])],
         "the folder holds other files"),
        (lambda run, m: ["--run", str(run), str(m["files"][0])], "has no text"),
    ],
)
def test_bad_inputs_are_one_line(synth_run, media, make_args, expected):
    result = CliRunner().invoke(app, ["predict", *make_args(synth_run.run, media)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.output


def test_a_manifest_without_ids_or_with_a_missing_file_is_refused(synth_run, media, tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("audio,video\na.wav,a.mp4\n")
    with pytest.raises(DataError, match="missing column id"):
        predict_run(synth_run.run, PredictConfig(), manifest=bad)
    bad.write_text("id,audio,video,text\nx,nowhere.wav,nowhere.mp4,hello\n")
    with pytest.raises(DataError, match="row 2: audio file nowhere.wav does not exist"):
        predict_run(synth_run.run, PredictConfig(), manifest=bad)
    with pytest.raises(ConfigError, match="one of the two"):
        predict_run(synth_run.run, PredictConfig(), manifest=bad, files=media["files"])


def test_an_undecodable_input_fails_or_is_skipped(synth_run, media, tmp_path: Path):
    broken = tmp_path / f"{media['few'][0]}.wav"
    broken.write_bytes(b"RIFF not audio at all")
    files = [broken, *[f for f in media["files"] if f.stem == media["few"][0] and f.suffix != ".wav"],
             *[f for f in media["files"] if f.stem == media["few"][1]]]
    with pytest.raises(DataError, match=str(broken.name)):
        predict_run(synth_run.run, PredictConfig(), files=files)
    # the refused prediction leaves no partial output behind (`clcr status` stays clean)
    assert not [p for p in (synth_run.run / "predict").glob("*") if not (p / "manifest.json").exists()]
    out = tmp_path / "preds"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        predict_run(synth_run.run, PredictConfig(), files=files, out=out)
    empty = tmp_path / "empty"
    with pytest.raises(DataError, match=str(broken.name)):
        predict_run(synth_run.run, PredictConfig(), files=files, out=empty)
    assert [p.name for p in empty.iterdir() if not p.name.startswith(".lock")] == []
    result = predict_run(synth_run.run, PredictConfig(on_error="skip"), files=files)
    assert [r["id"] for r in read_csv(result.out / "predictions.csv")] == [media["few"][1]]
    assert [s[0] for s in result.skipped] == [media["few"][0]]


def test_predict_finds_the_latest_run_of_a_task_in_a_workspace(synth_run, media, tmp_path):
    import shutil

    # a workspace of its own: other tests add runs of synth to the shared one
    shutil.copytree(synth_run.run, tmp_path / "train" / synth_run.run.name, ignore=shutil.ignore_patterns("predict"))
    by_run = CliRunner().invoke(app, ["predict", "--run", str(synth_run.run), "--json", *map(str, media["files"])])
    latest = CliRunner().invoke(app, ["predict", "--latest", "synth", "--workdir", str(tmp_path), "--json",
                                      *map(str, media["files"])])
    assert latest.exit_code == 0, latest.output
    assert json.loads(latest.stdout)["predictions"] == json.loads(by_run.stdout)["predictions"]
    neither = CliRunner().invoke(app, ["predict", *map(str, media["files"])])
    assert neither.exit_code == 2 and "give --run DIR or --latest TASK" in neither.output
