"""Options declared once: flags, TOML, --set, checking and the model's options."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest
import typer
from typer.testing import CliRunner

from clcr_cli.cli import app
from clcr_cli.config import (
    RECIPES,
    SECTIONS,
    coerce,
    declared,
    effective_toml,
    extract_config,
    flag,
    load_toml,
    options,
    parse_set,
    recipe_layers,
    train_config,
)
from clcr_cli.errors import ConfigError
from clcr_cli.model import ModelConfig, build_model
from clcr_cli.store import ModalityInfo
from clcr_cli.training.data import model_config

# a valid value other than the default for every option of the model
MODEL_VALUES = {
    "model": "late-fusion",
    "variant": "no-reg",
    "d": 48,
    "num_levels": 2,
    "num_heads": 2,
    "participation": 0.5,
    "learn_budget": False,
    "budget_scale": 2.0,
    "shared_dim": 16,
    "private_dim": 8,
    "lambda_intra": 0.2,
    "lambda_inter": 0.3,
    "regression_loss": "mse",
    "whitening": "full",
    "dropout": 0.2,
    "max_len": 256,
    "frame_channels": (8, 16, 32),
    "tcn_kernel": 5,
    "reg_max_tokens": 1024,
    "encoder": "resnet18",
    "text_finetune": True,
    "lambda_aux": 0.5,
    "evidence": "both",
    "evidence_temperature": 0.2,
    "spec_time_mask": 0.1,
    "spec_freq_mask": 0.1,
}
# options that are only valid beside another one: set together with it
COMPANIONS = {"evidence": {"lambda_aux": 0.5}}
DATA_FIELDS = {"modalities", "task", "num_classes", "text_encoder"}
STORE = SimpleNamespace(  # what model_config reads of a feature store
    modalities={
        "text": ModalityInfo("text", "levels", "text", (3, 8, 6), "float32"),
        "audio": ModalityInfo("audio", "sequence", "audio", (10, 5), "float32"),
        "video": ModalityInfo("video", "frames", "video", (4, 8, 8, 3), "uint8"),
    },
    target="classification",
    num_classes=4,
)


def toml_literal(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def test_every_model_setting_is_an_option():
    """A field added to ModelConfig without help would not be settable: it must have it."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(options(ModelConfig)) == names - DATA_FIELDS == set(MODEL_VALUES)


@pytest.mark.parametrize("name", sorted(MODEL_VALUES))
def test_every_model_option_is_settable_from_toml_and_set_and_lands_in_the_model(name, tmp_path: Path):
    value = MODEL_VALUES[name]
    chosen = {name: value, **COMPANIONS.get(name, {})}
    config = tmp_path / "c.toml"
    lines = "".join(f"{k} = {toml_literal(v)}\n" for k, v in chosen.items())
    config.write_text(f'[train]\ntask = "mosi"\n\n[train.model]\n{lines}')
    from_toml = train_config(load_toml(config), {}, str(config))
    from_set = train_config({}, {"task": "mosi"}, sets=parse_set([f"model.{k}={toml_literal(v)}" for k, v in chosen.items()]))
    bare_set = train_config({}, {"task": "mosi"}, sets=parse_set([f"{k}={toml_literal(v)}" for k, v in chosen.items()]))
    assert from_toml == from_set == bare_set
    assert getattr(from_toml.model, name) == value
    # everything else is the default
    defaults = ModelConfig(())
    assert dataclasses.replace(from_toml.model, **{k: getattr(defaults, k) for k in chosen}) == defaults
    model = build_model(model_config(from_toml, STORE))
    assert getattr(model.config, name) == value
    assert model.config.num_classes == 4 and [s.name for s in model.config.modalities] == ["text", "audio", "video"]


def test_model_options_by_flag_bare_name_and_the_recipe():
    cfg = train_config({"train": {"d": 16, "model": "misa"}}, {"task": "synth", "model.num_heads": "2"})
    assert (cfg.model.d, cfg.model.model, cfg.model.num_heads) == (16, "misa", 2)
    # the short-budget recipe (configs/default.toml) sets the model's width in the model section
    (_, default), (_, synth) = recipe_layers("synth", "train")
    assert default["model"] == {"d": 64, "num_heads": 2} and synth == {}
    assert (train_config({}, {"task": "synth"}).model.d, train_config({}, {"task": "synth"}).model.num_heads) == (64, 2)
    assert train_config({}, {"task": "cremad"}).model.d == ModelConfig(()).d == 128
    assert train_config({}, {"task": "synth", "d": "32"}).model.d == 32  # a flag wins


def test_coerce_checks_and_converts():
    assert coerce("3", int) == 3 and coerce(3, float) == 3.0 and coerce("1e-3", float) == 0.001
    assert coerce("0,0.5", tuple[float, ...]) == (0.0, 0.5) and coerce(["1,2", "3"], tuple[int, ...]) == (1, 2, 3)
    assert coerce(None, int | None) is None and coerce("true", bool) is True
    for value, hint in (("ten", int), ("fast", float), (True, int), (1.5, int), (3, str), ("x", bool),
                        ("adam", Literal["sgd", "adamw"]), ("1,2", tuple[int, int, int])):
        with pytest.raises(ValueError):
            coerce(value, hint)


def test_every_option_is_a_flag_of_its_commands():
    command = typer.main.get_command(app)
    for name, sections in {"extract": ["extract"], "train": ["train"], "eval": ["train", "eval"],
                           "ablate": ["train", "ablate"], "noise": ["train", "noise"],
                           "predict": ["predict"]}.items():
        flags = {opt for p in command.commands[name].params for opt in p.opts + p.secondary_opts}
        for section in sections:
            for path, f, _ in declared(SECTIONS[section]):
                if name in ("ablate", "noise") and path in ("model.model", "model.variant"):
                    continue  # what those stages vary
                expected = flag(path.rsplit(".", 1)[-1], f).split("/")[0]
                assert expected in flags, (name, path)


def one_error_line(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("given", "toml", "expected"),
    [
        (["--epochs", "ten"], "epochs = 'ten'", "epochs: expected an integer, got 'ten'"),
        (["--lr", "fast"], "lr = 'fast'", "lr: expected a number, got 'fast'"),
        (["--epochs", "0"], "epochs = 0", "epochs: must be at least 1, got 0"),
        (["--optimizer", "adam"], "optimizer = 'adam'", "optimizer: must be one of sgd, adamw, not 'adam'"),
    ],
)
def test_bad_values_are_one_line_from_flags_set_and_toml(given, toml, expected, tmp_path: Path):
    common = ["--workdir", str(tmp_path)]
    assert expected in one_error_line(["train", *given, *common])
    name, value = given[0][2:], given[1]
    assert f"--set {name}: " + expected.split(": ", 1)[1] in one_error_line(["train", "--set", f"{name}={value}", *common])
    config = tmp_path / "c.toml"
    config.write_text(f"[train]\n{toml}\n")
    assert f"{config}: [train] {expected}" in one_error_line(["eval", "--config", str(config), *common])


def test_unknown_and_out_of_range_options_are_one_line(tmp_path: Path):
    common = ["--workdir", str(tmp_path)]
    assert "No such option: --epochz" in one_error_line(["train", "--epochz", "3", *common])
    assert "unknown train option(s): epochz (did you mean epochs?)" in one_error_line(["train", "--set", "epochz=3", *common])
    assert "unknown model option(s): model.sharde_dim" in one_error_line(["train", "--set", "model.sharde_dim=3", *common])
    config = tmp_path / "c.toml"
    config.write_text("[train.model]\nwhitenning = 'full'\n")
    assert f"{config}: [train]: unknown model option(s): model.whitenning" in one_error_line(["noise", "--config", str(config), *common])
    config.write_text("[trian]\nepochs = 3\n")
    assert "unknown section(s) trian" in one_error_line(["ablate", "--config", str(config), *common])
    # the model's own checks run before any data is read
    assert "--participation: must lie in (0, 1], got 1.5" in one_error_line(["train", "--participation", "1.5", *common])
    assert "--set participation: must lie in (0, 1]" in one_error_line(["train", "--set", "model.participation=1.5", *common])
    config.write_text("[train.model]\ntcn_kernel = 4\n")
    assert f"{config}: [train] tcn_kernel: must be odd, got 4" in one_error_line(["eval", "--config", str(config), *common])
    assert "--sigmas: must be at least 0" in one_error_line(["noise", "--sigmas", "-1,0", *common])
    assert "--seeds: expected an integer" in one_error_line(["train", "--seeds", "1,x", *common])
    assert not list(tmp_path.glob("*/*"))  # nothing was extracted or trained


def test_parse_set_reads_toml_literals_or_strings():
    assert parse_set(["lr=0.01", "model.learn_budget=false", "variant=full-mix", "sigmas=[0, 0.5]"]) == {
        "lr": 0.01, "model.learn_budget": False, "variant": "full-mix", "sigmas": [0, 0.5],
    }
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set(["lr"])


def test_every_recipe_is_headed_by_its_command_and_resolves():
    names = sorted(p.name.removesuffix(".toml") for p in RECIPES.iterdir() if p.name.endswith(".toml"))
    assert {"default", "synth", "synth-reg", "cremad", "ks", "ave", "ucf101", "mosi", "mosei"} <= set(names)
    for name in names:
        first = (RECIPES / f"{name}.toml").read_text().splitlines()[0]
        assert first.startswith("# Recipe of") and "clcr " in first, (name, first)
        task = "fsdd-digits" if name == "default" else name
        extract_config({}, {"dataset": task})
        train_config({}, {"task": task})
    # a task without a recipe of its own gets default.toml; synth-reg extends synth extends default
    assert [w.split(":")[0] for w, _ in recipe_layers("mine", "train")] == ["clcr_cli/configs/default.toml"]
    assert [w.split(":")[0] for w, _ in recipe_layers("synth-reg", "extract")] == [
        "clcr_cli/configs/default.toml", "clcr_cli/configs/synth.toml", "clcr_cli/configs/synth-reg.toml"]
    assert extract_config({}, {"dataset": "synth-reg"}).frame_size == 32
    assert train_config({}, {"task": "cremad"}).optimizer == "sgd" and train_config({}, {"task": "mine"}).epochs == 10


def test_clcr_config_prints_the_options_a_task_uses_as_a_config_that_reads_back(tmp_path: Path):
    result = CliRunner().invoke(app, ["config", "--task", "synth", "--set", "epochs=3"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "synth.toml"
    path.write_text(result.output)
    toml = load_toml(path)
    assert toml["train"]["epochs"] == 3 and toml["train"]["optimizer"] == "adamw" and toml["extract"]["frame_size"] == 32
    assert train_config(toml, {}) == train_config({}, {"task": "synth", "epochs": 3})
    assert extract_config(toml, {}) == extract_config({}, {"dataset": "synth"})
    assert "# root = (unset)" in result.output  # an unset option is shown, commented out
    text = effective_toml({"train": train_config({}, {"task": "cremad"})})
    assert "epochs = 100" in text and "[train.model]" in text and "d = 128" in text


def test_an_error_names_where_its_value_was_given(tmp_path: Path):
    common = ["--task", "synth", "--workdir", str(tmp_path)]
    assert one_error_line(["train", "--d", "100000", *common]) == "error: --d: must be from 2 to 2048, got 100000"
    assert one_error_line(["train", "--set", "d=100000", *common]).startswith("error: --set d: must be from 2")
    config = tmp_path / "c.toml"
    config.write_text("[train]\nd = 100000\n")
    assert one_error_line(["train", "--config", str(config), *common]).startswith(f"error: {config}: [train] d: must be")
    # a check across options names each option given, and where: the flag, and the recipe's d
    line = one_error_line(["train", "--num-heads", "3", *common])
    assert line.startswith("error: --num-heads, clcr_cli/configs/default.toml: [train] d: num_heads=3 must divide")
    assert one_error_line(["train", "--budget", "0.5", *common]).startswith("error: No such option: --budget")


def test_impossible_schedules_and_rates_are_refused_when_parsed(tmp_path: Path):
    common = ["--task", "synth", "--workdir", str(tmp_path)]
    line = one_error_line(["train", "--warmup-epochs", "5", "--epochs", "2", *common])
    assert line == "error: --warmup-epochs 5: must be at most epochs - 1 = 1 (the rest of the run decays)"
    # the recipe's 2 warmup epochs are cut to epochs - 1 instead: --epochs 2 on synth trains
    assert train_config({}, {"task": "synth", "epochs": 2}).warmup_epochs == 2
    assert one_error_line(["ablate", "--budget-sweep", "0.5,0", *common]) == (
        "error: --budget-sweep: must be more than 0, got 0.0")
