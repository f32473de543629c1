"""How a bad request is answered: a 422 whose `detail[].loc` names the field, for the checks a handler
makes (`unprocessable`, `unknown_model`) as for pydantic's (`invalid`, which echoes a bad value only
when it is short, plain and valid JSON)."""

import contextlib
import json
from collections.abc import Iterable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_ECHO = 64  # characters of a bad value echoed back in a 422


def unprocessable(field: str, message: str) -> JSONResponse:
    """A 422 naming the body's `field`, in the shape of FastAPI's own."""
    return JSONResponse(
        status_code=422, content={"detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}]}
    )


def unknown_model(name: str, loaded: Iterable[str]) -> JSONResponse:
    """A 422 for a `model` that is not loaded, naming those that are."""
    return unprocessable("model", f"no model '{name[:MAX_ECHO]}'; loaded: {', '.join(loaded)}")


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """pydantic's errors as a 422, each bad value echoed only if it is a short string, a number or null."""
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
