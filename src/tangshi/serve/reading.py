"""Co-writing, not batched: POST /v1/check reads a person's poem by the rules, POST /v1/lines offers
alternatives for one of its lines. Each runs in a thread of its own, one at a time (`Readers`),
beside the writer: the model is only read, so they share it safely.

They are bounded like the writer's requests: at most `--max-readers` of them wait or run (more get 503
with Retry-After), one whose client goes away while it waits is dropped (499), and each is bounded in
cost: /v1/lines's `num` by `--max-num`, /v1/check's suggestions by `--max-places` broken places (a poem
with more gets 422 naming `suggest`: ask with 0 for the report alone)."""

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tangshi.options import OptionError
from tangshi.serve.errors import unknown_model, unprocessable
from tangshi.serve.schemas import CheckIn, LinesIn
from tangshi.serve.state import Served, Shared
from tangshi.serve.transport import client_gone

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body could not be read (not UTF-8 JSON)"},
    408: {"description": "the body was not received within the server's --client-timeout"},
    413: {"description": "the body is larger than the server's --max-body"},
    422: {"description": "a field is invalid or over the server's limits; `detail[].loc` names it"},
    503: {"description": "the server's readers' queue is full; retry after the Retry-After header's seconds"},
}

router = APIRouter()


@router.post("/v1/check", responses=RESPONSES)
async def check(req: CheckIn, request: Request, served: Shared) -> Any:
    """A person's poem read by the rules: the prosody report, each broken rule in words, and characters
    that would keep the rule, likeliest whole poem first."""
    name, poet = served.poet(req.model)
    if poet is None:
        return unknown_model(name, served.poets)
    places = served.settings.max_places

    def run() -> dict[str, Any]:
        report = poet.check(req.text, suggest=0)  # the rules alone: cheap
        broken = sum(1 for p in report["problems"] if p.get("place"))
        if not req.suggest or not broken:
            return report
        if broken > places:
            message = f"the poem has {broken} broken places, over the server's {places} (--max-places) "
            raise OptionError(message + "to suggest characters for; give suggest 0 for the report alone", "suggest")
        return poet.check(req.text, suggest=req.suggest)

    try:
        out = await _read(served, request, run)
    except OptionError as e:
        return unprocessable(e.field, str(e))
    return out if isinstance(out, JSONResponse) else {"model": name, **out}


@router.post("/v1/lines", responses=RESPONSES)
async def lines(req: LinesIn, request: Request, served: Shared) -> Any:
    """Alternatives for one line of a regular poem, every other character kept, ranked by the
    log-likelihood of the whole poem with the line in place (the prefix-only rank beside)."""
    name, poet = served.poet(req.model)
    if poet is None:
        return unknown_model(name, served.poets)
    if req.num > served.settings.max_num:
        return unprocessable("num", f"at most {served.settings.max_num} alternatives (--max-num), got {req.num}")

    def run() -> list[dict[str, Any]]:
        return poet.lines(req.poem, req.line, num=req.num, seed=req.seed, tones=req.tones)

    try:
        out = await _read(served, request, run)
    except OptionError as e:
        return unprocessable("poem" if e.field in ("template", "poem") else e.field, str(e))
    return out if isinstance(out, JSONResponse) else {"model": name, "line": req.line, "alternatives": out}


async def _read(served: Served, request: Request, work: Callable[[], Any]) -> Any:
    """`work`'s result, run in a thread when no other reader runs; 503 when `max_readers` wait or run
    already, 499 (and the work never started) when the client goes away while it waits."""
    readers = served.readers
    if readers.count >= served.settings.max_readers:
        detail = f"the server is busy: {served.settings.max_readers} check and lines requests are in (--max-readers)"
        return JSONResponse(status_code=503, content={"detail": detail}, headers={"Retry-After": "1"})
    readers.count += 1
    gone = asyncio.ensure_future(client_gone(request))
    try:
        turn = asyncio.ensure_future(readers.lock.acquire())
        await asyncio.wait({turn, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not turn.done():  # the client went away while waiting: dropped
            turn.cancel()
            readers.dropped += 1
            return _closed()
        running = asyncio.ensure_future(asyncio.to_thread(work))
        running.add_done_callback(lambda _: readers.lock.release())  # the next reader when this one ends
        await asyncio.wait({running, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():  # the client went away while read: its bounded work ends on its own
            return _closed()
        return running.result()
    finally:
        gone.cancel()
        readers.count -= 1


def _closed() -> JSONResponse:
    return JSONResponse(status_code=499, content={"detail": "client closed the request"})
