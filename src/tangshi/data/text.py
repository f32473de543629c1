"""Script and punctuation of Chinese text: OpenCC simplified <-> traditional, normalisation.

Owns the script names (`SCRIPTS`), the cached OpenCC converters, `normalise` (whitespace out,
half-width punctuation made full-width, simplified unless asked for traditional), `to_script`,
`variants`, `split_at_breaks` (the one place that says where a line or a clause ends) and
`in_words` (names as messages list them). Pure text: no torch, no numpy, so prosody (and anything
that only reads characters) imports it cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import opencc

SCRIPTS = ("simplified", "traditional")  # what `to_script` writes (OpenCC t2s, s2t)
LINE_BREAKS = "，。！？；：、"  # the punctuation that ends a line
HALF_TO_FULL = str.maketrans({",": "，", ".": "。", "?": "？", "!": "！", ";": "；", ":": "：", "(": "（", ")": "）"})
_SPACE = re.compile(r"\s+")
_BREAKS = re.compile(rf"[{LINE_BREAKS},.!?;:\s]+")  # full- and half-width punctuation, whitespace


@lru_cache(maxsize=4)
def converter(config: str) -> opencc.OpenCC:
    """The OpenCC converter of a configuration ("t2s", "s2t"), made once per process."""
    import opencc  # its native library loads on first use, not on import

    return opencc.OpenCC(config)


def normalise(text: str, script: str = "simplified") -> str:
    """Whitespace removed, half-width punctuation made full-width, t2s unless traditional."""
    text = _SPACE.sub("", text).translate(HALF_TO_FULL)
    if script == "simplified":
        text = converter("t2s").convert(text)
    return text


def to_script(text: str, script: str) -> str:
    """The text in simplified (OpenCC t2s) or traditional (s2t) characters."""
    return converter("t2s" if script == "simplified" else "s2t").convert(text)


def variants(char: str) -> list[str]:
    """The simplified and traditional forms of a character other than itself."""
    out = []
    for config in ("t2s", "s2t"):
        v = converter(config).convert(char)
        if v != char and v not in out:
            out.append(v)
    return out


def split_at_breaks(text: str) -> list[str]:
    """The runs of text between punctuation and whitespace: a poem's lines, a 词's clauses."""
    return [run for run in _BREAKS.split(text) if run]


def in_words(names: Sequence[str]) -> str:
    """Names as a message lists them: "a, b or c"."""
    *first, last = names
    return f"{', '.join(first)} or {last}" if first else last


# characters that carry no subject: left out of a text's words, and of the words a plan or a suggestion counts
STOP = frozenset(
    "之乎者也矣焉哉兮而以其于与及且若所为则乃亦即又或的了是在和我你他她它们这那着吗呢吧啊很都就把被给从向对不无有一"
)
WORD_STARTS = {5: (0, 2, 3), 7: (0, 2, 4, 5)}  # where a 2-character word may start in a line of 5 or 7


def word_starts(n: int) -> set[int] | None:
    """Where a 2-character word may start in a line of n characters (None: anywhere)."""
    return set(WORD_STARTS[n]) if n in WORD_STARTS else None
