"""What the evaluation asks of a poet, and the one loop that writes a poem a begin in its form.

`Writer` is the part of `tangshi.api.Poet` that `calibration` and `suite` use, as a Protocol: the
evaluation reads poets without importing the API above it (and a test may hand it a fake).
`write_each` writes one poem a begin, each in its own form, in as few calls as there are forms.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from tangshi.data.vocab import Vocab
    from tangshi.model.charrnn import CharRNN
    from tangshi.model.checkpoint import Checkpoint
    from tangshi.options import WriteOptions


class WrittenPoem(Protocol):
    """What the evaluation reads of a written poem (`generation.search.Poem`)."""

    text: str
    nll: float
    ended: bool
    plan: list[dict[str, Any]] | None


class Poems(Protocol):
    """The poems of one call (`api.Written`)."""

    def __iter__(self) -> Iterator[WrittenPoem]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> WrittenPoem: ...


class Writer(Protocol):
    """A poet as the evaluation uses it (`api.Poet`)."""

    @property
    def ckpt(self) -> Checkpoint: ...

    @property
    def model(self) -> CharRNN: ...

    @property
    def vocab(self) -> Vocab: ...

    @property
    def default_diversity(self) -> float: ...

    def write(
        self,
        begins: str | Sequence[str],
        options: WriteOptions | None = None,
        *,
        nums: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
        calibration_bias: torch.Tensor | None = None,
        **changes: Any,
    ) -> Poems: ...


def write_each(poet: Writer, begins: Sequence[str], forms: Sequence[str], seed: int, **options: Any) -> list[str]:
    """One poem a begin, each in its form ("free": none) with seed `seed + i`, grouped by form into calls
    of `poet.write` with `options` (its keyword arguments: `WriteOptions` fields, `calibration_bias`);
    the texts in the begins' order."""
    texts = [""] * len(begins)
    for form in dict.fromkeys(forms):
        idx = [i for i, f in enumerate(forms) if f == form]
        written = poet.write(
            [begins[i] for i in idx], nums=[1] * len(idx), seeds=[seed + i for i in idx], form=form, **options
        )
        for i, poem in zip(idx, written, strict=True):
            texts[i] = poem.text
    return texts
