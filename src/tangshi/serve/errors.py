"""How a bad request is answered: a 422 whose `detail[].loc` names the field, for the checks a handler
makes (`unprocessable`, `unknown_model`) as for pydantic's (`invalid`, which echoes a bad value only
when it is short, plain and valid JSON). Every message and echo is cut to a bounded prefix and made
encodable: a lone surrogate ("\\ud800") in a value or a key is written as its escape, never a 500."""

import contextlib
import json
from collections.abc import Iterable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_ECHO = 64  # characters of a bad value echoed back in a 422
MAX_MESSAGE = 300  # characters of a message


def safe(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` cut to `limit` characters (with "…"), each lone surrogate written as its escape."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unprocessable(field: str, message: str) -> JSONResponse:
    """A 422 naming the body's `field`, in the shape of FastAPI's own."""
    content = {"detail": [{"loc": ["body", safe(field, MAX_ECHO)], "msg": safe(message), "type": "value_error"}]}
    return JSONResponse(status_code=422, content=content)


def unknown_model(name: str, loaded: Iterable[str]) -> JSONResponse:
    """A 422 for a `model` that is not loaded, naming those that are."""
    return unprocessable("model", f"no model '{safe(name, MAX_ECHO)}'; loaded: {', '.join(loaded)}")


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """pydantic's errors as a 422, each bad value echoed only if it is a short string, a number or null."""
    details = []
    for e in exc.errors():
        e = {k: v for k, v in e.items() if k in ("loc", "msg", "type", "input")}
        e["loc"] = [safe(part, MAX_ECHO) if isinstance(part, str) else part for part in e.get("loc", ())]
        e["msg"] = safe(str(e.get("msg", "")))
        value = e.pop("input", None)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            value = safe(value, MAX_ECHO)
        if isinstance(value, str | int | float | bool | None):  # objects and lists are not echoed
            with contextlib.suppress(TypeError, ValueError):
                json.dumps(value, allow_nan=False)  # NaN and infinities are not JSON
                e["input"] = value
        details.append(e)
    return JSONResponse(status_code=422, content={"detail": details})


def lone_surrogate(value: Any, where: str = "") -> str | None:
    """The place ("begin", "keywords[2]", "a key of the body") of the first lone surrogate in a JSON value, or None."""
    if isinstance(value, str):
        return where or "body" if any("\ud800" <= ch <= "\udfff" for ch in value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            if lone_surrogate(key) is not None:
                return f"a key of {where or 'the body'}"
            if (found := lone_surrogate(item, name)) is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (found := lone_surrogate(item, f"{where}[{i}]")) is not None:
                return found
    return None
