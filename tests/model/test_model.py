"""CLCR variants and baselines end to end: shapes, masks, missing modalities, losses, config."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch
from model_fixtures import AUDIO, TEXT, VIDEO, tiny_batch, tiny_config

from clcr_cli.model import (
    BASELINES,
    VARIANTS,
    Batch,
    ModalitySpec,
    ModelConfig,
    build_model,
    count_parameters,
    estimate_flops,
)
from clcr_cli.model.errors import ModelConfigError

MODALITY_SETS = {2: (AUDIO, VIDEO), 3: (TEXT, AUDIO, VIDEO)}
ALL_MODELS = [("clcr", v) for v in VARIANTS] + [(b, "full") for b in BASELINES]
TERMS = ("task", "intra", "inter", "pr", "sp", "mix")


def padded(batch: Batch, extra: int) -> Batch:
    """The same batch with ``extra`` random padding steps appended to every modality."""
    inputs = {}
    for m, x in batch.inputs.items():
        axis = 2 if x.dim() == 4 else 1
        shape = list(x.shape)
        shape[axis] = extra
        pad = (
            torch.randint(0, 256, shape).to(x.dtype)
            if x.dtype == torch.uint8
            else torch.randn(shape) * 5
        )
        inputs[m] = torch.cat([x, pad], axis)
    return Batch(inputs=inputs, lengths=batch.lengths, target=batch.target, present=batch.present)


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize(("model", "variant"), ALL_MODELS)
def test_shapes_terms_and_padding(model: str, variant: str, count: int, levels: int) -> None:
    config = tiny_config(MODALITY_SETS[count], model=model, variant=variant, num_levels=levels)
    net = build_model(config).eval()
    batch = tiny_batch(config)
    with torch.no_grad():
        out = net(batch)
        out_padded = net(padded(batch, 3))
    assert out.logits.shape == (4, 3)
    assert out.loss is not None and torch.isfinite(out.loss)
    for name in TERMS:
        assert (
            out.terms[name].dim() == 0 and torch.isfinite(out.terms[name]) and out.terms[name] >= 0
        )
    if model == "clcr":
        slots = levels if VARIANTS[variant].hierarchy else 1
        assert out.level_weights.shape == (4, slots) and out.modality_weights.shape == (4, count)
        torch.testing.assert_close(out.level_weights.sum(1), torch.ones(4))
        torch.testing.assert_close(out.modality_weights.sum(1), torch.ones(4))
        if slots == 1:  # no level pair to compare
            assert out.terms["pr"] == 0 and out.terms["sp"] == 0 and out.terms["mix"] == 0
    else:
        assert out.level_weights is None and out.modality_weights is None
    torch.testing.assert_close(out_padded.logits, out.logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("model", "variant"), ALL_MODELS)
def test_missing_modality_cannot_influence_output(model: str, variant: str) -> None:
    config = tiny_config(model=model, variant=variant)
    net = build_model(config).eval()
    batch = tiny_batch(config)
    present = {
        "text": torch.tensor([True, True, False, True]),
        "audio": torch.ones(4, dtype=torch.bool),
        "video": torch.tensor([False, True, True, True]),
    }
    masked = Batch(inputs=batch.inputs, lengths=batch.lengths, target=batch.target, present=present)
    # scramble only what is missing: text of sample 2, video of sample 0
    scrambled_inputs = {m: x.clone() for m, x in batch.inputs.items()}
    scrambled_inputs["text"][2] = torch.randn_like(batch.inputs["text"][2]) * 10
    scrambled_inputs["video"][0] = torch.randint_like(batch.inputs["video"][0], 0, 256)
    scrambled = Batch(
        inputs=scrambled_inputs, lengths=batch.lengths, target=batch.target, present=present
    )
    with torch.no_grad():
        a, b, full = net(masked), net(scrambled), net(batch)
    # the missing inputs do not matter, for any sample
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(a.loss)
    # and marking them missing does change the prediction
    assert not torch.allclose(a.logits[0], full.logits[0])
    if a.modality_weights is not None:
        assert a.modality_weights[0, 2] == 0 and a.modality_weights[2, 0] == 0


def test_no_target_gives_no_loss_and_regression_gives_scalars() -> None:
    config = tiny_config(task="regression", regression_loss="mse")
    net = build_model(config)
    batch = tiny_batch(config)
    out = net(batch)
    assert out.logits.shape == (4,)
    torch.testing.assert_close(
        out.terms["task"], ((out.logits - batch.target) ** 2).mean().detach()
    )
    out = net(Batch(inputs=batch.inputs, lengths=batch.lengths))
    assert out.loss is None and out.terms["task"] == 0


def test_loss_is_task_plus_weighted_regularisers() -> None:
    config = tiny_config(lambda_intra=0.3, lambda_inter=0.7, lambda_aux=0.4)
    out = build_model(config)(tiny_batch(config))
    t = out.terms
    torch.testing.assert_close(t["inter"], t["pr"] + t["sp"] + t["mix"])
    torch.testing.assert_close(out.loss.detach(), t["task"] + 0.3 * t["intra"] + 0.7 * t["inter"] + 0.4 * t["aux"])
    assert t["intra"] > 0 and t["pr"] > 0 and t["sp"] > 0 and t["mix"] > 0


@pytest.mark.parametrize(
    ("variant", "zero"),
    [
        ("no-reg", ("intra", "inter", "pr", "sp", "mix")),
        ("no-intra-reg", ("intra",)),
        ("no-inter-reg", ("inter", "pr", "sp", "mix")),
        ("no-intraced", ("intra", "pr", "sp")),
        ("no-intercad", ("mix",)),
    ],
)
def test_disabled_terms_are_zero(variant: str, zero: tuple[str, ...]) -> None:
    config = tiny_config(variant=variant)
    out = build_model(config)(tiny_batch(config))
    for name in zero:
        assert out.terms[name] == 0, name
    for name in set(TERMS) - set(zero):
        assert out.terms[name] > 0, name


def test_participation_rate_sets_initial_budget_and_can_be_frozen() -> None:
    config = tiny_config(participation=0.3, learn_budget=False)
    out = build_model(config)(tiny_batch(config))
    for slot in range(3):
        torch.testing.assert_close(out.terms[f"participation_{slot}"], torch.tensor(0.3))


def test_full_mix_changes_what_meets() -> None:
    torch.manual_seed(1)
    full = build_model(tiny_config())
    torch.manual_seed(1)
    mixed = build_model(tiny_config(variant="full-mix"))
    batch = tiny_batch(tiny_config())
    assert not torch.allclose(full.eval()(batch).logits, mixed.eval()(batch).logits)


def test_config_json_round_trip_rebuilds_the_same_model() -> None:
    config = tiny_config(variant="dense-budget", num_levels=2)
    data = json.loads(json.dumps(asdict(config)))
    rebuilt = ModelConfig.from_dict(data)
    assert rebuilt == config
    a, b = build_model(config), build_model(rebuilt)
    b.load_state_dict(a.state_dict())
    batch = tiny_batch(config)
    torch.testing.assert_close(a.eval()(batch).logits, b.eval()(batch).logits)


def test_a_config_saved_before_the_auxiliary_heads_loads_without_them() -> None:
    """model.json of a run made before lambda_aux existed has no such key: it rebuilds the
    model that run trained (lambda_aux = 0, the value named by the field's ``unless``), whose
    weights then load, not today's default."""
    old = asdict(tiny_config(lambda_aux=0.0))
    for name in ("lambda_aux", "evidence", "evidence_temperature", "spec_time_mask", "spec_freq_mask"):
        del old[name]
    rebuilt = ModelConfig.from_dict(json.loads(json.dumps(old)))
    assert rebuilt.lambda_aux == 0.0 and tiny_config().lambda_aux == 1.0
    build_model(rebuilt).load_state_dict(build_model(tiny_config(lambda_aux=0.0)).state_dict())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "transformer"}, "unknown model"),
        ({"variant": "no-everything"}, "unknown CLCR variant"),
        ({"modalities": (AUDIO,)}, "two or more"),
        ({"num_levels": 5}, "extract more text layers"),
        ({"num_heads": 3}, "num_heads"),
        ({"participation": 0.0}, "participation"),
        ({"shared_dim": 12, "private_dim": 8}, "sum <= d"),
    ],
)
def test_bad_configs_raise_config_error(overrides: dict, message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build_model(tiny_config(**overrides))
    with pytest.raises(ModelConfigError, match="unknown model config key"):
        ModelConfig.from_dict({**asdict(tiny_config()), "colour": "red"})


def test_profile_counts_parameters_and_flops() -> None:
    config = tiny_config()
    net = build_model(config)
    count = count_parameters(net)
    assert count == sum(p.numel() for p in net.parameters()) > 0
    batch = tiny_batch(config)
    flops = estimate_flops(net, batch)
    assert flops > 0 and net.training
    bigger = estimate_flops(build_model(replace(config, d=32)), batch)
    assert bigger > flops
    # FLOPs grow with the batch
    assert estimate_flops(net, tiny_batch(config, size=8)) > 1.5 * flops


def test_weights_saved_under_the_names_of_earlier_versions_still_load():
    """``exchange`` was IntraCED (its attention ``exchange.exchange``), ``aggregate`` InterCAD and
    ``budget.rate_logit`` the participation logit: runs trained then keep loading."""
    from clcr_cli.model.clcr import rename_legacy

    config = ModelConfig(
        (ModalitySpec("a", "sequence", 4, 1, 10), ModalitySpec("b", "sequence", 3, 1, 10)),
        num_classes=3, d=16, num_heads=2,
    )
    trained = build_model(config)
    old = {}
    for key, value in trained.state_dict().items():
        key = key.replace("intraced.attention.", "exchange.exchange.").replace(
            "intraced.budget.participation_logit", "exchange.budget.rate_logit")
        old[key.replace("intraced.", "exchange.").replace("intercad.", "aggregate.")] = value
    assert "exchange.budget.rate_logit" in old and "aggregate.level_anchor" in old
    assert rename_legacy(old).keys() == trained.state_dict().keys()
    fresh = build_model(config)
    fresh.load_state_dict(old)  # strict
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
