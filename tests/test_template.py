"""Templates: a poem with fixed characters and open places (＿ or _), completed under the form's rules;
templates the rules cannot complete are refused with the place and the rule named."""

from __future__ import annotations

from functools import cache

import pytest

from tangshi import Poet
from tangshi.generation.tables import FormError, parse_template
from tangshi.options import OptionError
from tangshi.prosody import regular as prosody

QUIET_NIGHT = "床前明月光，＿＿＿＿＿。＿＿＿＿＿，低头＿＿＿。"


@cache
def poet() -> Poet:
    return Poet.load()


def fixed_kept(template: str, text: str) -> bool:
    t, p = prosody.split_lines(template), prosody.split_lines(text)
    return len(t) == len(p) and all(
        a in "＿_" or a == b for tl, pl in zip(t, p, strict=True) for a, b in zip(tl, pl, strict=True)
    )


def test_parse_gives_the_form_and_the_fixed_places():
    form, fixed = parse_template(QUIET_NIGHT)
    assert form.name == "五绝" and fixed[(0, 0)] == "床" and fixed[(3, 1)] == "头" and len(fixed) == 7
    assert parse_template("_" * 7 + "，" + "_" * 7 + "。" + "_" * 7 + "，" + "_" * 7 + "。")[0].name == "七绝"


@pytest.mark.slow
@pytest.mark.parametrize("beam", [0, 4])
def test_the_template_is_completed_in_form_and_keeps_its_characters(beam):
    written = poet().write("", template=QUIET_NIGHT, seed=1, num=4 if beam else 5, beam=beam)
    assert len({p.text for p in written}) == len(written)
    for p in written:
        r = prosody.check(p.text)
        assert fixed_kept(QUIET_NIGHT, p.text) and r.form == "五绝" and r.rhyme and r.relaxed == 1.0
    again = poet().write("", template=QUIET_NIGHT, seed=1, num=4 if beam else 5, beam=beam)
    assert [p.text for p in again] == [p.text for p in written]


@pytest.mark.slow
def test_a_template_with_underscores_and_a_given_rhyme():
    t = "_____，_____。风____，_____。"
    for p in poet().write("", template=t, rhyme="东", seed=2, num=3):
        r = prosody.check(p.text)
        assert fixed_kept(t, p.text) and r.rhyme and r.rhyme_group.endswith("东")


@pytest.mark.slow
@pytest.mark.parametrize(
    "template, options, words",
    [
        ("床前明月光，＿＿＿＿＿。＿＿＿＿＿，低头＿＿。", {}, ["5 + 5 + 5 + 4", "shape"]),
        (QUIET_NIGHT, {"form": "七绝"}, ["line 1 has 5 places", "七绝 line has 7"]),
        ("床前明月光，＿＿＿＿天。＿＿＿＿＿，＿＿＿＿霜。", {}, ["'霜'", "line 4", "rhymes"]),
        ("＿＿明月光，＿＿＿＿＿。＿＿＿＿＿，低头＿＿＿。", {"tones": "strict"}, ["'光'", "line 1", "strict"]),
        ("床前明月光，＿＿＿＿＿。＿＿＿＿＿，低头★＿＿。", {}, ["line 4, place 3", "'★'"]),
    ],
)
def test_templates_the_rules_cannot_complete_are_refused_by_place_and_rule(template, options, words):
    with pytest.raises(FormError) as e:
        poet().write("", template=template, **options)
    assert e.value.field == "template" and all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.slow
def test_a_template_agrees_with_the_begin_and_is_not_mixed_with_keywords():
    assert poet().write("床前", template=QUIET_NIGHT, seed=1)[0].text.startswith("床前明月光")
    with pytest.raises(OptionError) as e:
        poet().write("月", template=QUIET_NIGHT)
    assert e.value.field == "template" and "'床'" in str(e.value)
    with pytest.raises(OptionError) as e:
        poet().write("", template=QUIET_NIGHT, keywords=("明月",))
    assert e.value.field == "template"


@pytest.mark.slow
def test_the_cli_writes_a_template_and_refuses_a_bad_one(capsys):
    from tangshi.cli import main

    assert main(["write", "--template", QUIET_NIGHT, "--seed", "3", "--json"]) == 0
    out = capsys.readouterr().out
    assert "床前明月光" in out and "低头" in out
    assert main(["write", "--template", "床前明月光，＿＿＿＿天。＿＿＿＿＿，＿＿＿＿霜。"]) == 2
    err = capsys.readouterr().err
    assert "line 4" in err and "Traceback" not in err


def test_a_template_of_no_line_says_so():
    with pytest.raises(FormError, match="--template has no line: not the shape"):
        parse_template("。")
    assert prosody.explain(prosody.check("。"))[0].message.startswith("no line: not a 五绝")


def test_a_template_of_a_wrong_shape_names_its_lines():
    with pytest.raises(FormError, match=r"--template has lines of 5 \+ 5 places"):
        parse_template("_____，_____。")
