"""The writer: one thread that writes every poem, off the event loop, from a bounded queue of jobs.

The writer takes the oldest waiting job together with every other waiting job that asks for the same
options (they may differ in begin, num and seed) and writes them as one batch (`batch_max` rows at
most: a job's beam width, or num x rerank sampled candidates). A job whose client has gone is dropped
before it is written, and a batch whose jobs have all been abandoned is stopped while it is written.
Each poem draws from its own seeded generator, so a job with a seed gets the poem it would get alone.
No HTTP here: `writing` makes the jobs.

Cheap jobs do not wait behind expensive ones: a job is light when it takes at most `LIGHT` rows (the
default beam of 8, or 8 sampled candidates), heavy otherwise, and after a batch of heavy jobs the writer starts the
next batch from the oldest light job, if one waits (after a light batch, from the oldest of any kind).
A light request so waits for at most one heavy batch, and heavy ones still get every other turn.
"""

import asyncio
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tangshi.api import Poet
from tangshi.config import ServeConfig
from tangshi.generation.search import Stopped
from tangshi.options import DEFAULT_BEAM, WriteOptions

LIGHT = DEFAULT_BEAM  # rows of a light job: the default beam's


def rows(options: WriteOptions) -> int:
    """A request's rows in a batch (its options decided): its beam's hypotheses, or the candidates it samples."""
    return options.beam or options.num * max(1, options.rerank)


def light(options: WriteOptions) -> bool:
    """A request cheap enough to go before heavy ones: at most `LIGHT` rows."""
    return rows(options) <= LIGHT


class QueueFull(Exception):
    """The writer's queue holds `max_queue` requests."""


@dataclass
class Job:
    """One request for the writer; its result (or its error) is set on `future`, in `loop`."""

    model: str
    begin: str
    options: WriteOptions
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    abandoned: bool = False  # the client went away: not written

    @property
    def cost(self) -> int:
        """This job's rows in a batch."""
        return rows(self.options)

    @property
    def light(self) -> bool:
        return light(self.options)

    @property
    def key(self) -> tuple:
        """Jobs with equal keys are written as one batch: they differ only in begin, num and seed."""
        return (self.model, self.options.replace(num=1, seed=None))


@dataclass
class Worker:
    """One thread that writes poems; waiting jobs with the same options are written as one batch."""

    poets: dict[str, Poet]
    settings: ServeConfig
    waiting: deque = field(default_factory=deque)
    batches: int = 0  # batches written
    writing: int = 0  # poems of the batch being written now
    heavy_last: bool = False  # the last batch was of heavy jobs: a light one goes first now
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
            first = self.waiting[0]
            if self.heavy_last:
                first = next((j for j in self.waiting if j.light), first)
            self.waiting.remove(first)
            self.heavy_last = not first.light
            batch, rows = [first], first.cost
            for job in list(self.waiting):
                if job.key == first.key and rows + job.cost <= self.settings.batch_max:
                    batch.append(job)
                    rows += job.cost
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
