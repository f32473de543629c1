"""The HTTP API with FastAPI's TestClient: poems, models, health, and a 422 naming the field for
every kind of bad request."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tangshi import Poet
from tangshi.config import ServeConfig
from tangshi.data.text import to_script
from tangshi.serve import create_app

pytestmark = pytest.mark.slow  # the app with the bundled model


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(settings=ServeConfig(max_num=8))) as c:
        yield c


def test_health_models_docs_and_page(client):
    assert client.get("/health").json() == {"status": "ok", "models": ["bundled"]}
    models = client.get("/v1/models").json()["models"]
    assert models[0]["name"] == "bundled" and models[0]["cell"] == "lstm" and "validation loss" in models[0]["card"]
    assert models[0]["line_index"] is True and "path" not in models[0]  # no file-system paths
    assert "/v1/poems" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="poem"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_cipai_patterns_only_for_an_exact_name_and_the_cli_json_is_the_same_listing(client, capsys):
    from tangshi import cli
    from tangshi.prosody import cipai

    exact = client.get("/v1/cipai", params={"q": "酹江月"}).json()["cipai"]  # an alias: its 词牌 alone
    assert exact == cipai.to_dicts([cipai.find("念奴娇")], patterns=True)
    assert exact[0]["formats"][0]["pattern"].count("\n") == 1  # two 阕
    part = client.get("/v1/cipai", params={"q": "浣溪"}).json()["cipai"]
    assert [c["name"] for c in part] == [c.name for c in cipai.search("浣溪")] and "浣溪沙" in {c["name"] for c in part}
    assert all("pattern" not in f for c in part for f in c["formats"])
    assert client.get("/v1/cipai", params={"q": "浣溪纱x"}).json() == {"cipai": []}
    assert cli.main(["cipai", "浣溪", "--json"]) == 0  # the command line gives the patterns of a search too
    listed = json.loads(capsys.readouterr().out)
    without = [{**c, "formats": [{k: v for k, v in f.items() if k != "pattern"} for f in c["formats"]]} for c in listed]
    assert without == part
    assert all(f["pattern"] for c in listed for f in c["formats"])


def test_a_poem_in_form_with_its_prosody(client):
    r = client.post("/v1/poems", json={"begin": "月", "form": "七绝", "seed": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    (poem,) = body["poems"]
    assert body["model"] == "bundled" and poem["text"].startswith("月") and len(poem["lines"]) == 2
    p = poem["prosody"]
    assert p["form"] == "七绝" and p["rhyme"] and p["relaxed"] == 1.0 and len(p["actual"]) == 4
    assert poem["log_likelihood"] < 0 and poem["nll"] > 0
    # the same seed gives the same poem, and the poem Poet.write gives
    again = client.post("/v1/poems", json={"begin": "月", "form": "七绝", "seed": 1}).json()["poems"][0]
    assert again["text"] == poem["text"] == Poet.load().write("月", form="七绝", seed=1)[0].text


def test_the_bundled_model_writes_three_genres(client):
    (model,) = client.get("/v1/models").json()["models"]
    assert set(model["genres"]) == {"唐诗", "宋诗", "宋词"}
    poems = {}
    for genre in ("唐诗", "宋诗"):
        r = client.post("/v1/poems", json={"begin": "梅", "form": "七绝", "genre": genre, "seed": 2})
        assert r.status_code == 200, r.text
        (poems[genre],) = r.json()["poems"]
        p = poems[genre]["prosody"]
        assert p["form"] == "七绝" and p["rhyme"] and p["relaxed"] == 1.0 and poems[genre]["text"].startswith("梅")
    assert poems["唐诗"]["text"] != poems["宋诗"]["text"]  # the genre is read: same seed, another poem
    bad = client.post("/v1/poems", json={"begin": "梅", "genre": "元曲"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "genre"]


def test_acrostic_num_and_traditional_script(client):
    r = client.post("/v1/poems", json={"acrostic": "春夏秋冬", "form": "五绝", "num": 3, "seed": 4})
    poems = r.json()["poems"]
    assert len(poems) == 3 and all([ln[0] for ln in p["prosody"]["lines"]] == list("春夏秋冬") for p in poems)
    simple = client.post("/v1/poems", json={"begin": "风", "form": "五律", "seed": 9}).json()["poems"][0]
    trad = client.post("/v1/poems", json={"begin": "风", "form": "五律", "seed": 9, "script": "traditional"})
    trad = trad.json()["poems"][0]
    assert trad["text"] == to_script(simple["text"], "traditional") and trad["text"].startswith("風")


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"begin": "龘"}, "begin", "begin character '龘' is not in the model's vocabulary"),
        ({"acrostic": "春龘"}, "acrostic", "acrostic head '龘' is not in the model's vocabulary"),
        ({"acrostic": "春夏秋冬春", "form": "五绝"}, "acrostic", "has 5 heads but a 五绝 has 4 lines"),
        ({"acrostic": "春夏秋冬", "form": "五绝", "tones": "strict"}, "tones", "--tones strict cannot be met"),
        ({"rhyme": "xyz", "form": "五律"}, "rhyme", "not a 平水韵 平 group name"),
        ({"rhyme": "阳"}, "rhyme", "--rhyme needs --form"),
        ({"begin": "月", "acrostic": "春夏"}, "acrostic", "the first line must start with '春'"),
        ({"temperature": 0}, "temperature", "greater than 0"),
        ({"top_p": 1.5}, "top_p", "less than or equal to 1"),
        ({"form": "词"}, "form", "Input should be 'free'"),
        ({"num": 9}, "num", "less than or equal to 8"),
        ({"num": 2.0}, "num", "valid integer"),
        ({"seed": False}, "seed", "valid integer"),
        ({"begin": "月" * 17}, "begin", "at most 16 characters"),
        ({"beam": 2, "num": 3}, "num", "must be at most --beam 2"),
        ({"num": 8, "rerank": 9}, "rerank", "num x rerank is 72, over the server's 64"),
        ({"model": "nope"}, "model", "no model 'nope'; loaded: bundled"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
    ],
)
def test_bad_requests_get_422_naming_the_field(client, body, field, message):
    r = client.post("/v1/poems", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][-1] == field and message in detail["msg"], detail


def test_bodies_that_are_not_json_or_too_large(client):
    r = client.post("/v1/poems", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = client.post("/v1/poems", content=b"x" * 20000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "16384 bytes" in r.json()["detail"]
    assert client.get("/health").status_code == 200  # still serving


def test_several_checkpoints_chosen_per_request(tiny_run):
    with TestClient(create_app({"tang": None, "tiny": tiny_run / "best"})) as c:
        assert [m["name"] for m in c.get("/v1/models").json()["models"]] == ["tang", "tiny"]
        r = c.post("/v1/poems", json={"model": "tiny", "begin": "月", "seed": 2, "max_length": 20})
        assert r.status_code == 200 and r.json()["model"] == "tiny"
        assert r.json()["poems"][0]["text"] == Poet.load(tiny_run / "best").write("月", seed=2, max_length=20)[0].text


def test_batched_requests_write_what_each_would_alone():
    poet = Poet.load()
    together = poet.write(["月", "山", "湖"], nums=[1, 2, 1], seeds=[5, 17, 40], form="五绝")
    alone = [poet.write(b, num=n, seed=s, form="五绝") for b, n, s in (("月", 1, 5), ("山", 2, 17), ("湖", 1, 40))]
    assert [p.text for p in together] == [p.text for group in alone for p in group]


def test_notes_stay_with_their_request_in_a_batch():
    written = Poet.load().write(["薴", "月", "薴"], nums=[1, 2, 1], seeds=[1, 2, 3])
    assert [bool(n) for n in written.group_notes] == [True, False, True] and "variant" in written.notes[0]


def test_nan_and_infinity_get_a_422_not_a_500(client):
    for raw in (b'{"repetition_penalty": NaN}', b'{"temperature": Infinity}', b'{"top_p": -Infinity}'):
        r = client.post("/v1/poems", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "finite" in r.json()["detail"][0]["msg"], r.text
