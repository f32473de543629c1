"""Which lines a corpus holds, as 64-bit hashes, so a written line copied from it is caught fast.

A checkpoint carries `lines.safetensors`: the sorted, distinct 64-bit BLAKE2b hashes of every line
(split at punctuation, at least `MIN_CHARS` characters) of the corpus it was trained on. The
corpus text itself is never stored. Looking a line up is one hash and one binary search; a false
positive needs a 64-bit collision (about 1 in 10^13 for the Tang corpus's 300 thousand lines).
A corpus of more than `WIDE` distinct lines (the three genres: about two million) is kept as 32-bit
hashes: then about 1 written line in 2,000 is taken for a copy it is not, which costs that poem one
more try, never a copy let through. On disk the sorted 32-bit hashes are Elias–Fano coded (the low
bits as they are, the high bits as gaps in unary): about 13 bits a line, a fifth of the 64-bit index
(its size for the three genres: docs/training.md).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tangshi.data.vocab import damaged
from tangshi.prosody.regular import split_lines

FILE = "lines.safetensors"
MIN_CHARS = 4  # shorter lines (春风, 明月) are common words, not copies
WIDE = 1_000_000  # distinct lines kept as 64-bit hashes at most; more: 32-bit


def _remake(path: Path) -> str:
    return f"tangshi index --checkpoint {path.parent} --data CORPUS"


class LineIndexError(ValueError):
    """A lines.safetensors that cannot be read; the message names the file."""


def line_hash(line: str, bits: int = 64) -> int:
    digest = hashlib.blake2b(line.encode("utf-8"), digest_size=bits // 8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _key(line: str, bits: int) -> int:
    """A line's hash as the index keeps it: signed 64-bit, or unsigned 32-bit."""
    h = line_hash(line, bits)
    return h if bits == 64 else h & 0xFFFFFFFF


class LineIndex:
    def __init__(self, hashes: torch.Tensor, bits: int = 64):
        self.hashes = hashes  # (N,) int64, sorted, distinct: signed 64-bit hashes, or unsigned 32-bit ones
        self.bits = bits
        self._sorted = hashes.numpy()

    @classmethod
    def of_texts(cls, texts: Iterable[str]) -> LineIndex:
        lines = {ln for text in texts for ln in split_lines(text) if len(ln) >= MIN_CHARS}
        bits = 64 if len(lines) <= WIDE else 32
        seen = {_key(ln, bits) for ln in lines}
        return cls(torch.tensor(sorted(seen), dtype=torch.int64), bits)

    def __len__(self) -> int:
        return int(self.hashes.numel())

    def __contains__(self, line: str) -> bool:
        if len(line) < MIN_CHARS or not len(self):
            return False
        key = _key(line, self.bits)
        at = int(np.searchsorted(self._sorted, key))
        return at < len(self._sorted) and int(self._sorted[at]) == key

    def tensors(self) -> dict[str, torch.Tensor]:
        """What `save` writes: the 64-bit hashes as they are; the 32-bit ones Elias–Fano coded (the
        low `low_bits` bits of each hash as bit planes, the rest as gaps in unary)."""
        if self.bits == 64:
            return {"hashes": self.hashes.contiguous()}
        keys = self._sorted
        n = len(keys)
        low_bits = max(0, min(32, round(math.log2(2**32 / max(n, 1)))))
        unary = np.zeros(int(keys[-1] >> low_bits) + n if n else 0, dtype=np.uint8)
        unary[(keys >> low_bits) + np.arange(n)] = 1  # the i-th hash's high part, as the place of its 1 bit
        planes = np.zeros((low_bits, (n + 7) // 8), dtype=np.uint8)
        for b in range(low_bits):
            planes[b] = np.packbits((keys >> b) & 1)
        return {
            "ef_high": torch.from_numpy(np.packbits(unary)),
            "ef_low": torch.from_numpy(planes),
            "ef_shape": torch.tensor([n, low_bits], dtype=torch.int64),
        }

    @classmethod
    def _of_elias_fano(cls, high: torch.Tensor, low: torch.Tensor, shape: torch.Tensor) -> LineIndex:
        n, low_bits = (int(x) for x in shape.tolist())
        ones = np.flatnonzero(np.unpackbits(high.numpy()))
        if len(ones) != n or tuple(low.shape) != (low_bits, (n + 7) // 8):
            raise ValueError(f"{n} hashes of {low_bits} low bits, but {len(ones)} high parts, low {tuple(low.shape)}")
        keys = (ones - np.arange(n)).astype(np.int64) << low_bits
        planes = low.numpy()
        for b in range(low_bits):
            keys |= np.unpackbits(planes[b])[:n].astype(np.int64) << b
        return cls(torch.from_numpy(keys), 32)

    def copied(self, text: str) -> list[str]:
        """The lines of `text` found in the corpus, in order."""
        return [ln for ln in split_lines(text) if ln in self]

    def save(self, folder: str | Path) -> None:
        """Write `folder/lines.safetensors` (through a temporary file, so never half-written)."""
        path = Path(folder) / FILE
        tmp = path.with_name(f".{FILE}.tmp")
        save_file(self.tensors(), str(tmp), metadata={"min_chars": str(MIN_CHARS)})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    @classmethod
    def load(cls, folder: str | Path) -> LineIndex | None:
        """The folder's index, or None when it has none (older checkpoints)."""
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        try:
            found = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any unreadable file is named, never a traceback
            raise LineIndexError(damaged(path, "line index", e, _remake(path))) from None
        if "hashes" in found:
            hashes = found["hashes"]
            if hashes.dtype not in (torch.int64, torch.int32) or hashes.dim() != 1:
                wrong = ValueError("expected a 1-d int64 or int32 tensor 'hashes'")
                raise LineIndexError(damaged(path, "line index", wrong, _remake(path)))
            if hashes.dtype == torch.int64:
                return cls(hashes, 64)
            return cls((hashes.to(torch.int64) & 0xFFFFFFFF).sort().values, 32)  # signed 32-bit, as once saved
        parts = [found.get(k) for k in ("ef_high", "ef_low", "ef_shape")]
        try:
            if any(p is None for p in parts) or parts[0].dtype != torch.uint8 or parts[1].dtype != torch.uint8:
                raise ValueError("expected 'hashes', or 'ef_high', 'ef_low' (uint8) and 'ef_shape'")
            return cls._of_elias_fano(*parts)
        except (ValueError, IndexError, RuntimeError) as e:
            raise LineIndexError(damaged(path, "line index", e, _remake(path))) from None
