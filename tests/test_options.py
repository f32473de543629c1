"""One definition of the writing options: `tangshi write --help`, `Poet.write` and the HTTP schema
(`/openapi.json`) agree on every option's name, default and bounds; bad values name the option."""

from __future__ import annotations

import dataclasses
import math

import pytest

from tangshi import cli
from tangshi.config import ServeConfig
from tangshi.evaluation import EXTRA_SAMPLERS, SETTINGS
from tangshi.options import (
    CALIBRATED_COHESION,
    DEFAULT_COHESION,
    DEFAULT_DIVERSITY,
    GUIDANCE,
    NAMES,
    PLANNED_GUIDANCE,
    SPECS,
    OptionError,
    WriteOptions,
)
from tangshi.serve.schemas import request_model

SERVER = ServeConfig(max_num=8, max_beam=4)


def write_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["write"]


def test_every_option_is_a_flag_of_tangshi_write_with_its_default_and_bounds():
    parser = write_parser()
    actions = {a.dest: a for a in parser._actions}
    help_text = parser.format_help()
    for spec in SPECS:
        assert spec.flag in help_text, spec.name
        action = actions[spec.name]
        assert action.option_strings == [spec.flag]
        assert action.default == spec.default, spec.name
        if spec.choices:
            assert tuple(action.choices) == spec.choices
        if spec.bounds():
            assert spec.bounds() in " ".join(action.help.split()), spec.name
    args = parser.parse_args([])
    assert cli.write_options(args) == WriteOptions().validate()  # the flags' defaults are the options' defaults


def test_the_http_schema_has_every_option_with_its_default_and_bounds_under_the_servers_limits():
    schema = request_model(SERVER).model_json_schema()
    props = schema["properties"]
    assert set(NAMES) <= set(props) and set(props) - set(NAMES) == {"begin", "model"}
    server_limits = {"num": SERVER.max_num, "beam": SERVER.max_beam, "rerank": SERVER.max_rerank}
    server_limits |= {"max_length": SERVER.max_length, "budget": SERVER.max_budget}
    for spec in SPECS:
        prop = props[spec.name]
        assert prop.get("default") == (list(spec.default) if spec.kind is tuple else spec.default), spec.name
        if spec.kind is tuple:
            assert prop["maxItems"] == spec.items and prop["items"]["maxLength"] == spec.max_length
            continue
        kinds = [prop] + prop.get("anyOf", [])
        bounds = {k: v for kind in kinds for k, v in kind.items() if k in ("minimum", "exclusiveMinimum", "maximum")}
        assert bounds.get("minimum") == spec.ge and bounds.get("exclusiveMinimum") == spec.gt, spec.name
        upper = spec.le if spec.name not in server_limits else min(spec.le, server_limits[spec.name])
        assert bounds.get("maximum") == upper, spec.name
        if spec.choices:
            assert tuple(next(k["enum"] for k in kinds if "enum" in k)) == spec.choices
        if spec.max_length:
            chars = min(spec.max_length, SERVER.max_begin) if spec.name == "acrostic" else spec.max_length
            assert next(k["maxLength"] for k in kinds if "maxLength" in k) == chars
        assert prop["description"] == spec.help


def test_poet_write_takes_exactly_the_options():
    fields = {f.name for f in dataclasses.fields(WriteOptions)}
    assert fields == set(NAMES)
    with pytest.raises(OptionError, match="unknown writing option 'colour'") as caught:
        WriteOptions().replace(colour="red")
    assert caught.value.field == "colour"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"temperature": math.inf}, "temperature", "--temperature must be a finite number (> 0 and <= 10), got inf"),
        ({"temperature": 1e308}, "temperature", "--temperature must be > 0 and <= 10, got 1e+308"),
        ({"repetition_penalty": math.nan}, "repetition_penalty", "must be a finite number"),
        ({"num": 10**9}, "num", "--num must be >= 1 and <= 1000, got 1000000000"),
        ({"form": "词"}, "form", "--form must be one of free, 五绝, 七绝, 五律, 七律, got '词'"),
        ({"rhyme": "阳" * 17}, "rhyme", "--rhyme must be at most 16 characters, got 17"),
        ({"greedy": 1}, "greedy", "--greedy must be bool, got 1"),
        ({"rhyme": "阳"}, "rhyme", "--rhyme needs --form (五绝, 七绝, 五律 or 七律)"),
    ],
)
def test_bad_values_name_the_option(changes, field, message):
    with pytest.raises(OptionError) as caught:
        WriteOptions().replace(**changes).validate()
    assert caught.value.field == field and message in str(caught.value)


@pytest.mark.slow
def test_the_cli_refuses_what_the_options_refuse(capsys):
    assert cli.main(["write", "月", "--temperature", "inf"]) == 2
    assert "--temperature must be a finite number" in capsys.readouterr().err
    assert cli.main(["write", "月", "--num", "1000000000"]) == 2
    assert "--num must be >= 1 and <= 1000" in capsys.readouterr().err
    assert cli.main(["write", "月" * 1000]) == 2
    assert "has 1000 characters, at most 16" in capsys.readouterr().err


def test_help_strings_show_the_defaults_the_code_applies(capsys):
    helps = {s.name: s.help for s in SPECS}
    diversity = f"(none: when sampling {DEFAULT_DIVERSITY:g} where the checkpoint keeps its character counts"
    assert diversity in helps["diversity"]
    cohesion = f"{CALIBRATED_COHESION:g} with its frequency calibration and {DEFAULT_COHESION:g} without"
    assert cohesion in helps["cohesion"]
    assert f"none: {PLANNED_GUIDANCE:g} for a poem with a plan and {GUIDANCE:g} without" in helps["guidance"]
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    eval_help = " ".join(capsys.readouterr().out.split())
    assert "from: " + ", ".join(SETTINGS) in eval_help
    assert " and ".join(f"{t}:{d:g}" for t, d in EXTRA_SAMPLERS) in eval_help


def test_bounds_show_integers_whole_and_long_values_cut():
    with pytest.raises(OptionError) as e:
        WriteOptions(seed=99_999_999_999).validate()
    assert "<= 2147483647, got 99999999999" in str(e.value) and "e+09" not in str(e.value)
    with pytest.raises(OptionError) as e:
        WriteOptions(keywords=("月" * 10_000,)).validate()
    message = str(e.value)
    assert message.startswith("--keywords '" + "月" * 16 + "…' (10,000 characters)") and len(message) < 120
    with pytest.raises(OptionError) as e:
        WriteOptions(num="x" * 10_000).validate()
    assert "(10,002 characters)" in str(e.value) and len(str(e.value)) < 150
