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

from tangshi import checkpoint, compose, evaluate, forms, prosody
from tangshi.checkpoint import Checkpoint, CheckpointError
from tangshi.sampling import Sampler


def bundled_path() -> Path:
    """The folder of the pretrained model shipped inside the package."""
    return Path(str(resources.files("tangshi") / "bundled"))


class Poet:
    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self.notes: list[str] = []  # what resolve_begin changed in the last call
        self._prosody: forms.VocabProsody | None = None

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
        form: str | None = None,
        acrostic: str = "",
        rhyme: str | None = None,
        tones: str = "relaxed",
        allow_repeat: bool = False,
    ) -> list[compose.Poem]:
        """`num` poems for each begin character or phrase; with `form` (五绝 七绝 五律 七律) in that
        form, rhyming and keeping the tone template (`tones`), `acrostic` heads at the line starts."""
        begins = [begins] if isinstance(begins, str) else list(begins)
        resolved, self.notes = [], []
        script = self.ckpt.config.data.script
        for b in begins:
            text, notes = compose.resolve_begin(self.vocab, b, script) if b else ("", [])
            resolved.append(text)
            self.notes += notes
        heads = ""
        if acrostic:
            heads, notes = compose.resolve_begin(self.vocab, acrostic, script)
            self.notes += notes
        mask = None
        if form is not None or heads:
            if form is None:
                raise forms.FormError("--acrostic needs --form (五绝, 七绝, 五律 or 七律)")
            shape = forms.get_form(form)
            if self._prosody is None:
                self._prosody = forms.VocabProsody(self.vocab)
            rows = len(begins) * num
            mask = forms.FormMask(self._prosody, shape, rows, [heads] * rows, rhyme, tones, allow_repeat)
            max_length, stop_at_end, random_state = shape.length + 1, True, False
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
            form=mask,
        )
        for poem, asked in zip(poems, [b for b in begins for _ in range(num)], strict=False):
            poem.begin = asked
            if mask is not None:
                poem.extra["prosody"] = prosody.check(poem.text).to_dict()
                poem.extra["acrostic"] = heads
        return poems

    def loss(self, texts: str | list[str]) -> dict[str, float | int]:
        """Per-character loss and perplexity of the given poem texts."""
        return evaluate.text_loss(self.ckpt, [texts] if isinstance(texts, str) else list(texts))

    def corpus_loss(self, paths: list[str | Path], split: str = "all") -> dict[str, float | int]:
        return evaluate.corpus_loss(self.ckpt, paths, split=split)
