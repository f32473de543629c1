"""Poems over HTTP: a FastAPI app with the JSON API, its OpenAPI docs and the web page.

    tangshi serve                                  # the bundled model on http://127.0.0.1:8000
    tangshi serve --checkpoint tang=runs/a/best --checkpoint gru=runs/b/best --port 9000

`POST /v1/poems` takes every writing option (`tangshi.options.WriteOptions`, with this server's
limits on top) and a begin; `GET /v1/models` lists the loaded checkpoints with their model cards;
`GET /health`; OpenAPI at `/docs`; the page at `/`.

Models load once, in the app's lifespan. Inference runs on one writer thread, off the event loop.
Requests wait in a bounded queue (503 with Retry-After when it is full); the writer takes the oldest
waiting request together with every other waiting request that asks for the same options (they may
differ in begin, num and seed) and writes them as one batch (`batch_max` poems at most). A request
whose client has gone is dropped before it is written, and a batch whose clients have all gone is
stopped while it is written. Each poem draws from its own seeded generator, so a request with a
seed gets the poem it would get alone.

Transport limits: a request body (chunked or not) over `max_body` bytes gets 413 without being held
in memory; a client that takes longer than `client_timeout` seconds to send its headers or body is
disconnected (408 for a body).
"""

import asyncio
import contextlib
import json
import secrets
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, create_model

from tangshi.api import Poet
from tangshi.config import ServeConfig as Settings
from tangshi.generation.search import Stopped
from tangshi.options import MAX_SEED, MAX_TEMPLATE, NAMES, SPECS, TONES, OptionError, Spec, WriteOptions
from tangshi.prosody.regular import FORMS_IN_WORDS

MAX_MODEL_NAME = 64
MAX_ECHO = 64  # characters of a bad value echoed back in a 422
DRAIN_SECONDS = 1.0  # an oversized body is read (and dropped) this long before the 413


# ---------------------------------------------------------------- the request schema


def _limits(spec: Spec, s: Settings) -> dict[str, Any]:
    """An option's bounds for this server: its own, tightened by the server's limits where it has one."""
    upper = {"num": s.max_num, "max_length": s.max_length, "beam": s.max_beam, "rerank": s.max_rerank}
    upper["budget"] = s.max_budget
    le = spec.le
    if spec.name in upper:
        le = upper[spec.name] if le is None else min(le, upper[spec.name])
    chars = spec.max_length
    if spec.name == "acrostic":
        chars = min(chars, s.max_begin)
    limits = {"ge": spec.ge, "gt": spec.gt, "le": int(le) if spec.kind is int and le is not None else le}
    limits["max_length"] = chars
    if spec.kind is float:
        limits["allow_inf_nan"] = False
    return {k: v for k, v in limits.items() if v is not None}


def _field(spec: Spec, s: Settings) -> tuple[Any, Any]:
    """A pydantic field for one option: its type, default, bounds and help."""
    if spec.kind is tuple:  # a list of short strings in JSON
        item = Annotated[str, Field(min_length=1, max_length=spec.max_length)]
        return Annotated[list[item], Field(description=spec.help, max_length=spec.items)], list(spec.default)
    kind: Any = Literal[spec.choices] if spec.choices else spec.kind  # type: ignore[valid-type]
    if spec.nullable:
        kind = kind | None
    return Annotated[kind, Field(description=spec.help, **_limits(spec, s))], spec.default


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no true -> 1, no "5" -> 5


def request_model(settings: Settings) -> type[BaseModel]:
    """The body of POST /v1/poems: the begin, the model, and every writing option within this server's limits."""
    fields: dict[str, Any] = {
        "model": (
            Annotated[str | None, Field(max_length=MAX_MODEL_NAME, description="a loaded checkpoint (GET /v1/models)")],
            None,
        ),
        "begin": (
            Annotated[str, Field(max_length=settings.max_begin, description="begin character or phrase (empty: any)")],
            "",
        ),
    }
    for spec in SPECS:
        fields[spec.name] = _field(spec, settings)
    return create_model("PoemRequest", __base__=_Base, **fields)


class PoemOut(BaseModel):
    text: str
    lines: list[str]
    begin: str
    seed: int
    ended: bool = Field(description="false when the poem was cut at max_length before its end")
    nll: float = Field(description="mean negative log-likelihood per token under the model (nats)")
    log_likelihood: float = Field(description="total log-likelihood of the poem's tokens under the model (nats)")
    acrostic: str = ""
    title: str = Field("", description="the title it was written for")
    author: str = Field("", description="the poet whose manner was asked")
    copied: list[str] = Field(default_factory=list, description="lines found verbatim in the training corpus")
    failure: str | None = Field(None, description="where a form rule could not be met, if anywhere")
    plan: list[dict[str, Any]] | None = Field(None, description="each line's keyword (--keywords, --theme)")
    prosody: dict[str, Any] = Field(description="form, rhyme group, each line's tones, template and scores")


class PoemsOut(BaseModel):
    model: str
    poems: list[PoemOut]
    notes: list[str]


class CheckIn(_Base):
    """The body of POST /v1/check."""

    model: Annotated[str | None, Field(max_length=MAX_MODEL_NAME, description="a loaded checkpoint")] = None
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEMPLATE, description="the poem to read")]
    suggest: Annotated[int, Field(ge=0, le=20, description="characters suggested a broken place")] = 5


class LinesIn(_Base):
    """The body of POST /v1/lines."""

    model: Annotated[str | None, Field(max_length=MAX_MODEL_NAME, description="a loaded checkpoint")] = None
    poem: Annotated[str, Field(min_length=1, max_length=MAX_TEMPLATE, description=f"a {FORMS_IN_WORDS}")]
    line: Annotated[int, Field(ge=1, le=8, description="the line to rewrite, from 1")]
    num: Annotated[int, Field(ge=1, le=32, description="alternatives")] = 8
    seed: Annotated[int | None, Field(ge=0, le=MAX_SEED, description="the same seed, the same alternatives")] = None
    tones: Literal[TONES] = "relaxed"  # type: ignore[valid-type]


def _unprocessable(field_: str, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=422, content={"detail": [{"loc": ["body", field_], "msg": message, "type": "value_error"}]}
    )


# ---------------------------------------------------------------- the writer


class QueueFull(Exception):
    """The writer's queue holds `max_queue` requests."""


@dataclass
class Job:
    model: str
    begin: str
    options: WriteOptions
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    abandoned: bool = False  # the client went away: not written

    @property
    def key(self) -> tuple:
        """Jobs with equal keys are written as one batch: they differ only in begin, num and seed."""
        return (self.model, self.options.replace(num=1, seed=None))


@dataclass
class Worker:
    """One thread that writes poems; waiting jobs with the same options are written as one batch."""

    poets: dict[str, Poet]
    settings: Settings
    waiting: deque = field(default_factory=deque)
    batches: int = 0  # batches written
    writing: int = 0  # poems of the batch being written now
    dropped: int = 0  # jobs dropped because their clients went away
    thread: threading.Thread | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stopping: bool = False

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="tangshi-writer", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self.waiting) >= self.settings.max_queue:
                raise QueueFull
            self.waiting.append(job)
            self._cond.notify()

    def _next_batch(self) -> list[Job] | None:
        """The oldest live job and every waiting job with its key (up to batch_max poems), or None to stop."""
        with self._cond:
            while True:
                for job in [j for j in self.waiting if j.abandoned]:
                    self.waiting.remove(job)
                    self.dropped += 1
                if self.waiting or self._stopping:
                    break
                self._cond.wait()
            if not self.waiting:
                return None
            first = self.waiting.popleft()
            batch, rows = [first], first.options.num
            for job in list(self.waiting):
                if job.key == first.key and rows + job.options.num <= self.settings.batch_max:
                    batch.append(job)
                    rows += job.options.num
                    self.waiting.remove(job)
            return batch

    def _run(self) -> None:
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        while (batch := self._next_batch()) is not None:
            self.writing = sum(j.options.num for j in batch)
            self._write(batch)
            self.batches += 1
            self.writing = 0

    def _write(self, batch: list[Job]) -> None:
        try:
            results = self._write_batch(batch)
        except Stopped:  # every client of the batch has gone
            self.dropped += len(batch)
            return
        except Exception as e:  # noqa: BLE001 - one bad request must not fail the others: one by one
            results = [e] if len(batch) == 1 else [_outcome(lambda j=j: self._write_batch([j])[0]) for j in batch]
        for job, result in zip(batch, results, strict=True):
            job.loop.call_soon_threadsafe(_settle, job.future, result)

    def _write_batch(self, batch: list[Job]) -> list[dict[str, Any]]:
        first = batch[0]
        seeds = [j.options.seed if j.options.seed is not None else secrets.randbits(31) for j in batch]
        written = self.poets[first.model].write(
            [j.begin for j in batch],
            first.options,
            nums=[j.options.num for j in batch],
            seeds=seeds,
            stop=lambda: all(j.abandoned for j in batch),
        )
        out, start = [], 0
        for j in batch:
            mine = written.poems[start : start + j.options.num]
            start += j.options.num
            notes = written.group_notes[len(out)]
            out.append({"model": first.model, "poems": [p.to_dict() for p in mine], "notes": notes})
        return out


def _outcome(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - handed to the request's handler
        return e


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is already read, so the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# ---------------------------------------------------------------- transport limits


class BodyLimit:
    """ASGI middleware: read a request's body (chunked or not) up to `max_body` bytes, each part within
    `timeout` seconds; 413 past the limit and 408 past the time, without holding more than the limit."""

    def __init__(self, app, max_body: int, timeout: float):
        self.app, self.max_body, self.timeout = app, max_body, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await _plain(send, 413, f"request body over {self.max_body} bytes (--max-body)")
        parts, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                return await _plain(send, 408, f"request body not received within {self.timeout:g} s")
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_body:
                if message.get("more_body", False):
                    await self._drain(receive)
                return await _plain(send, 413, f"request body over {self.max_body} bytes (--max-body)")
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body, sent = b"".join(parts), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _drain(self, receive) -> None:
        """Read and drop the rest of an oversized body for up to DRAIN_SECONDS, so that the client, still
        sending, can read the 413 (closing on unread data would reset the connection)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while (left := deadline - loop.time()) > 0:
            try:
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                return
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return


async def _plain(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def header_timeout_protocol(timeout: float):
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete within `timeout` s."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # the headers are in

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout, self._expire)

        def _disarm(self) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            busy = self.cycle is not None and not self.cycle.response_complete
            if not busy and not self.transport.is_closing():
                self.transport.close()

    return Protocol


# ---------------------------------------------------------------- the app


def web_root() -> Path:
    return Path(str(resources.files("tangshi") / "web"))


def create_app(checkpoints: dict[str, str | Path | None] | None = None, settings: Settings | None = None) -> FastAPI:
    """The app serving these checkpoints (name -> folder; None is the bundled model)."""
    checkpoints = checkpoints or {"bundled": None}
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        poets = {name: Poet.load(path) for name, path in checkpoints.items()}
        for poet in poets.values():
            poet.write("", form="五绝", seed=0)  # warm up: the prosody tables and the first kernels
            if poet.words is not None and poet.words.kin is not None:
                poet.words.kin.ranked("春晓")  # and the title index's vectors (0.9 s for the bundled model's)
        worker = Worker(poets, settings)
        worker.start()
        app.state.poets, app.state.worker = poets, worker
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(
        title="tangshi",
        summary="Tang poems from recurrent networks: free, acrostic and regular forms (五绝 七绝 五律 七律).",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_body=settings.max_body, timeout=settings.client_timeout)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for e in exc.errors():
            e = {k: v for k, v in e.items() if k in ("loc", "msg", "type", "input")}
            value = e.get("input")
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str) and len(value) > MAX_ECHO:
                value = value[:MAX_ECHO] + "…"
            e.pop("input", None)
            if isinstance(value, str | int | float | bool | None):  # objects and lists are not echoed
                with contextlib.suppress(TypeError, ValueError):
                    json.dumps(value, allow_nan=False)  # NaN and infinities are not JSON
                    e["input"] = value
            details.append(e)
        return JSONResponse(status_code=422, content={"detail": details})

    @app.head("/health", include_in_schema=False)
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(app.state.poets)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        out = []
        for name, poet in app.state.poets.items():
            cfg = poet.ckpt.config
            out.append(
                {
                    "name": name,
                    "cell": cfg.model.cell,
                    "layers": cfg.model.num_layers,
                    "hidden_size": cfg.model.hidden_size,
                    "vocabulary": len(poet.vocab),
                    "script": cfg.data.script,
                    "line_index": poet.ckpt.lines is not None,
                    "authors": poet.vocab.authors(),
                    "genres": poet.vocab.genres(),
                    "word_statistics": poet.words is not None,
                    "card": poet.ckpt.card,
                }
            )
        return {"models": out}

    @app.get("/v1/cipai")
    async def cipai(q: str = Query("", max_length=16, description="a name or alias, part of one, or a count")):
        """The 词牌 for --cipai: those whose name or an alias holds `q` (all for none), each with its
        formats (character count, clauses, rhymes); an exact name also gets each format's pattern."""
        from tangshi.prosody import cipai as ci

        try:
            exact = ci.find(q) if q and not q.isdigit() else None
        except ci.CiError:
            exact = None
        found = [exact] if exact is not None else ci.search(q)
        return {
            "cipai": [
                {
                    "name": c.name,
                    "aliases": list(c.aliases),
                    "type": c.kind,
                    "formats": [
                        {
                            "format": f.number,
                            "source": f.source,
                            "chars": f.chars,
                            "clauses": f.lengths,
                            "rhymes": len(f.rhyme_at),
                            **({"pattern": f.describe()} if exact is not None else {}),
                        }
                        for f in c.formats
                    ],  # fmt: skip
                }
                for c in found
            ]
        }

    Body = request_model(settings)

    def _unknown_model(name: str) -> JSONResponse:
        return _unprocessable("model", f"no model '{name[:MAX_ECHO]}'; loaded: {', '.join(app.state.poets)}")

    @app.post(
        "/v1/poems",
        response_model=PoemsOut,
        responses={
            400: {"description": "the body could not be read (not UTF-8 JSON)"},
            408: {"description": "the body was not received within the server's --client-timeout"},
            413: {"description": "the body is larger than the server's --max-body"},
            422: {"description": "a field is invalid or cannot be served; `detail[].loc` names it"},
            503: {"description": "the server's queue is full; retry after the Retry-After header's seconds"},
        },
    )
    async def poems(req: Body, request: Request):  # type: ignore[valid-type]
        values = req.model_dump()
        name = values.pop("model") or next(iter(app.state.poets))
        if name not in app.state.poets:
            return _unknown_model(name)
        try:
            options = WriteOptions(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in NAMES}
            )
            options = options.validate()
        except OptionError as e:
            return _unprocessable(e.field, str(e))
        if options.num * options.rerank > settings.max_candidates:
            message = f"num x rerank is {options.num * options.rerank}, over the server's {settings.max_candidates}"
            return _unprocessable("rerank", message)
        loop = asyncio.get_running_loop()
        job = Job(name, values["begin"], options, loop.create_future(), loop)
        try:
            app.state.worker.submit(job)
        except QueueFull:
            return JSONResponse(
                status_code=503,
                content={"detail": f"the server is busy: {settings.max_queue} requests are waiting (--max-queue)"},
                headers={"Retry-After": "1"},
            )
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not job.future.done():  # the client went away: the writer drops the job
            job.abandoned = True
            job.future.cancel()
            return JSONResponse(status_code=499, content={"detail": "client closed the request"})
        try:
            return job.future.result()
        except OptionError as e:
            return _unprocessable(e.field, str(e))

    reading = threading.Lock()  # /v1/check and /v1/lines: one at a time, beside the writer

    def _poet(name: str | None) -> tuple[str, Poet | None]:
        name = name or next(iter(app.state.poets))
        return name, app.state.poets.get(name)

    reading_responses: dict[int | str, dict[str, Any]] = {
        400: {"description": "the body could not be read (not UTF-8 JSON)"},
        408: {"description": "the body was not received within the server's --client-timeout"},
        413: {"description": "the body is larger than the server's --max-body"},
        422: {"description": "a field is invalid; `detail[].loc` names it"},
    }

    @app.post("/v1/check", responses=reading_responses)
    async def check(req: CheckIn) -> dict[str, Any]:
        """A person's poem read by the rules: the prosody report, each broken rule in words, and characters
        that would keep the rule, likeliest whole poem first."""
        name, poet = _poet(req.model)
        if poet is None:
            return _unknown_model(name)

        def run() -> dict[str, Any]:
            with reading:
                return poet.check(req.text, suggest=req.suggest)

        try:
            return {"model": name, **await asyncio.to_thread(run)}
        except OptionError as e:
            return _unprocessable(e.field, str(e))

    @app.post("/v1/lines", responses=reading_responses)
    async def lines(req: LinesIn) -> dict[str, Any]:
        """Alternatives for one line of a regular poem, every other character kept, ranked by the
        log-likelihood of the whole poem with the line in place (the prefix-only rank beside)."""
        name, poet = _poet(req.model)
        if poet is None:
            return _unknown_model(name)

        def run() -> list[dict[str, Any]]:
            with reading:
                return poet.lines(req.poem, req.line, num=req.num, seed=req.seed, tones=req.tones)

        try:
            return {"model": name, "line": req.line, "alternatives": await asyncio.to_thread(run)}
        except OptionError as e:
            return _unprocessable("poem" if e.field in ("template", "poem") else e.field, str(e))

    root = web_root()

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(root / "index.html")

    app.mount("/static", StaticFiles(directory=root), name="static")
    return app


def run(checkpoints: dict[str, str | Path | None], host: str, port: int, settings: Settings) -> None:
    import uvicorn

    uvicorn.run(
        create_app(checkpoints, settings),
        host=host,
        port=port,
        log_level="info",
        http=header_timeout_protocol(settings.client_timeout),
        timeout_keep_alive=int(max(1, settings.client_timeout)),
    )
