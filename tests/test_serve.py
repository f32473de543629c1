"""The HTTP API with FastAPI's TestClient: poems, models, health, and a 422 naming the field for
every kind of bad request; the limits (lone surrogates, bounded echoes, HEAD, the readers' queue and
cost bounds, the whole-body deadline, quiet logs, light jobs first) with a tiny checkpoint, fast."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fastapi.testclient import TestClient

from tangshi import Poet
from tangshi.config import ServeConfig
from tangshi.data.standard import standard_form
from tangshi.data.text import to_script
from tangshi.serve import create_app

slow = pytest.mark.slow  # the tests with the bundled model; those with a tiny checkpoint are fast


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(settings=ServeConfig(max_num=8))) as c:
        yield c


@slow
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


@slow
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


@slow
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


@slow
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


@slow
def test_acrostic_num_and_traditional_script(client):
    r = client.post("/v1/poems", json={"acrostic": "春夏秋冬", "form": "五绝", "num": 3, "seed": 4})
    poems = r.json()["poems"]
    assert len(poems) == 3 and all([ln[0] for ln in p["prosody"]["lines"]] == list("春夏秋冬") for p in poems)
    simple = client.post("/v1/poems", json={"begin": "风", "form": "五律", "seed": 9}).json()["poems"][0]
    trad = client.post("/v1/poems", json={"begin": "风", "form": "五律", "seed": 9, "script": "traditional"})
    trad = trad.json()["poems"][0]
    assert trad["text"].startswith("風")
    # the same poem: the traditional text in simplified is the simplified one, but for the variants that the
    # simplified output writes in their standard form (data.standard: 堦 -> 阶 where traditional keeps 堦)
    plain = to_script(trad["text"], "simplified")
    assert len(plain) == len(simple["text"])
    assert all(a == b or standard_form(a) == b for a, b in zip(plain, simple["text"], strict=True))


@slow
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


@slow
def test_bodies_that_are_not_json_or_too_large(client):
    r = client.post("/v1/poems", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = client.post("/v1/poems", content=b"x" * 20000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "16384 bytes" in r.json()["detail"]
    assert client.get("/health").status_code == 200  # still serving


@slow
def test_several_checkpoints_chosen_per_request(tiny_run):
    with TestClient(create_app({"tang": None, "tiny": tiny_run / "best"})) as c:
        assert [m["name"] for m in c.get("/v1/models").json()["models"]] == ["tang", "tiny"]
        r = c.post("/v1/poems", json={"model": "tiny", "begin": "月", "seed": 2, "max_length": 20})
        assert r.status_code == 200 and r.json()["model"] == "tiny"
        assert r.json()["poems"][0]["text"] == Poet.load(tiny_run / "best").write("月", seed=2, max_length=20)[0].text


@slow
def test_batched_requests_write_what_each_would_alone():
    poet = Poet.load()
    together = poet.write(["月", "山", "湖"], nums=[1, 2, 1], seeds=[5, 17, 40], form="五绝")
    alone = [poet.write(b, num=n, seed=s, form="五绝") for b, n, s in (("月", 1, 5), ("山", 2, 17), ("湖", 1, 40))]
    assert [p.text for p in together] == [p.text for group in alone for p in group]


@slow
def test_notes_stay_with_their_request_in_a_batch():
    written = Poet.load().write(["薴", "月", "薴"], nums=[1, 2, 1], seeds=[1, 2, 3])
    assert [bool(n) for n in written.group_notes] == [True, False, True] and "variant" in written.notes[0]


@slow
def test_nan_and_infinity_get_a_422_not_a_500(client):
    for raw in (b'{"repetition_penalty": NaN}', b'{"temperature": Infinity}', b'{"top_p": -Infinity}'):
        r = client.post("/v1/poems", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "finite" in r.json()["detail"][0]["msg"], r.text


# The limits, with a tiny checkpoint: fast.

POEM_ALL_MOON = "，".join(["月" * 7] * 8) + "。"  # a 七律's shape, 32 places breaking the rules
QUIET_NIGHT = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"


@pytest.fixture
def tiny_client(tiny_run):
    settings = ServeConfig(max_num=2, max_places=3, max_readers=2)
    with TestClient(create_app({"tiny": tiny_run / "best"}, settings)) as c:
        yield c


@pytest.mark.parametrize(
    "raw",
    [
        b'{"begin": "\\ud800"}',
        b'{"\\ud800": 1}',
        b'{"text": "\\u6708\\udfff", "poem": "x"}',
        b'{"keywords": ["\\udc00"], "model": "\\ud800x"}',
        b'{"a": {"\\ud800": ["\\ud800"]}}',
    ],
)
def test_lone_surrogates_get_422_on_every_post_endpoint(tiny_client, raw):
    for path in ("/v1/poems", "/v1/check", "/v1/lines"):
        r = tiny_client.post(path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, (path, r.text)
        assert "lone surrogate" in r.json()["detail"][0]["msg"]
    pair = tiny_client.post("/v1/check", json={"text": "\U0001f319" + "月" * 4})  # a valid pair is a character
    assert pair.status_code == 200, pair.text


def test_messages_echo_a_bounded_prefix_and_encodable_text():
    from tangshi.serve.errors import MAX_MESSAGE, safe, unknown_model, unprocessable

    assert len(safe("a" * 10_000)) == MAX_MESSAGE + 1 and safe("月\ud800") == "月\\ud800"
    r = unprocessable("keywords", "--keywords '" + "风" * 10_000 + "' is not known")
    assert len(r.body) < 1200 and r.status_code == 422
    assert b"\\\\ud800" in unknown_model("\ud800" + "x" * 1000, ["tiny"]).body


def test_a_long_field_is_not_echoed_whole(tiny_client):
    r = tiny_client.post("/v1/poems", json={"keywords": ["a" * 10_000]})
    assert r.status_code == 422 and len(r.content) < 400, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "keywords", 0]


def test_head_is_answered_like_get(tiny_client):
    for path in ("/health", "/v1/models", "/v1/cipai?q=浣溪", "/"):
        head, get = tiny_client.head(path), tiny_client.get(path)
        assert head.status_code == get.status_code == 200 and head.content == b"", path


def test_readers_are_bounded_in_cost(tiny_client):
    r = tiny_client.post("/v1/lines", json={"poem": QUIET_NIGHT, "line": 2, "num": 3})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "num"] and "--max-num" in r.text
    r = tiny_client.post("/v1/check", json={"text": POEM_ALL_MOON})
    detail = r.json()["detail"][0]
    assert r.status_code == 422 and detail["loc"] == ["body", "suggest"] and "32 broken places" in detail["msg"]
    r = tiny_client.post("/v1/check", json={"text": POEM_ALL_MOON, "suggest": 0})
    assert r.status_code == 200 and len(r.json()["problems"]) >= 32


def test_readers_past_the_queue_bound_get_503(tiny_client):
    readers = tiny_client.app.state.served.readers
    readers.count = 2  # as many as --max-readers wait or run
    try:
        r = tiny_client.post("/v1/check", json={"text": "床前明月光"})
    finally:
        readers.count = 0
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "--max-readers" in r.text


class _Gone:
    """A request whose client has gone."""

    async def receive(self):
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}


def test_a_reader_whose_client_goes_while_it_waits_is_never_run():
    from tangshi.serve import reading
    from tangshi.serve.state import Served

    async def go():
        served = Served({}, ServeConfig(), worker=None)  # type: ignore[arg-type]
        await served.readers.lock.acquire()  # another reader is being read
        ran = []
        out = await reading._read(served, _Gone(), lambda: ran.append(1))  # type: ignore[arg-type]
        return out, ran, served.readers

    out, ran, readers = asyncio.run(go())
    assert out.status_code == 499 and ran == [] and readers.dropped == 1 and readers.count == 0


def test_a_body_sent_a_byte_at_a_time_gets_408_at_the_whole_body_deadline():
    from tangshi.serve.transport import BodyLimit

    async def trickle():
        await asyncio.sleep(0.1)
        return {"type": "http.request", "body": b"{", "more_body": True}

    sent = []

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # never reached
        raise AssertionError("the body never ends")

    scope = {"type": "http", "method": "POST", "headers": []}
    start = time.monotonic()
    asyncio.run(BodyLimit(app, max_body=1000, timeout=0.5)(scope, trickle, send))
    assert sent[0]["status"] == 408 and time.monotonic() - start < 1.5


def test_repeated_log_messages_are_let_through_once_a_period_with_a_count():
    import logging

    from tangshi.serve.transport import QuietLog

    quiet = QuietLog(every=0.2)

    def record(msg):
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    passed = [quiet.filter(record(f"socket.accept() out of system resource {i}")) for i in range(1000)]
    assert passed.count(True) == 1 and quiet.filter(record("another message"))
    time.sleep(0.25)
    later = record("socket.accept() out of system resource")
    assert quiet.filter(later) and "999 like it" in later.getMessage()


def test_a_light_job_waits_for_at_most_one_heavy_batch():
    from tangshi.options import WriteOptions
    from tangshi.serve.batching import Job, Worker

    def job(begin, **options):
        return Job("m", begin, WriteOptions(**options), future=None, loop=None)  # type: ignore[arg-type]

    worker = Worker({}, ServeConfig(batch_max=64))
    for i in range(3):
        worker.submit(job(f"heavy{i}", form="七律", num=4, rerank=16))
    worker.submit(job("light", form="五绝"))
    order = [[j.begin for j in worker._next_batch()] for _ in range(4)]
    assert order == [["heavy0"], ["light"], ["heavy1"], ["heavy2"]]  # 64 candidates a batch: one heavy job
    for begin in "月山":
        worker.submit(job(begin, form="五绝"))
    assert [j.begin for j in worker._next_batch()] == ["月", "山"]  # light jobs with the same options: one batch


@slow
def test_more_poems_than_the_servers_widest_beam_are_sampled_unless_a_beam_is_asked():
    with TestClient(create_app(settings=ServeConfig(max_num=8, max_beam=4))) as c:
        searched = c.post("/v1/poems", json={"begin": "月", "form": "五绝", "num": 3, "seed": 2})
        many = c.post("/v1/poems", json={"begin": "月", "form": "五绝", "num": 6, "seed": 2})
        asked = c.post("/v1/poems", json={"begin": "月", "form": "五绝", "num": 6, "beam": 8})
    assert searched.status_code == 200 and many.status_code == 200 and len(many.json()["poems"]) == 6
    direct = Poet.load().write("月", form="五绝", num=6, seed=2, beam=0)  # what sampling writes
    assert [p["text"] for p in many.json()["poems"]] == [p.text for p in direct]
    assert asked.status_code == 422 and "beam" in asked.text
