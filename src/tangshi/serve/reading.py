"""Co-writing, not batched: POST /v1/check reads a person's poem by the rules, POST /v1/lines offers
alternatives for one of its lines. Each runs in a thread of its own, one at a time (`Served.reading`),
beside the writer: the model is only read, so they share it safely."""

import asyncio
from typing import Any

from fastapi import APIRouter

from tangshi.options import OptionError
from tangshi.serve.errors import unknown_model, unprocessable
from tangshi.serve.schemas import CheckIn, LinesIn
from tangshi.serve.state import Shared

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body could not be read (not UTF-8 JSON)"},
    408: {"description": "the body was not received within the server's --client-timeout"},
    413: {"description": "the body is larger than the server's --max-body"},
    422: {"description": "a field is invalid; `detail[].loc` names it"},
}

router = APIRouter()


@router.post("/v1/check", responses=RESPONSES)
async def check(req: CheckIn, served: Shared) -> dict[str, Any]:
    """A person's poem read by the rules: the prosody report, each broken rule in words, and characters
    that would keep the rule, likeliest whole poem first."""
    name, poet = served.poet(req.model)
    if poet is None:
        return unknown_model(name, served.poets)

    def run() -> dict[str, Any]:
        with served.reading:
            return poet.check(req.text, suggest=req.suggest)

    try:
        return {"model": name, **await asyncio.to_thread(run)}
    except OptionError as e:
        return unprocessable(e.field, str(e))


@router.post("/v1/lines", responses=RESPONSES)
async def lines(req: LinesIn, served: Shared) -> dict[str, Any]:
    """Alternatives for one line of a regular poem, every other character kept, ranked by the
    log-likelihood of the whole poem with the line in place (the prefix-only rank beside)."""
    name, poet = served.poet(req.model)
    if poet is None:
        return unknown_model(name, served.poets)

    def run() -> list[dict[str, Any]]:
        with served.reading:
            return poet.lines(req.poem, req.line, num=req.num, seed=req.seed, tones=req.tones)

    try:
        return {"model": name, "line": req.line, "alternatives": await asyncio.to_thread(run)}
    except OptionError as e:
        return unprocessable("poem" if e.field in ("template", "poem") else e.field, str(e))
