"""Regular forms while decoding: masks over the logits that make a poem a 五绝 / 七绝 / 五律 / 七律.

A `FormMask` keeps, for every poem of a batch, where it stands (line, character) and what is still
open (which of the four tone templates, which 平水韵 groups), and gives at each step the set of
ids allowed next:
- characters only inside lines, `，` after odd lines and `。` after even ones, the end token right
  after the last line;
- the acrostic head at the start of each line (heads and begin phrases are forced, never masked);
- the rhyme: the last character of every even line in one 平 group, chosen by the model's own first
  rhyming line or given (`rhyme=`); line 1 may rhyme (首句入韵) or end 仄, as the template says;
- the tone template (relaxed: positions 2, 4, 5 / 2, 4, 6, 7; strict: all; off), 平起 or 仄起 left
  to the model: every template still consistent with the characters written so far stays open;
- no character twice in a poem unless `allow_repeat`.
Only characters with a known reading are written inside lines, so every checked position counts.
Any sampler works on the masked logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tangshi import prosody as P
from tangshi.vocab import EOS, Vocab

FIRST_TYPES = "aAbB"  # the four templates, by the type of line 1
TONES = ("relaxed", "strict", "off")


class FormError(ValueError):
    """A form request that cannot be met; the message says why."""


@dataclass(frozen=True)
class Form:
    name: str
    lines: int
    chars: int

    @property
    def length(self) -> int:
        """Tokens of a poem: characters and punctuation (the end token not counted)."""
        return self.lines * (self.chars + 1)


def get_form(name: str) -> Form:
    if name not in P.FORMS:
        raise FormError(f"--form must be one of {', '.join(P.FORMS)}, got {name!r}")
    lines, chars = P.FORMS[name]
    return Form(name, lines, chars)


class VocabProsody:
    """The vocabulary's characters as tensors: Han with a reading, 平, 仄, and 平 group membership."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.groups = P.group_names()
        v = len(vocab)
        self.char = torch.zeros(v, dtype=torch.bool)
        self.ping = torch.zeros(v, dtype=torch.bool)
        self.ze = torch.zeros(v, dtype=torch.bool)
        self.in_group = torch.zeros(len(self.groups), v, dtype=torch.bool)
        index = {g: i for i, g in enumerate(self.groups)}
        for i, tok in enumerate(vocab.tokens):
            if len(tok) != 1 or not P.is_han(tok):
                continue
            rs = P.readings(tok)
            if not rs:
                continue
            self.char[i] = True
            for r in rs:
                if r.tone == P.PING:
                    self.ping[i] = True
                    if r.group in index:
                        self.in_group[index[r.group], i] = True
                else:
                    self.ze[i] = True
        self.comma, self.period = vocab.id("，"), vocab.id("。")


def _requirements(form: Form, tones: str) -> torch.Tensor:
    """(4 templates, lines, chars, 2) bool: which tones (平, 仄) each position accepts."""
    req = torch.ones(4, form.lines, form.chars, 2, dtype=torch.bool)
    if tones == "off":
        return req
    checked = P.checked_positions(form.chars, strict=tones == "strict")
    for k, first in enumerate(FIRST_TYPES):
        for i, kind in enumerate(P.template(first, form.lines)):
            pattern = P.line_pattern(kind, form.chars)
            for j in checked:
                req[k, i, j] = torch.tensor([pattern[j] == P.PING, pattern[j] == P.ZE])
    return req


class FormMask:
    """Per-poem progress through a form, and the ids each poem may write next."""

    def __init__(
        self,
        vp: VocabProsody,
        form: Form,
        batch: int,
        heads: list[str] | None = None,
        rhyme: str | None = None,
        tones: str = "relaxed",
        allow_repeat: bool = False,
    ):
        if tones not in TONES:
            raise FormError(f"--tones must be one of {', '.join(TONES)}, got {tones!r}")
        self.vp, self.form, self.batch = vp, form, batch
        self.allow_repeat = allow_repeat
        self.req = _requirements(form, tones)
        self.heads = heads or [""] * batch
        for h in self.heads:
            if len(h) > form.lines:
                raise FormError(f"acrostic '{h}' has {len(h)} heads but a {form.name} has {form.lines} lines")
        groups = torch.ones(batch, len(vp.groups), dtype=torch.bool)
        if rhyme:
            g = P.find_group(rhyme)
            if g is None:
                raise FormError(
                    f"--rhyme {rhyme}: not a 平水韵 平 group name (e.g. 阳 or 下平声七阳) or a rhyming character"
                )
            known = int(vp.in_group[vp.groups.index(g)].sum())
            if known < form.lines // 2 + 1:
                raise FormError(f"--rhyme {rhyme}: the model knows only {known} characters of {g}")
            groups[:] = False
            groups[:, vp.groups.index(g)] = True
        self.open_groups = groups  # (B, G)
        self.open_types = torch.ones(batch, 4, dtype=torch.bool)  # (B, 4)
        self.used = torch.zeros(batch, len(vp.vocab), dtype=torch.bool)
        for r, h in enumerate(self.heads):  # the heads are reserved for their lines
            for ch in h:
                self.used[r, vp.vocab.id(ch)] = True
        self.line = [0] * batch
        self.pos = [0] * batch  # 0..chars-1 a character, chars the punctuation
        self.finished = [False] * batch

    # -- what may come next

    def head_at(self, r: int) -> int | None:
        """The id forced at row r's current position by its acrostic, if any."""
        h = self.heads[r]
        if self.pos[r] == 0 and self.line[r] < len(h) and not self.finished[r]:
            return self.vp.vocab.id(h[self.line[r]])
        return None

    def allowed(self) -> torch.Tensor:
        """(B, V) bool: the ids each poem may write next."""
        vp, f = self.vp, self.form
        out = torch.zeros(self.batch, len(vp.vocab), dtype=torch.bool)
        for r in range(self.batch):
            i, j = self.line[r], self.pos[r]
            if self.finished[r] or i >= f.lines:
                out[r, EOS] = True
                continue
            if j == f.chars:
                out[r, vp.comma if i % 2 == 0 else vp.period] = True
                continue
            m = vp.char.clone()
            if not self.allow_repeat:
                m &= ~self.used[r]
            tones = self.req[self.open_types[r], i, j].any(dim=0)  # (2,) over the open templates
            if not tones.all():
                m &= vp.ping if tones[0] else vp.ze
            if j == f.chars - 1 and (i % 2 == 1 or i == 0):
                rhymes = (self.open_groups[r, :, None] & vp.in_group).any(dim=0)  # 平 chars of open groups
                if i % 2 == 1:
                    m &= rhymes
                else:  # line 1 rhymes (A, B) or ends 仄 (a, b)
                    may_rhyme = bool(self.open_types[r, [1, 3]].any())
                    may_not = bool(self.open_types[r, [0, 2]].any())
                    m &= (rhymes if may_rhyme else torch.zeros_like(m)) | (vp.ze if may_not else torch.zeros_like(m))
            out[r] = m if m.any() else vp.char  # nothing left that fits (e.g. no unused rhyme): any character
        return out

    def with_heads(self, ids: torch.Tensor) -> torch.Tensor:
        """`ids` with each row's acrostic head put in where its line starts."""
        heads = [self.head_at(r) for r in range(self.batch)]
        if all(h is None for h in heads):
            return ids
        forced = torch.tensor([-1 if h is None else h for h in heads], device=ids.device)
        return torch.where(forced >= 0, forced, ids)

    # -- after each step

    def update(self, ids: torch.Tensor) -> None:
        vp, f = self.vp, self.form
        for r, c in enumerate(ids.tolist()):
            if self.finished[r]:
                continue
            i, j = self.line[r], self.pos[r]
            if i >= f.lines:
                self.finished[r] = True
                continue
            if j < f.chars:
                self.used[r, c] = True
                tones = torch.tensor([bool(vp.ping[c]), bool(vp.ze[c])])
                fits = (self.req[:, i, j] & tones).any(dim=1) & self.open_types[r]
                if fits.any():  # a forced head or begin character that fits no template is let be
                    self.open_types[r] = fits
                if j == f.chars - 1 and (i % 2 == 1 or (i == 0 and not bool(vp.ze[c]))):
                    narrowed = self.open_groups[r] & vp.in_group[:, c]
                    if narrowed.any():
                        self.open_groups[r] = narrowed
                self.pos[r] += 1
            else:
                self.line[r], self.pos[r] = i + 1, 0
