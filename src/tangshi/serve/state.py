"""What the routes share, made once in the app's lifespan and kept in `app.state.served`: the loaded
checkpoints, the settings, the writer, and the readers' turn that keeps reading (POST /v1/check,
/v1/lines) to one request at a time. A route asks for it as a parameter, `served: Shared`."""

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from tangshi.api import Poet
from tangshi.config import ServeConfig
from tangshi.serve.batching import Worker


@dataclass
class Served:
    poets: dict[str, Poet]  # name -> loaded checkpoint; the first is the default
    settings: ServeConfig
    worker: Worker  # writes every poem, on its own thread
    readers: "Readers" = field(default_factory=lambda: Readers())  # one reader at a time, beside the writer

    def poet(self, name: str | None) -> tuple[str, Poet | None]:
        """The requested model's name (the default for None) and its Poet, None when it is not loaded."""
        name = name or next(iter(self.poets))
        return name, self.poets.get(name)


@dataclass
class Readers:
    """POST /v1/check and /v1/lines: how many wait or run (bounded by --max-readers), whose turn it is."""

    count: int = 0  # waiting or being read
    dropped: int = 0  # dropped while waiting because their clients went away
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # held while one is read


def served(request: Request) -> Served:
    return request.app.state.served


Shared = Annotated[Served, Depends(served)]
