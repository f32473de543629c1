"""The Python API: load a checkpoint (or the bundled model), write poems, score texts.

from tangshi import Poet
poet = Poet.load()                      # the bundled model
for poem in poet.write("月", num=2, seed=1):
    print(poem.text)
poet.loss(["床前明月光，疑是地上霜。举头望明月，低头思故乡。"])
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tangshi import checkpoint, compose, evaluate
from tangshi.checkpoint import Checkpoint, CheckpointError
from tangshi.sampling import Sampler


def bundled_path() -> Path:
    """The folder of the pretrained model shipped inside the package."""
    return Path(str(resources.files("tangshi") / "bundled"))


class Poet:
    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self.notes: list[str] = []  # what resolve_begin changed in the last call

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> Poet:
        """A checkpoint folder, or the bundled model when `path` is None."""
        folder = Path(path) if path is not None else bundled_path()
        if path is None and not (folder / "model.safetensors").is_file():
            raise CheckpointError(f"the bundled model is missing from {folder}; reinstall tangshi")
        return cls(checkpoint.load(folder, device=device))

    @property
    def model(self):
        return self.ckpt.model

    @property
    def vocab(self):
        return self.ckpt.vocab

    def write(
        self,
        begins: str | list[str],
        num: int = 1,
        seed: int | None = None,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 0.9,
        greedy: bool = False,
        repetition_penalty: float = 1.0,
        max_length: int = 80,
        stop_at_end: bool = True,
        random_state: bool = False,
    ) -> list[compose.Poem]:
        """`num` poems for each begin character or phrase."""
        begins = [begins] if isinstance(begins, str) else list(begins)
        resolved, self.notes = [], []
        for b in begins:
            text, notes = compose.resolve_begin(self.vocab, b, self.ckpt.config.data.script) if b else ("", [])
            resolved.append(text)
            self.notes += notes
        sampler = Sampler(
            temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, repetition_penalty=repetition_penalty
        )
        poems = compose.write(
            self.model,
            self.vocab,
            resolved,
            sampler,
            num=num,
            seed=seed,
            max_length=max_length,
            stop_at_end=stop_at_end,
            random_state=random_state,
        )
        for poem, asked in zip(poems, [b for b in begins for _ in range(num)], strict=False):
            poem.begin = asked
        return poems

    def loss(self, texts: str | list[str]) -> dict[str, float | int]:
        """Per-character loss and perplexity of the given poem texts."""
        return evaluate.text_loss(self.ckpt, [texts] if isinstance(texts, str) else list(texts))

    def corpus_loss(self, paths: list[str | Path], split: str = "all") -> dict[str, float | int]:
        return evaluate.corpus_loss(self.ckpt, paths, split=split)
