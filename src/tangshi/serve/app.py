"""The app: `create_app` loads the models once, in its lifespan, and puts together the routers; `run`
serves it under uvicorn with the transport limits.

    tangshi serve                                  # the bundled model on http://127.0.0.1:8000
    tangshi serve --checkpoint tang=runs/a/best --checkpoint gru=runs/b/best --port 9000

The routes, a module a job: `catalogue` (GET /health, /v1/models, /v1/cipai), `writing` (POST
/v1/poems, written by the `batching` writer thread), `reading` (POST /v1/check, /v1/lines), `page`
(the page at /); OpenAPI at /docs. They share `state.Served` (the poets, the settings, the writer),
their bodies are `schemas`, their 422s `errors`, and `transport` bounds bodies and slow clients.
"""

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from tangshi.api import Poet
from tangshi.config import ServeConfig
from tangshi.serve import catalogue, page, reading, writing
from tangshi.serve.batching import Worker
from tangshi.serve.errors import invalid
from tangshi.serve.state import Served
from tangshi.serve.transport import BodyLimit, header_timeout_protocol, quiet_logs


def create_app(checkpoints: dict[str, str | Path | None] | None = None, settings: ServeConfig | None = None) -> FastAPI:
    """The app serving these checkpoints (name -> folder; None is the bundled model)."""
    checkpoints = checkpoints or {"bundled": None}
    settings = settings or ServeConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = Worker(_load(checkpoints), settings)
        worker.start()
        app.state.served = Served(worker.poets, settings, worker)
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
    app.add_exception_handler(RequestValidationError, invalid)
    for router in (catalogue.router, writing.router(settings), reading.router, page.router):
        app.include_router(router)
    return app


def _load(checkpoints: dict[str, str | Path | None]) -> dict[str, Poet]:
    """Each checkpoint's Poet, warmed up so that the first request does not wait for it."""
    poets = {name: Poet.load(path) for name, path in checkpoints.items()}
    for poet in poets.values():
        poet.write("", form="五绝", seed=0)  # the prosody tables and the first kernels
        if poet.words is not None and poet.words.kin is not None:
            poet.words.kin.ranked("春晓")  # and the title index's vectors
    return poets


def run(checkpoints: dict[str, str | Path | None], host: str, port: int, settings: ServeConfig) -> None:
    """Serve these checkpoints on host:port until interrupted."""
    import uvicorn

    _more_descriptors(settings.max_connections)
    quiet_logs()
    uvicorn.run(
        create_app(checkpoints, settings),
        host=host,
        port=port,
        log_level="info",
        http=header_timeout_protocol(settings.client_timeout),
        timeout_keep_alive=int(max(1, settings.client_timeout)),
        limit_concurrency=settings.max_connections,
    )


def _more_descriptors(connections: int) -> None:
    """Raise the soft limit on open files towards the hard one, so that `connections` fit with room to spare."""
    try:
        import resource
    except ImportError:  # not on this system
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256  # the models' files, the log, the listening socket
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
