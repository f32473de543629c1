"""A step's scores -> the scores a poem's next id is chosen from: small processors in one fixed order.

Each processor does one job on the (B, V) scores of a decoding step (one row a poem or a beam
hypothesis) and keeps whatever state its job needs (the ids a poem has used, the line it is
writing). `Processors` holds the ones a batch of poems needs, built once for the batch, and applies
them in the order of `ORDER`, whatever order they were given in:

    Blocked -> Guidance -> Steering -> Diversity -> StockPhrases -> Repetition | constraint | Temperature -> TopK

Both search loops run them the same way: the processors before the bar on the model's scores,
then the constraint's mask (`constraints.Constraint`); sampling then applies the ones after the bar
and draws (`sampling.Draw`), beam search normalises the scores before the mask and ranks
(`search.beam_search`). Why this order (docs/writing-pipeline.md): ids that are never written go
first, so no later step gives them mass; guidance compares the model's two readings before any bias
is added; the biases add up before the repetition penalty, which scales a score by its sign; the
temperature and top-k shape the distribution the poem is drawn from, under the mask.

A processor that only makes sense in one mode says so (`modes`), and `Processors` refuses it in the
other mode with an OptionError naming its option.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from tangshi.data.vocab import BOS, EOS, PAD, UNK, Vocab
from tangshi.generation.sampling import Draw, penalise_repeats, top_k_filter
from tangshi.options import OptionError

MODES = ("sample", "beam")
_MODE_NAMES = {"sample": "when sampling", "beam": "with --beam"}


@dataclass(slots=True)
class Step:
    """What a step tells its processors beside the scores."""

    t: int  # the step, from 0
    may_end: bool  # some row may choose its line's end (or the scores are normalised over every id)


class Processor:
    """One job over a step's scores: `__call__` returns the new scores (B, V); `update` sees the ids
    written, `select` the rows kept (beam search's surviving hypotheses, in their new order)."""

    option = ""  # the option that asks for it, named when it is refused
    modes: tuple[str, ...] = MODES  # the decoding modes it makes sense in
    biased = False  # it moves probability for another reason than the model's (a poem's nll stays the model's)

    def __call__(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        raise NotImplementedError

    def update(self, ids: torch.Tensor) -> None:
        """The ids just written, one a row (B,)."""

    def select(self, rows: torch.Tensor) -> None:
        """Keep these rows, in this order."""


class Blocked(Processor):
    """PAD, UNK, BOS and the condition tokens (genre, poet, <sep>) are never written: -inf, in place."""

    def __init__(self, vocab: Vocab, device: torch.device | str = "cpu"):
        self.ids = torch.tensor([PAD, UNK, BOS, *vocab.conditions], device=device)

    def __call__(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        return scores.index_fill_(1, self.ids, float("-inf"))  # (B, V), or (2B, V) guided: the plain rows too


class Guidance(Processor):
    """Classifier-free guidance by the title: the step reads each poem twice, after its context and
    after the plain context (rows B..2B), and the scores become
    log p(x | context) + weight (log p(x | context) - log p(x | plain)), up to a constant a row."""

    option = "guidance"
    biased = True

    def __init__(self, weight: float, batch: int):
        self.weight, self.batch = weight, batch

    def __call__(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        given, plain = scores[: self.batch], scores[self.batch :]  # (2B, V) -> (B, V), (B, V)
        gap = torch.log_softmax(given, -1) - torch.log_softmax(plain, -1)
        return given + self.weight * torch.nan_to_num(gap, nan=0.0, posinf=0.0, neginf=0.0)


class Diversity(Processor):
    """The anti-LM prior (Li et al. 2016): each id's score lowered by `weight` x its log training
    frequency, so the commonest characters lose most and poems are less generic."""

    option = "diversity"
    biased = True

    def __init__(self, weight: float, vocab: Vocab, device: torch.device | str = "cpu"):
        self.shift = weight * log_prior(vocab).to(device)  # (V,), made once for every step

    def __call__(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        return scores - self.shift


def log_prior(vocab: Vocab) -> torch.Tensor:
    """(V,) the log unigram probabilities that --diversity needs; refused where the checkpoint lacks counts."""
    prior = vocab.log_prior()
    if prior is None:
        raise OptionError(
            "--diversity needs the character counts of the training data, which this checkpoint's vocab.json "
            "lacks; add them with `tangshi index --checkpoint DIR --data CORPUS`",
            "diversity",
        )
    return prior


class StockPhrases(Processor):
    """A penalty on the corpus's stock phrases: after the first character of one of its commonest
    2-character words (不知 春风 人间 何处 ...: `table`, first id -> the second ids), the second loses
    `weight`, so a poem says its own things rather than what fits any title."""

    option = "stock"
    biased = True

    def __init__(self, weight: float, table: dict[int, torch.Tensor], batch: int, device: torch.device | str = "cpu"):
        self.weight, self.table = weight, {a: ids.to(device) for a, ids in table.items()}
        self.last = [-1] * batch  # each row's last id

    def __call__(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        for r, a in enumerate(self.last):
            ids = self.table.get(a)
            if ids is not None:
                scores[r, ids] -= self.weight
        return scores

    def update(self, ids: torch.Tensor) -> None:
        self.last = ids.tolist()

    def select(self, rows: torch.Tensor) -> None:
        self.last = [self.last[r] for r in rows.tolist()]


class Repetition(Processor):
    """CTRL's repetition penalty: the score of an id the poem has written is divided by `penalty`
    when positive, multiplied when negative."""

    option = "repetition_penalty"

    def __init__(self, penalty: float, batch: int, size: int, device: torch.device | str = "cpu"):
        self.penalty = penalty
        self.seen = torch.zeros(batch, size, dtype=torch.bool, device=device)  # (B, V) the ids each row has used
        self.rows = torch.arange(batch, device=device)

    def __call__(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        return penalise_repeats(scores, self.seen, self.penalty)

    def update(self, ids: torch.Tensor) -> None:
        self.seen[self.rows, ids] = True

    def select(self, rows: torch.Tensor) -> None:
        self.seen = self.seen[rows]


class Temperature(Processor):
    """Scores divided by the temperature: lower is more conservative."""

    option = "temperature"
    modes = ("sample",)

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        return scores / self.temperature


class TopK(Processor):
    """The k highest scores of each row kept, -inf elsewhere."""

    option = "top_k"
    modes = ("sample",)

    def __init__(self, k: int):
        self.k = k

    def __call__(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        return top_k_filter(scores, self.k)


# ---------------------------------------------------------------- steering


class TopicBias:
    """What the poem is about and whose manner it has: a fixed (V,) bias, `topic` x the characters of
    poems about the title, keywords and theme plus `manner` x the characters the poet favours."""

    option = "topic"

    def __init__(self, vector: torch.Tensor):
        self.vector = vector


class CalibrationBias:
    """The checkpoint's frequency calibration: a fixed (V,) bias, `calibration` x the bias that brings
    the characters written to human poems' rates (evaluation/calibration.py)."""

    option = "calibration"

    def __init__(self, vector: torch.Tensor):
        self.vector = vector


Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def table_rows(table: torch.Tensor) -> Rows:
    """A (V, V) sparse table as flat rows, (starts (V + 1,), columns, values): row a's entries are at
    starts[a]:starts[a + 1] (what `CohesionBias` gathers; made once a model, by `Poet.following`)."""
    table = table.coalesce()  # entries sorted by row
    first, col = table.indices()
    starts = torch.zeros(table.shape[0] + 1, dtype=torch.long)
    starts[1:] = torch.cumsum(torch.bincount(first, minlength=table.shape[0]), 0)
    return starts, col, table.values()


FEW_CHARACTERS = 16  # `CohesionBias._following` adds up to this many rows of the table one by one (fewer operations)


class CohesionBias:
    """Lines that belong together: when a row ends a line, `weight` x the mean over that line's
    characters a of row a of `table` (`table_rows` of a (V, V) table, [a, b]: how much more often b is
    in the line after a line with a than chance), until its next line ends. `breaks` (V,) marks the
    ids that end a line. A (B, V) bias, one row a poem; `ready` once some row has ended a line."""

    option = "cohesion"

    def __init__(self, table: Rows, weight: float, breaks: torch.Tensor, batch: int, device: torch.device | str):
        v = breaks.numel()
        self.weight, self.breaks = weight, breaks.to(device)
        self.table = tuple(t.to(device) for t in table)
        self.ready = False
        self.bias = torch.zeros(batch, v, device=device)
        self.line = torch.zeros(batch, v, device=device)  # the characters of each row's current line, counted
        self.break_ids = self.breaks.tolist()  # the same, for a step's few ids looked up in Python
        self.rows = torch.arange(batch, device=device)
        self.ones = torch.ones(batch, 1, device=device)

    def select(self, rows: torch.Tensor) -> None:
        self.line, self.bias = self.line[rows], self.bias[rows]
        self.rows, self.ones = torch.arange(len(rows), device=self.line.device), self.ones[:1].expand(len(rows), 1)

    def _following(self, share: torch.Tensor) -> torch.Tensor:
        """(n, V): each row's sum over its characters a of share[a] x table[a] (the few characters of a
        line: their rows of the table gathered and added, where a sparse product would visit all of it)."""
        crow, col, val = self.table
        row, a = share.nonzero(as_tuple=True)
        if a.numel() <= FEW_CHARACTERS:  # a few rows of the table, each added in turn: the same sums, in the same order
            out = torch.zeros_like(share)
            for r, c in zip(row.tolist(), a.tolist(), strict=True):
                start, end = crow[c : c + 2].tolist()
                out[r].index_add_(0, col[start:end], val[start:end] * share[r, c])
            return out
        start, count = crow[a], crow[a + 1] - crow[a]
        of = torch.repeat_interleave(torch.arange(a.numel(), device=a.device), count)  # each entry's (row, a)
        first = torch.cumsum(count, 0) - count
        at = start[of] + torch.arange(of.numel(), device=a.device) - first[of]  # each entry's place in the table
        out = torch.zeros_like(share)
        return out.index_put_((row[of], col[at]), val[at] * share[row[of], a[of]], accumulate=True)

    def update(self, ids: torch.Tensor) -> None:
        breaks = [self.break_ids[i] for i in ids.tolist()]
        if not any(breaks):  # most steps: one more character in each row's line
            self.line.scatter_add_(1, ids.unsqueeze(1), self.ones)
            return
        if all(breaks):  # every row ends its line (a regular form's lines end together)
            length = self.line.sum(dim=1)  # the line's characters (whole counts: the sum is exact)
            if bool((length > 0).all()):
                self.bias = self.weight * self._following(self.line / length.unsqueeze(1))
                self.line.zero_()
                self.ready = True
                return
        ends = self.breaks[ids]
        rows = self.rows[~ends]
        self.line[rows, ids[~ends]] += 1
        ended = self.rows[ends]
        length = self.line[ended].sum(dim=1)
        done, length = ended[length > 0], length[length > 0]
        if done.numel():
            self.bias[done] = self.weight * self._following(self.line[done] / length.unsqueeze(1))
            self.line[done] = 0
            self.ready = True


class Steering(Processor):
    """The steering biases added to the scores: the fixed ones (`TopicBias`, `CalibrationBias`, added
    together once) and the line's (`CohesionBias`). The bias moves probability among the characters
    only: the ids of `structure` (the end token, and the line breaks where the line steering is on)
    keep the probability they had, so a steered poem's lines are as long as the model would write
    them. The shift that keeps it is skipped where no row may choose a line's end (`Step.may_end`):
    it would change no draw there."""

    biased = True

    def __init__(
        self,
        fixed: Sequence[TopicBias | CalibrationBias],
        cohesion: CohesionBias | None,
        batch: int,
        size: int,
        device: torch.device | str = "cpu",
    ):
        total = None  # the fixed biases summed in the order given (topic, then calibration)
        for b in fixed:
            total = b.vector.to(device) if total is None else total + b.vector.to(device)
        self.fixed = (total if total is not None else torch.zeros(size, device=device)).expand(batch, size)
        self.cohesion = cohesion
        self.line_bias = cohesion.bias if cohesion is not None else torch.zeros(batch, size, device=device)
        self.structure = cohesion.breaks.clone() if cohesion is not None else torch.zeros(size, dtype=torch.bool,
                                                                                          device=device)  # fmt: skip
        self.structure[EOS] = True
        self.active = total is not None  # no bias at all until a fixed one is given or a line has ended

    def __call__(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        if not self.active:
            return scores
        steered = scores + self.fixed + self.line_bias
        if not step.may_end:
            return steered
        # the characters' mass with and without the bias, both in one call (a row's sums are its own)
        chars = torch.where(self.structure, float("-inf"), torch.cat([steered, scores]))
        mass = torch.logsumexp(chars, dim=-1)
        shift = torch.nan_to_num(mass[: len(scores)] - mass[len(scores) :], nan=0.0, posinf=0.0, neginf=0.0)
        return torch.where(self.structure, scores + shift.unsqueeze(-1), steered)

    def update(self, ids: torch.Tensor) -> None:
        if self.cohesion is None:
            return
        self.cohesion.update(ids)
        self.line_bias = self.cohesion.bias
        self.active = self.active or self.cohesion.ready

    def select(self, rows: torch.Tensor) -> None:
        self.fixed = self.fixed[rows]
        if self.cohesion is not None:
            self.cohesion.select(rows)
        self.line_bias = self.cohesion.bias if self.cohesion is not None else self.line_bias[rows]


ORDER: tuple[type[Processor], ...] = (
    Blocked, Guidance, Steering, Diversity, StockPhrases, Repetition, Temperature, TopK,
)  # fmt: skip
AFTER_CONSTRAINT = (Temperature, TopK)  # shape the distribution drawn from, under the mask


class Processors:
    """The processors of a batch in the order of `ORDER`, for one decoding mode ("sample" or "beam"):
    `__call__` runs the ones before the constraint, `warp` the ones after it (sampling's), `draw`
    picks the ids (sampling). A processor (or draw) of the other mode is refused, naming its option."""

    def __init__(self, items: Sequence[Processor], mode: str, draw: Draw | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        for p in [*items, *([draw] if draw is not None else [])]:
            if mode not in p.modes:
                flag = "--" + p.option.replace("_", "-")
                raise OptionError(f"{flag} applies {_MODE_NAMES[p.modes[0]]}, not {_MODE_NAMES[mode]}", p.option)
        unknown = [type(p).__name__ for p in items if type(p) not in ORDER]
        if unknown:
            raise ValueError(f"{unknown[0]} has no place in processors.ORDER")
        ordered = sorted(items, key=lambda p: ORDER.index(type(p)))
        self.mode, self.draw = mode, draw
        self.before = [p for p in ordered if not isinstance(p, AFTER_CONSTRAINT)]
        self.after = [p for p in ordered if isinstance(p, AFTER_CONSTRAINT)]
        # only the processors with a state hear of each step's ids (no call per step for the others)
        self._stateful = [p for p in ordered if type(p).update is not Processor.update]
        self._selecting = [p for p in ordered if type(p).select is not Processor.select]
        guidance = next((p for p in ordered if isinstance(p, Guidance)), None)
        self.guided = guidance is not None  # the step reads each poem twice (rows B..2B: after the plain context)
        self.biased = any(p.biased for p in ordered)

    def __call__(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        """(B, V) scores (2B guided) -> (B, V): the processors before the constraint."""
        for p in self.before:
            scores = p(scores, step)
        return scores

    def ahead(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        """(N, V) scores of rows that are not the batch's, read after the poems' own contexts alone ->
        (N, V): the processors before the constraint that keep no state of the batch's rows and need
        no plain rows (guidance and the stateful ones are left out: a look-ahead's estimate)."""
        for p in self.before:
            if p not in self._stateful and p not in self._selecting and not isinstance(p, Guidance):
                scores = p(scores, step)
        return scores

    def warp(self, scores: torch.Tensor, step: Step) -> torch.Tensor:
        """(B, V) masked scores -> the scores a poem is drawn from (sampling)."""
        for p in self.after:
            scores = p(scores, step)
        return scores

    def update(self, ids: torch.Tensor) -> None:
        for p in self._stateful:
            p.update(ids)

    def select(self, rows: torch.Tensor) -> None:
        for p in self._selecting:
            p.select(rows)

    def __iter__(self) -> Iterator[Processor]:
        return iter([*self.before, *self.after])

    def __repr__(self) -> str:
        return f"Processors({self.mode}: {' -> '.join(type(p).__name__ for p in self)})"


def sampling(vocab: Vocab, device: torch.device | str = "cpu", temperature: float = 0.9, greedy: bool = False,
             top_k: int = 0, top_p: float = 1.0) -> Processors:  # fmt: skip
    """The plain sampling list: blocked ids, then temperature, top-k and top-p (a model's own poems)."""
    items: list[Processor] = [Blocked(vocab, device)]
    if not greedy:
        items += [Temperature(temperature), *([TopK(top_k)] if top_k else [])]
    return Processors(items, "sample", Draw(greedy, top_p))
