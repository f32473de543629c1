"""Poems over HTTP: a FastAPI app with the JSON API, its OpenAPI docs and the web page.

    tangshi serve                                  # the bundled model on http://127.0.0.1:8000
    tangshi serve --checkpoint tang=runs/a/best --checkpoint gru=runs/b/best --port 9000

`POST /v1/poems` takes every option of `tangshi write`; `GET /v1/models` lists the loaded
checkpoints with their model cards; `GET /health`; OpenAPI at `/docs`; the page at `/`.

Models load once, in the app's lifespan. Inference runs on one worker thread per app, off the
event loop, so a slow request never blocks the others' I/O. Requests that arrive while the worker
is busy wait in a queue; the worker takes every waiting request that asks for the same options
(model, form, sampler...) and writes them as one batch (`batch_max` rows at most), which
multiplies throughput under load. Each poem draws from its own seeded generator, so a request
with a seed gets the poem it would get alone.
"""

import asyncio
import contextlib
import queue
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, create_model

from tangshi import prosody
from tangshi.api import Poet
from tangshi.compose import UnknownCharacterError
from tangshi.config import ServeConfig as Settings
from tangshi.corpus import to_script
from tangshi.forms import FormError
from tangshi.sampling import SamplingError

FORM_NAMES = ("free", "五绝", "七绝", "五律", "七律")


class PoemRequest(BaseModel):
    """What `tangshi write` takes, as JSON. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)  # no true -> 1, no "5" -> 5

    model: str | None = Field(None, description="a loaded checkpoint's name (GET /v1/models); default: the first")
    begin: str = Field("", description="begin character or phrase (empty: the model's choice)")
    acrostic: str = Field("", description="藏头诗: one head character a line")
    form: Literal["free", "五绝", "七绝", "五律", "七律"] = "free"
    tones: Literal["relaxed", "strict", "off"] = "relaxed"
    rhyme: str | None = Field(None, description="平水韵 group: 阳, 下平声七阳 or a character of it")
    allow_repeat: bool = False
    temperature: Annotated[float, Field(gt=0, le=10)] = 0.8
    top_k: Annotated[int, Field(ge=0)] = 0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    greedy: bool = False
    repetition_penalty: Annotated[float, Field(ge=1, le=10)] = 1.0
    diversity: Annotated[float | None, Field(ge=0, le=2)] = Field(
        None, description="anti-LM weight, less generic characters (default: the model's, 0.35 or 0)"
    )
    beam: Annotated[int, Field(ge=0)] = 0
    rerank: Annotated[int, Field(ge=1)] = 1
    prosody_weight: Annotated[float, Field(ge=0, le=100)] = 1.0
    allow_copies: bool = False
    num: Annotated[int, Field(ge=1)] = 1
    seed: Annotated[int | None, Field(ge=0, lt=2**31)] = None
    max_length: Annotated[int, Field(ge=1)] = 80
    script: Literal["simplified", "traditional"] = "simplified"


def request_model(settings: Settings) -> type[PoemRequest]:
    """PoemRequest with this server's limits in its schema (and so in /docs and its 422s)."""
    s = settings
    return create_model(
        "PoemRequest",
        __base__=PoemRequest,
        begin=(Annotated[str, Field(max_length=s.max_begin, description="begin character or phrase")], ""),
        acrostic=(Annotated[str, Field(max_length=s.max_begin, description="藏头诗: one head a line")], ""),
        num=(Annotated[int, Field(ge=1, le=s.max_num)], 1),
        max_length=(Annotated[int, Field(ge=1, le=s.max_length)], 80),
        beam=(Annotated[int, Field(ge=0, le=s.max_beam)], 0),
        rerank=(Annotated[int, Field(ge=1, le=s.max_rerank)], 1),
    )


class PoemOut(BaseModel):
    text: str
    lines: list[str]
    begin: str
    seed: int
    ended: bool
    nll: float = Field(description="mean negative log-likelihood per token under the model (nats)")
    log_likelihood: float = Field(description="total log-likelihood of the poem's tokens under the model (nats)")
    acrostic: str = ""
    copied: list[str] = Field(default_factory=list, description="lines found verbatim in the training corpus")
    failure: str | None = Field(None, description="where a form rule could not be met, if anywhere")
    prosody: dict[str, Any] = Field(description="form, rhyme group, each line's tones, template and scores")


class PoemsOut(BaseModel):
    model: str
    poems: list[PoemOut]
    notes: list[str]


class ServeError(ValueError):
    """A request the model cannot serve; `field` names the request field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# ---------------------------------------------------------------- errors -> fields


_OPTION = re.compile(r"--([a-z][a-z-]*)")


def field_of(error: Exception) -> str:
    """The request field a write error is about."""
    message = str(error)
    if isinstance(error, UnknownCharacterError):
        return "acrostic" if "acrostic" in message else "begin"
    if message.startswith("begin '"):
        return "acrostic"
    m = _OPTION.search(message)
    if m:
        name = m.group(1).replace("-", "_")
        return {"acrostic": "acrostic"}.get(name, name if name in PoemRequest.model_fields else "form")
    if "acrostic" in message:
        return "acrostic"
    return "form"


def _unprocessable(field: str, message: str, value: Any = None) -> JSONResponse:
    detail = {"loc": ["body", field], "msg": message, "type": "value_error"}
    if value is not None:
        detail["input"] = value
    return JSONResponse(status_code=422, content={"detail": [detail]})


# ---------------------------------------------------------------- the worker


@dataclass
class _Job:
    key: tuple
    request: PoemRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclass
class Worker:
    """One thread that writes poems; waiting requests with the same options are batched."""

    poets: dict[str, Poet]
    settings: Settings
    jobs: queue.Queue = field(default_factory=queue.Queue)
    batches: int = 0  # batches written, for the load benchmark and tests
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="tangshi-writer", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.jobs.put(None)
        if self.thread is not None:
            self.thread.join(timeout=30)

    async def submit(self, request: PoemRequest) -> tuple[str, list, list[str]]:
        loop = asyncio.get_running_loop()
        job = _Job(_batch_key(request), request, loop.create_future(), loop)
        self.jobs.put(job)
        return await job.future

    def _run(self) -> None:
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        held: list[_Job] = []
        while True:
            job = held.pop(0) if held else self.jobs.get()
            if job is None:
                return
            batch, rows = [job], job.request.num
            while True:  # take what else is waiting: same options join the batch, others wait their turn
                try:
                    other = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if other is None:
                    held.append(other)
                    break
                if other.key == job.key and rows + other.request.num <= self.settings.batch_max:
                    batch.append(other)
                    rows += other.request.num
                else:
                    held.append(other)
            self._write(batch)
            self.batches += 1

    def _write(self, batch: list[_Job]) -> None:
        try:
            results = self._write_batch(batch)
        except Exception as e:  # noqa: BLE001 - one bad request must not fail the others: one by one
            results = [e] if len(batch) == 1 else [_outcome(lambda j=j: self._write_batch([j])[0]) for j in batch]
        for job, result in zip(batch, results, strict=True):
            job.loop.call_soon_threadsafe(_settle, job.future, result)

    def _write_batch(self, batch: list[_Job]) -> list[Any]:
        req = batch[0].request
        name = req.model or next(iter(self.poets))
        poet = self.poets[name]
        seeds = [j.request.seed if j.request.seed is not None else _random_seed() for j in batch]
        poems = poet.write(
            [j.request.begin for j in batch],
            num=[j.request.num for j in batch],
            seeds=seeds,
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
            greedy=req.greedy,
            repetition_penalty=req.repetition_penalty,
            diversity=req.diversity,
            max_length=req.max_length,
            form=None if req.form == "free" else req.form,
            acrostic=req.acrostic,
            rhyme=req.rhyme,
            tones=req.tones,
            allow_repeat=req.allow_repeat,
            beam=req.beam,
            rerank=req.rerank,
            prosody_weight=req.prosody_weight,
            allow_copies=req.allow_copies,
            budget=self.settings.budget,
        )
        notes = list(poet.notes)
        out, start = [], 0
        for j in batch:
            mine = poems[start : start + j.request.num]
            start += j.request.num
            out.append((name, [_poem_out(p, j.request.script) for p in mine], notes))
        return out


def _batch_key(r: PoemRequest) -> tuple:
    """Requests with equal keys can be written as one batch (they differ only in begin, num, seed)."""
    return tuple((k, v) for k, v in r.model_dump().items() if k not in ("begin", "num", "seed", "script"))


def _random_seed() -> int:
    import secrets

    return secrets.randbits(31)


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


def _poem_out(p, script: str) -> dict[str, Any]:
    report = p.extra.get("prosody") or prosody.check(p.text).to_dict()

    def convert(text: str) -> str:
        return to_script(text, script)

    steps = len(p.text) + (1 if p.ended else 0)
    return {
        "text": convert(p.text),
        "lines": [convert(x) for x in p.lines],
        "begin": p.begin,
        "seed": p.seed,
        "ended": p.ended,
        "nll": p.nll,
        "log_likelihood": round(-p.nll * steps, 4),
        "acrostic": p.extra.get("acrostic", ""),
        "copied": p.extra.get("copied", []),
        "failure": p.extra.get("failure"),
        "prosody": {**report, "lines": [convert(x) for x in report.get("lines", [])]},
    }


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

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > settings.max_body):
            return JSONResponse(
                status_code=413, content={"detail": f"request body over {settings.max_body} bytes (--max-body)"}
            )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for e in exc.errors():
            e = {k: v for k, v in e.items() if k in ("loc", "msg", "type", "input")}
            if isinstance(e.get("input"), bytes):
                e["input"] = e["input"].decode("utf-8", "replace")
            details.append(e)
        try:
            content = {"detail": details}
            JSONResponse(content=content)  # anything not JSON-encodable is dropped below
        except (TypeError, ValueError):
            content = {"detail": [{k: v for k, v in d.items() if k != "input"} for d in details]}
        return JSONResponse(status_code=422, content=content)

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
                    "path": str(poet.ckpt.path),
                    "cell": cfg.model.cell,
                    "layers": cfg.model.num_layers,
                    "hidden_size": cfg.model.hidden_size,
                    "vocabulary": len(poet.vocab),
                    "script": cfg.data.script,
                    "line_index": poet.ckpt.lines is not None,
                    "card": poet.ckpt.card,
                }
            )
        return {"models": out}

    Request_ = request_model(settings)

    @app.post(
        "/v1/poems",
        response_model=PoemsOut,
        responses={
            400: {"description": "the body could not be read (not UTF-8 JSON)"},
            413: {"description": "the body is larger than the server's --max-body"},
            422: {"description": "a field is invalid or cannot be served; `detail[].loc` names it"},
        },
    )
    async def poems(req: Request_):  # type: ignore[valid-type]
        if req.model is not None and req.model not in app.state.poets:
            return _unprocessable("model", f"no model '{req.model}'; loaded: {', '.join(app.state.poets)}", req.model)
        if req.num * req.rerank > settings.max_candidates:
            return _unprocessable(
                "rerank",
                f"num x rerank is {req.num * req.rerank}, over the server's {settings.max_candidates}",
                req.rerank,
            )
        if req.beam and req.num > req.beam:
            return _unprocessable("num", f"num {req.num} must be at most beam {req.beam}", req.num)
        try:
            name, poems_, notes = await app.state.worker.submit(req)
        except (UnknownCharacterError, FormError, SamplingError) as e:
            return _unprocessable(field_of(e), str(e))
        return {"model": name, "poems": poems_, "notes": notes}

    root = web_root()

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(root / "index.html")

    app.mount("/static", StaticFiles(directory=root), name="static")
    return app


def run(checkpoints: dict[str, str | Path | None], host: str, port: int, settings: Settings) -> None:
    import uvicorn

    uvicorn.run(create_app(checkpoints, settings), host=host, port=port, log_level="info")
