"""The Python API: load a checkpoint (or the bundled model), write poems, score texts.

from tangshi import Poet
poet = Poet.load()                      # the bundled model
for poem in poet.write("月", num=2, seed=1):
    print(poem.text)
poet.loss(["床前明月光，疑是地上霜。举头望明月，低头思故乡。"])
"""

from __future__ import annotations

import secrets
from importlib import resources
from pathlib import Path

from tangshi import checkpoint, compose, evaluate, forms, prosody
from tangshi.checkpoint import Checkpoint, CheckpointError
from tangshi.lineindex import LineIndex
from tangshi.sampling import DEFAULT_DIVERSITY, Sampler, SamplingError

RETRY_STRIDE = 1 << 24  # seeds of a poem's later tries: seed + r + attempt * RETRY_STRIDE


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

    @property
    def default_diversity(self) -> float:
        """The sampler's anti-LM weight unless told: DEFAULT_DIVERSITY where the checkpoint keeps its
        characters' training counts, 0 where it does not (older checkpoints; `tangshi index` adds them)."""
        return DEFAULT_DIVERSITY if self.vocab.counts is not None else 0.0

    def write(
        self,
        begins: str | list[str],
        num: int | list[int] = 1,
        seed: int | None = None,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 1.0,
        greedy: bool = False,
        repetition_penalty: float = 1.0,
        diversity: float | None = None,
        max_length: int = 80,
        stop_at_end: bool = True,
        random_state: bool = False,
        form: str | None = None,
        acrostic: str = "",
        rhyme: str | None = None,
        tones: str = "relaxed",
        allow_repeat: bool = False,
        beam: int = 0,
        rerank: int = 1,
        prosody_weight: float = 1.0,
        budget: int = 20,
        allow_copies: bool = False,
        seeds: list[int] | None = None,
    ) -> list[compose.Poem]:
        """`num` poems for each begin character or phrase.

        With `form` (五绝 七绝 五律 七律) they are in that form, rhyme and keep the tone template
        (`tones`); `acrostic` heads start the lines (without `form`: one free-length line a head).
        `beam` > 0 searches with that many hypotheses instead of sampling; `rerank` N samples N
        candidates a poem and keeps the best by mean log-likelihood plus `prosody_weight` times the
        prosody score (rhyme, relaxed and strict tones, each 0..1, averaged). A candidate with a
        line copied from the training corpus (the checkpoint's line index) or one where a rule could
        not be met is rejected and written again, up to `budget` tries; `--tones strict` that still
        fails raises FormError naming the line.

        `num` may be a list (poems per begin) and `seeds` one seed per begin: the i-th poem of a
        begin with seed s is the poem `write(begin, seed=s)` writes i-th, whatever else is in the call.
        """
        begins = [begins] if isinstance(begins, str) else list(begins)
        nums = list(num) if isinstance(num, list | tuple) else [num] * len(begins)
        if len(nums) != len(begins) or (seeds is not None and len(seeds) != len(begins)):
            raise ValueError("num and seeds must give one value per begin")
        if any(n < 1 for n in nums):
            raise SamplingError(f"--num must be >= 1, got {min(nums)}")
        if rerank < 1:
            raise SamplingError(f"--rerank must be >= 1, got {rerank}")
        if budget < 1:
            raise SamplingError(f"--budget must be >= 1, got {budget}")
        if beam < 0:
            raise SamplingError(f"--beam must be >= 0, got {beam}")
        resolved, self.notes = [], []
        script = self.ckpt.config.data.script
        for b in begins:
            text, notes = compose.resolve_begin(self.vocab, b, script) if b else ("", [])
            resolved.append(text)
            self.notes += notes
        heads = ""
        if acrostic:
            heads, notes = compose.resolve_begin(self.vocab, acrostic, script, what="acrostic head")
            self.notes += notes
        for b in resolved:
            if heads and b and b[0] != heads[0]:
                raise forms.FormError(
                    f"begin '{b}' and --acrostic '{heads}': the first line must start with '{heads[0]}'"
                )
        shape = forms.get_form(form) if form else forms.free_form(len(heads)) if heads else None
        if shape is None and rhyme:
            raise forms.FormError("--rhyme needs --form (五绝, 七绝, 五律 or 七律)")
        if shape is not None:
            max_length, stop_at_end, random_state = shape.length + 1, True, False
            if self._prosody is None:
                self._prosody = forms.VocabProsody(self.vocab)
            forms.FormMask(self._prosody, shape, 1, [heads], rhyme, tones, allow_repeat)  # checks the request

        def mask(rows: int) -> forms.FormMask | None:
            if shape is None:
                return None
            return forms.FormMask(self._prosody, shape, rows, [heads] * rows, rhyme, tones, allow_repeat)

        lines = None if allow_copies else self.ckpt.lines
        if beam:
            poems = compose.beam_write(
                self.model, self.vocab, resolved, beam, nums, max_length, mask(len(resolved) * beam), lines,
                repetition_penalty,
            )  # fmt: skip
            for p in poems:
                self._judge(p, shape, heads, lines, prosody_weight)
                if p.extra.get("failure") and tones == "strict" and shape is not None and not shape.free:
                    raise forms.FormError(
                        f"--tones strict could not be met by a beam of {beam}: poem for '{p.begin}' failed at "
                        f"{p.extra['failure']}; use --tones relaxed or a wider --beam"
                    )
        else:
            sampler = Sampler(
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                greedy=greedy,
                repetition_penalty=repetition_penalty,
                diversity=self.default_diversity if diversity is None else diversity,
            )
            if seeds is None:
                seed = secrets.randbits(31) if seed is None else seed
                seeds = [seed + sum(nums[:b]) * rerank for b in range(len(begins))]
            rows = [b for b, n in zip(resolved, nums, strict=True) for _ in range(n)]
            bases = [s + i * rerank for s, n in zip(seeds, nums, strict=True) for i in range(n)]
            best: list[compose.Poem | None] = [None] * len(rows)
            for attempt in range(budget):
                todo = [r for r, p in enumerate(best) if p is None or p.extra["rejected"]]
                if not todo:
                    break
                cand_rows = [r for r in todo for _ in range(rerank)]
                tries = [bases[r] + c + attempt * RETRY_STRIDE for r in todo for c in range(rerank)]
                written = compose.write(
                    self.model, self.vocab, [rows[r] for r in cand_rows], sampler, num=1, seeds=tries,
                    max_length=max_length, stop_at_end=stop_at_end, random_state=random_state,
                    form=mask(len(cand_rows)),
                )  # fmt: skip
                for r, p in zip(cand_rows, written, strict=True):
                    self._judge(p, shape, heads, lines, prosody_weight)
                    if best[r] is None or (p.extra["rejected"], -p.extra["score"]) < (
                        best[r].extra["rejected"],
                        -best[r].extra["score"],
                    ):
                        best[r] = p
                if greedy and not random_state:
                    break  # greedy writes the same poem whatever the seed
            poems = [p for p in best if p is not None]
            for p in poems:
                if p.extra.get("failure") and tones == "strict" and shape is not None and not shape.free:
                    raise forms.FormError(
                        f"--tones strict could not be met in {budget} tries (--budget): the poem for "
                        f"'{p.begin}' failed at {p.extra['failure']}; use --tones relaxed"
                    )
        for poem, b in zip(poems, [b for b, n in zip(begins, nums, strict=True) for _ in range(n)], strict=True):
            poem.begin = b
            poem.extra.pop("rejected", None)
            poem.extra.pop("score", None)
            if poem.extra.get("copied") == []:
                poem.extra.pop("copied")
        return poems

    @staticmethod
    def _judge(p: compose.Poem, shape: forms.Form | None, heads: str, lines: LineIndex | None, weight: float) -> None:
        """Score a candidate (mean log-likelihood + weight x prosody) and say whether it is rejected."""
        score = -p.nll
        if shape is not None and not shape.free:
            report = prosody.check(p.text)
            p.extra["prosody"] = report.to_dict()
            score += weight * (report.rhyme + report.relaxed + report.strict) / 3
        if heads:
            p.extra["acrostic"] = heads
        p.extra["copied"] = lines.copied(p.text) if lines is not None else []
        p.extra["score"] = score
        p.extra["rejected"] = bool(p.extra["copied"]) or bool(p.extra.get("failure"))

    def loss(self, texts: str | list[str]) -> dict[str, float | int]:
        """Per-character loss and perplexity of the given poem texts."""
        return evaluate.text_loss(self.ckpt, [texts] if isinstance(texts, str) else list(texts))

    def corpus_loss(self, paths: list[str | Path], split: str = "all") -> dict[str, float | int]:
        return evaluate.corpus_loss(self.ckpt, paths, split=split)
