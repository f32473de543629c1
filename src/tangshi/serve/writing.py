"""POST /v1/poems: a request's options checked against the server's limits, handed to the writer as a
job (503 with Retry-After when its queue is full), and answered when the job is written, or dropped
when the client goes away first (499)."""

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tangshi.config import ServeConfig
from tangshi.options import NAMES, OptionError, WriteOptions
from tangshi.serve.batching import Job, QueueFull
from tangshi.serve.errors import unknown_model, unprocessable
from tangshi.serve.schemas import PoemsOut, request_model
from tangshi.serve.state import Served, Shared
from tangshi.serve.transport import client_gone

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body could not be read (not UTF-8 JSON)"},
    408: {"description": "the body was not received within the server's --client-timeout"},
    413: {"description": "the body is larger than the server's --max-body"},
    422: {"description": "a field is invalid or cannot be served; `detail[].loc` names it"},
    503: {"description": "the server's queue is full; retry after the Retry-After header's seconds"},
}


def router(settings: ServeConfig) -> APIRouter:
    """The route, its body made from these settings' limits."""
    Body = request_model(settings)
    routes = APIRouter()

    @routes.post("/v1/poems", response_model=PoemsOut, responses=RESPONSES)
    async def poems(req: Body, request: Request, served: Shared):  # type: ignore[valid-type]
        values = req.model_dump()
        name, poet = served.poet(values.pop("model"))
        if poet is None:
            return unknown_model(name, served.poets)
        try:
            options = _options(values, served.settings)
        except OptionError as e:
            return unprocessable(e.field, str(e))
        loop = asyncio.get_running_loop()
        job = Job(name, values["begin"], options, loop.create_future(), loop)
        try:
            served.worker.submit(job)
        except QueueFull:
            return _busy(served)
        return await _answer(job, request)

    return routes


def _options(values: dict[str, Any], settings: ServeConfig) -> WriteOptions:
    """The request's writing options, checked together and against the server's num x rerank; more poems
    than the server's widest beam (`--max-beam`) without a beam asked are sampled."""
    options = WriteOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in NAMES})
    asked = options.beam is not None
    options = options.validate()
    if options.beam > settings.max_beam and not asked:  # more poems than the server's widest beam: sampled
        options = options.replace(beam=0).validate()
    if options.num * options.rerank > settings.max_candidates:
        message = f"num x rerank is {options.num * options.rerank}, over the server's {settings.max_candidates}"
        raise OptionError(message, "rerank")
    return options


def _busy(served: Served) -> JSONResponse:
    detail = f"the server is busy: {served.settings.max_queue} requests are waiting (--max-queue)"
    return JSONResponse(status_code=503, content={"detail": detail}, headers={"Retry-After": "1"})


async def _answer(job: Job, request: Request) -> Any:
    """The job's poems once written; 499 (and the job abandoned) if the client goes away first."""
    gone = asyncio.ensure_future(client_gone(request))
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
        return unprocessable(e.field, str(e))
