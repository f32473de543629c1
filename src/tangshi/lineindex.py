"""Which lines a corpus holds, as 64-bit hashes, so a written line copied from it is caught fast.

A checkpoint carries `lines.safetensors`: the sorted, distinct 64-bit BLAKE2b hashes of every line
(split at punctuation, at least `MIN_CHARS` characters) of the corpus it was trained on. The
corpus text itself is never stored. Looking a line up is one hash and one set probe; a false
positive needs a 64-bit collision (about 1 in 10^13 for the Tang corpus's 300 thousand lines).
A corpus of more than `WIDE` distinct lines (the three genres: about two million) is kept as 32-bit
hashes, half the size: then about 1 written line in 2,000 is taken for a copy it is not, which
costs that poem one more try, never a copy let through.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tangshi.prosody import split_lines

FILE = "lines.safetensors"
MIN_CHARS = 4  # shorter lines (春风, 明月) are common words, not copies
WIDE = 1_000_000  # distinct lines kept as 64-bit hashes at most; more: 32-bit


class LineIndexError(ValueError):
    """A lines.safetensors that cannot be read; the message names the file."""


def line_hash(line: str, bits: int = 64) -> int:
    digest = hashlib.blake2b(line.encode("utf-8"), digest_size=bits // 8).digest()
    return int.from_bytes(digest, "little", signed=True)


class LineIndex:
    def __init__(self, hashes: torch.Tensor):
        self.hashes = hashes  # (N,) int64 or int32, sorted, distinct
        self.bits = 32 if hashes.dtype == torch.int32 else 64
        self._set: set[int] | None = None

    @classmethod
    def of_texts(cls, texts: Iterable[str]) -> LineIndex:
        lines = {ln for text in texts for ln in split_lines(text) if len(ln) >= MIN_CHARS}
        bits = 64 if len(lines) <= WIDE else 32
        seen = {line_hash(ln, bits) for ln in lines}
        return cls(torch.tensor(sorted(seen), dtype=torch.int64 if bits == 64 else torch.int32))

    def __len__(self) -> int:
        return int(self.hashes.numel())

    def __contains__(self, line: str) -> bool:
        if self._set is None:
            self._set = set(self.hashes.tolist())
        return len(line) >= MIN_CHARS and line_hash(line, self.bits) in self._set

    def copied(self, text: str) -> list[str]:
        """The lines of `text` found in the corpus, in order."""
        return [ln for ln in split_lines(text) if ln in self]

    def save(self, folder: str | Path) -> None:
        """Write `folder/lines.safetensors` (through a temporary file, so never half-written)."""
        path = Path(folder) / FILE
        tmp = path.with_name(f".{FILE}.tmp")
        save_file({"hashes": self.hashes.contiguous()}, str(tmp), metadata={"min_chars": str(MIN_CHARS)})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    @classmethod
    def load(cls, folder: str | Path) -> LineIndex | None:
        """The folder's index, or None when it has none (older checkpoints)."""
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        try:
            hashes = load_file(str(path))["hashes"]
        except Exception as e:  # noqa: BLE001 - any unreadable file is named, never a traceback
            raise LineIndexError(f"{path}: not a readable line index ({e})") from None
        if hashes.dtype not in (torch.int64, torch.int32) or hashes.dim() != 1:
            raise LineIndexError(f"{path}: expected a 1-d int64 or int32 tensor 'hashes'")
        return cls(hashes)
