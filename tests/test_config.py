import dataclasses

import pytest

from tangshi.config import ConfigError, RunConfig, apply_overrides, load_preset, preset_names


def test_presets_reproduce_the_seeds():
    assert {"seed-tf", "seed-pytorch", "default"} <= set(preset_names())
    tf = load_preset("seed-tf")
    assert (tf.model.cell, tf.model.embedding_size, tf.model.hidden_size, tf.model.num_layers) == ("rnn", 64, 128, 1)
    assert (tf.train.optimizer, tf.train.lr, tf.train.batch_size, tf.train.schedule) == ("adam", 5e-4, 100, "constant")
    pt = load_preset("seed-pytorch")
    assert (pt.model.cell, pt.model.embedding_size, pt.model.hidden_size, pt.model.num_layers) == ("lstm", 100, 128, 2)
    assert (pt.train.optimizer, pt.train.lr, pt.train.clip_grad, pt.train.checkpoint_every) == (
        "rmsprop",
        0.01,
        1.0,
        20,
    )
    for name in preset_names():
        load_preset(name).validate()


def test_overrides_land_in_their_section_and_roundtrip():
    cfg = apply_overrides(load_preset("default"), {"cell": "rnn", "lr": 0.5, "min_length": 7})
    assert (cfg.model.cell, cfg.train.lr, cfg.data.min_length) == ("rnn", 0.5, 7)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown option --colour"):
        apply_overrides(cfg, {"colour": 1})


def test_config_json_errors_name_the_field():
    raw = RunConfig().to_dict()
    raw["model"]["hidden"] = 3
    with pytest.raises(ConfigError, match="model: unknown field 'hidden'"):
        RunConfig.from_dict(raw)
    raw = RunConfig().to_dict()
    raw["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match="'lr' must be float"):
        RunConfig.from_dict(raw)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lr", 0.0, "--lr must be > 0"),
        ("batch_size", 0, "--batch-size must be >= 1"),
        ("optimizer", "lion", "--optimizer must be one of"),
    ],
)
def test_validation_names_the_option(field, value, message):
    cfg = RunConfig()
    cfg.train = dataclasses.replace(cfg.train, **{field: value})
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


@pytest.mark.parametrize(
    "model, message",
    [
        ({"output": "hierarchical"}, "--output must be one of full, adaptive"),
        ({"output": "adaptive", "cutoffs": "3000,1000"}, "--cutoffs must be increasing integers"),
        ({"output": "adaptive", "cutoffs": "a,b"}, "--cutoffs must be increasing integers"),
        ({"output": "adaptive", "tie_weights": True}, "--tie-weights works with --output full only"),
        ({"output": "adaptive", "hidden_size": 8, "div_value": 4.0}, "--div-value 4: the rarest of 2 clusters"),
    ],
)
def test_output_layer_options_name_the_option(model, message):
    cfg = RunConfig()
    cfg.model = dataclasses.replace(cfg.model, **model)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_precision_must_be_known():
    cfg = RunConfig()
    cfg.train.precision = "fp8"
    with pytest.raises(ConfigError, match="--precision must be one of fp32, bf16, fp16, auto"):
        cfg.validate()


def test_the_bundled_preset_is_the_recipe_of_the_shipped_model():
    import dataclasses
    import json

    from tangshi.api import bundled_path

    raw = json.loads((bundled_path() / "config.json").read_text("utf-8"))
    shipped = RunConfig.from_dict(raw)  # options added since it was trained take their defaults
    preset = load_preset("bundled")
    model = {k: v for k, v in dataclasses.asdict(preset.model).items() if k != "vocab_size"}
    assert model == {k: v for k, v in dataclasses.asdict(shipped.model).items() if k != "vocab_size"}
    assert preset.data == dataclasses.replace(shipped.data, genre_weights="")  # weights: the fine-tune's emphasis
    keys = ("optimizer", "schedule", "decay_fraction", "batch_size")
    if not shipped.train.init_from:  # trained from scratch: the whole recipe; a fine-tune has its own rate and time
        keys += ("lr", "warmup_steps", "max_minutes")
    for key in keys:
        assert getattr(preset.train, key) == getattr(shipped.train, key), key
