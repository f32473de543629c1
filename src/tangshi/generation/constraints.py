"""The rules while decoding: masks over the logits that make a poem a 五绝 / 七绝 / 五律 / 七律 or a 词 by its 词牌.

A `FormMask` keeps, for every poem of a batch, where it stands (line, character) and what is still
open (which of the four tone templates, which 平水韵 groups), and gives at each step the set of
ids allowed next:
- characters only inside lines, `，` after odd lines and `。` after even ones, the end token right
  after the last line;
- the acrostic head at the start of each line, and any character fixed at a place (`fixed=`, a
  plan's keywords): forced, never masked, and reserved so that they are not written elsewhere; the
  templates and rhyme groups open from the start are those every fixed character fits, so the
  characters written before them never rule them out (begin phrases are forced by the search loops);
- the rhyme: the last character of every even line in one 平 group, chosen by the model's own first
  rhyming line or given (`rhyme=`); line 1 may rhyme (首句入韵) or end 仄, as the template says;
- the tone template (relaxed: positions 2, 4, 5 / 2, 4, 6, 7; strict: all; off), 平起 or 仄起 left
  to the model: every template still consistent with the characters written so far stays open;
- no character twice in a poem unless `allow_repeat`.
Only characters with a known reading are written inside lines, so every checked position counts.
Any sampler works on the masked logits, and beam search too (`select` reorders the rows).

A free form (`free_form(n)`, an acrostic or keywords without --form) has n lines whose length the
model chooses (4 to 9 characters), with the heads, fixed characters, punctuation, end token and
repeats ruled as above.

When a rule cannot be met (every character that fits is used up, or a forced head or begin
character has the wrong tone) the row writes any character and `failures[row]` says where.

`FormMask` and `CiMask` (a 词 by its 词牌) are what the search loops know as a `Constraint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from tangshi.data.vocab import EOS
from tangshi.generation.tables import (
    ALL_TYPES,
    FREE_MAX,
    FREE_MIN,
    RHYMING_FIRST,
    CiProsody,
    Form,
    FormError,
    VocabProsody,
    fit_tables,
    mask_sizes,
    need_in_words,
    tone_requirements,
)
from tangshi.options import TONES
from tangshi.prosody import regular


@dataclass(frozen=True, slots=True)
class Allowed:
    """What a constraint allows at a step."""

    ids: torch.Tensor  # (B, V) bool: the ids each row may write next
    single: bool  # every row has one id left: its draw, whatever the scores
    may_end: bool  # some row may choose between a character and its line's end (a free form's lines)


class Constraint(Protocol):
    """What the search loops need of a form, a 词牌, an acrostic or a template: one row a poem (or a
    beam hypothesis), `allowed` before each step, `update` with the ids written after it."""

    failures: list[str | None]  # each row's first rule that could not be met, in words, or None

    def allowed(self) -> Allowed: ...

    def ahead(self) -> tuple[list[int], torch.Tensor]:
        """The rows whose next character is narrowed (a rhyme or a fixed character) after a free choice
        now, and what each may write there (R, V) bool: where beam search looks ahead."""

    def update(self, ids: torch.Tensor) -> None: ...

    def select(self, rows: list[int]) -> None:
        """Keep these rows, in this order (beam search's surviving hypotheses)."""

    @property
    def all_finished(self) -> bool:
        """Every row has written its end token."""

    @property
    def ended_line(self) -> torch.Tensor:
        """(B,) bool: the last update closed the row's line."""

    @property
    def masks_repeats(self) -> bool:
        """`allowed` never offers a character the row has written, except as its only id (then a
        repetition penalty changes no draw)."""


class FormMask:
    """Per-poem progress through a form, and the ids each poem may write next."""

    # each row's state, one list item a poem (what `select` reorders)
    _ROW_LISTS = tuple("groups types fixed shortest taken line pos finished closed heads failures".split())

    def __init__(
        self,
        vp: VocabProsody,
        form: Form,
        batch: int,
        heads: list[str] | None = None,
        rhyme: str | None = None,
        tones: str = "relaxed",
        allow_repeat: bool = False,
        fixed: list[dict[tuple[int, int], str]] | None = None,
        fixed_field: str = "keywords",
    ):
        """`heads`: one string a row, the characters that start its lines. `fixed`: one mapping a row,
        (line, position) -> character, both 0-based (a plan's keywords placed by `planner.place`); heads
        are the position-0 case and may be given either way. `fixed_field`: the option a fixed character
        that breaks a rule is blamed on (keywords, template)."""
        if tones not in TONES:
            raise FormError(f"--tones must be one of {', '.join(TONES)}, got {tones!r}", "tones")
        if form.free and rhyme:
            raise FormError(f"--rhyme needs --form ({regular.FORMS_IN_WORDS})", "rhyme")
        self.vp, self.form, self.batch = vp, form, batch
        self.fixed_field = fixed_field
        self.allow_repeat = allow_repeat
        self.tones = "off" if form.free else tones
        self.req = tone_requirements(form, self.tones)  # cached: never modify
        self.heads = heads or [""] * batch
        for h in set(self.heads):
            self._check_heads(h)
        groups = (1 << len(vp.groups)) - 1
        if rhyme:
            g = regular.find_group(rhyme)
            if g is None:
                raise FormError(
                    f"--rhyme {rhyme}: not a 平水韵 平 group name (e.g. 阳 or 下平声七阳) or a rhyming character",
                    "rhyme",
                )
            known = int(vp.in_group[vp.groups.index(g)].sum())
            if known < form.lines // 2 + 1:
                raise FormError(f"--rhyme {rhyme}: the model knows only {known} characters of {g}", "rhyme")
            groups = 1 << vp.groups.index(g)
        # where each poem stands, one Python value a row: a step's bookkeeping is a few look-ups a
        # row, and only the (B, V) masks are tensors
        self.groups = [groups] * batch  # the 平水韵 groups still open, as bits (group g: 1 << g)
        self.types = [ALL_TYPES] * batch  # the tone templates still open, as bits (template k: 1 << k)
        self.free_ids = torch.ones(batch, len(vp.vocab), dtype=torch.bool)  # the ids not used yet
        self._code, self._tone_masks, self._fits = fit_tables(vp, form, self.tones)
        self.mask_sizes = mask_sizes(vp, form, self.tones)  # the characters each tone code allows
        self.fixed: list[dict[tuple[int, int], int]] = []  # each row's ids fixed at (line, place)
        self.taken: list[int] = []  # at least as many as each row's ids used or reserved
        self.shortest: list[dict[int, int]] = [{} for _ in range(batch)]  # free lines with fixed characters
        fixed = fixed or [{} for _ in range(batch)]
        if len(fixed) != batch or len(self.heads) != batch:
            raise ValueError(f"heads and fixed need one entry a row: {len(self.heads)} and {len(fixed)} for {batch}")
        for r in range(batch):  # heads and fixed characters are reserved for their places
            places = {(k, 0): ch for k, ch in enumerate(self.heads[r])}
            for (i, j), ch in fixed[r].items():
                self._check_fixed(i, j, ch, places.get((i, j)))
                places[(i, j)] = ch
            self.fixed.append({place: vp.vocab.id(ch) for place, ch in places.items()})
            if form.free:  # a free line ends no sooner than its last fixed character
                for i, j in places:
                    self.shortest[r][i] = max(self.shortest[r].get(i, FREE_MIN), j + 1)
            for ch in places.values():
                self.free_ids[r, vp.vocab.id(ch)] = False
            self.taken.append(len(set(places.values())))
            if not form.free:
                self._narrow(r, places)
        self.line = [0] * batch
        self.pos = [0] * batch  # 0..chars-1 a character, chars the punctuation
        self.finished = [False] * batch
        self.closed = [False] * batch  # the last update closed a line
        self.failures: list[str | None] = [None] * batch  # where a rule could not be met, first only

    @property
    def masks_repeats(self) -> bool:
        """Whether `allowed` never offers a character the poem has written, except as a row's only id
        (a regular form without allow_repeat): then a sampler's repetition penalty changes no draw."""
        return not self.form.free and not self.allow_repeat

    @property
    def all_finished(self) -> bool:
        """Whether every row has written its end token (the last `update` ended the last row)."""
        return all(self.finished)

    @property
    def used(self) -> torch.Tensor:
        """(B, V) bool: the ids each poem has used or reserved."""
        return ~self.free_ids

    @property
    def ended_line(self) -> torch.Tensor:
        """(B,) bool: the last update closed the row's line."""
        return torch.tensor(self.closed, dtype=torch.bool)

    def _check_heads(self, heads: str) -> None:
        vp, f = self.vp, self.form
        if len(heads) > f.lines:
            raise FormError(f"acrostic '{heads}' has {len(heads)} heads but a {f.name} has {f.lines} lines", "acrostic")
        for ch in heads:
            if ch not in vp.vocab or not regular.is_han(ch):
                raise FormError(f"acrostic head '{ch}' is not a Chinese character the model knows", "acrostic")
        if self.tones != "strict" or not heads:
            return
        # strict tones check line starts too: some template must take every head's tone
        tone = torch.tensor([[bool(vp.ping[vp.vocab.id(ch)]), bool(vp.ze[vp.vocab.id(ch)])] for ch in heads])
        fits = (self.req[:, : len(heads), 0] & tone).any(dim=-1)  # (4 templates, heads)
        if not fits.all(dim=1).any():
            i = next(k for k in range(len(heads)) if not fits[:, : k + 1].all(dim=1).any())
            raise FormError(
                f"--tones strict cannot be met: acrostic head '{heads[i]}' ({vp.tone_name(vp.vocab.id(heads[i]))}) "
                f"starts line {i + 1}, which every {f.name} tone template consistent with the heads before it "
                f"starts with {need_in_words(self.req[fits[:, :i].all(dim=1), i, 0])}; use --tones relaxed",
                "tones",
            )

    def _check_fixed(self, i: int, j: int, ch: str, head: str | None) -> None:
        vp, f = self.vp, self.form
        width = f.chars or FREE_MAX
        where = f"line {i + 1}, character {j + 1}"
        if not (0 <= i < f.lines and 0 <= j < width):
            raise FormError(
                f"fixed character '{ch}' at {where}: outside a {f.name} of {f.lines} lines", self.fixed_field
            )
        if ch not in vp.vocab or not bool(vp.char[vp.vocab.id(ch)]):
            raise FormError(f"fixed character '{ch}' at {where}: not a character the model knows", self.fixed_field)
        if head is not None and head != ch:
            raise FormError(f"fixed character '{ch}' at {where}: the acrostic head there is '{head}'", self.fixed_field)

    def _narrow(self, r: int, places: dict[tuple[int, int], str]) -> None:
        """Open only the templates and rhyme groups that every fixed character of row r fits."""
        vp, f = self.vp, self.form
        types, groups = ALL_TYPES, self.groups[r]
        for (i, j), ch in sorted(places.items()):
            c = vp.vocab.id(ch)
            if not bool(vp.char[c]):
                continue  # a head without a known reading: noted when it is written, as before
            fits = types & self._fits[i][j][vp.tone_class[c]]
            if not fits:
                raise FormError(
                    f"fixed character '{ch}' at line {i + 1}, character {j + 1} is {vp.tone_name(c)}, which no "
                    f"{f.name} tone template ({self.tones}) open with the characters fixed before it takes there",
                    self.fixed_field,
                )
            types = fits
            if j == f.chars - 1 and i % 2 == 1:  # a fixed rhyme
                groups &= vp.group_bits[c]
                if not groups:
                    raise FormError(
                        f"fixed character '{ch}' ends line {i + 1}, which rhymes, but it is not a 平 rhyme of the "
                        "group the other rhymes and --rhyme leave open",
                        self.fixed_field,
                    )
        self.types[r], self.groups[r] = types, groups

    # -- what may come next

    @property
    def open_types(self) -> torch.Tensor:
        """(B, 4) bool: the tone templates still open for each poem."""
        return (torch.tensor(self.types)[:, None] >> torch.arange(4)) & 1 > 0

    def _punctuation(self, i: int) -> int:
        """，after odd lines, 。after even ones and after the last."""
        return self.vp.comma if i % 2 == 0 and i < self.form.lines - 1 else self.vp.period

    def allowed(self) -> Allowed:
        """The ids each poem may write next (B, V), and whether each row has one only or a line's end to choose."""
        vp, f = self.vp, self.form
        only: dict[int, int] = {}  # rows that may write one id only (punctuation, a fixed id, the end)
        may_close: dict[int, int] = {}  # free-form rows that may end their line here or write on
        open_rows = []  # rows writing a character of their own choice
        codes, ends = [], []  # each row's tone code; the rows at a line's last character
        for r in range(self.batch):
            i, j = min(self.line[r], f.lines - 1), self.pos[r]
            if self.finished[r] or self.line[r] >= f.lines:
                only[r] = EOS
            elif (i, j) in self.fixed[r]:
                only[r] = self.fixed[r][(i, j)]
            elif f.free and j >= FREE_MAX or not f.free and j >= f.chars:
                only[r] = self._punctuation(i)
            else:
                open_rows.append(r)
                if f.free and j >= self.shortest[r].get(i, FREE_MIN):
                    may_close[r] = self._punctuation(i)
                elif not f.free and j == f.chars - 1 and (i % 2 == 1 or i == 0):
                    ends.append(r)
            if not f.free:
                codes.append(self._code[i][min(j, f.chars - 1)][self.types[r]])
        if f.free or len(set(codes)) == 1:  # one mask for every row: one operation
            base = vp.char if f.free else self._tone_masks[codes[0]]
            m = base.repeat(self.batch, 1) if self.allow_repeat else base & self.free_ids
        else:
            m = self._tone_masks[torch.tensor(codes)]
            if not self.allow_repeat:
                m &= self.free_ids
        if ends:  # rhyme positions: only these rows pay for the group look-up
            m[ends] &= torch.stack([self._rhyme_rule(r) for r in ends])
        # a row may have nothing left only where its mask holds no more characters than it has taken
        # (used or reserved), or at a rhyme: only those rows are looked at
        taken = [0] * self.batch if self.allow_repeat else self.taken
        sizes = [self.mask_sizes[3]] * self.batch if f.free else [self.mask_sizes[c] for c in codes]
        doubtful = [r for r in open_rows if sizes[r] <= taken[r] or r in ends]
        if doubtful:
            has = dict(zip(doubtful, m[doubtful].any(dim=1).tolist(), strict=True))
            for r in doubtful:
                if has[r]:
                    continue
                if f.free:  # no unused character left for a longer line: close it
                    only[r] = self._punctuation(self.line[r])
                    continue
                # nothing left that fits (e.g. every rhyme used): any character, noted
                i, j, code = self.line[r], self.pos[r], codes[r]
                need = torch.tensor([bool(code & 1), bool(code & 2)])
                self._note_stuck(r, i, j, need, j == f.chars - 1 and i % 2 == 1)
                m[r] = vp.char
        if may_close:
            m[list(may_close), list(may_close.values())] = True
        if only:
            rows = list(only)
            m[rows] = False
            m[rows, list(only.values())] = True
        return Allowed(m, single=len(only) == self.batch, may_end=bool(may_close))

    def ahead(self) -> tuple[list[int], torch.Tensor]:
        """The rows choosing a character freely now whose next one is a rhyme (an even line's last) or
        fixed (a keyword, a template's), and what each may write there: (rows, (R, V) bool)."""
        f, rows, masks = self.form, [], []
        for r in range(self.batch if not f.free else 0):
            i, j = self.line[r], self.pos[r]
            if self.finished[r] or i >= f.lines or j + 1 >= f.chars or (i, j) in self.fixed[r]:
                continue
            fixed = self.fixed[r].get((i, j + 1))
            if fixed is not None:
                m = torch.zeros(len(self.vp.vocab), dtype=torch.bool)
                m[fixed] = True
            elif j + 1 == f.chars - 1 and i % 2 == 1:
                m = self._tone_masks[self._code[i][j + 1][self.types[r]]] & self.vp.rhymes(self.groups[r])
                if not self.allow_repeat:
                    m = m & self.free_ids[r]
            else:
                continue
            rows.append(r)
            masks.append(m)
        return rows, torch.stack(masks) if masks else torch.zeros(0, len(self.vp.vocab), dtype=torch.bool)

    def _rhyme_rule(self, r: int) -> torch.Tensor:
        """(V,) bool: what row r may end its line with: a rhyme of its open groups at an even line;
        at line 1 a rhyme (templates A, B) or a 仄 character (a, b), as its open templates allow."""
        rhymes = self.vp.rhymes(self.groups[r])
        if self.line[r] % 2 == 1:
            return rhymes
        may_rhyme, may_not = self.types[r] & RHYMING_FIRST, self.types[r] & ~RHYMING_FIRST
        if may_rhyme and may_not:
            return rhymes | self.vp.ze
        return rhymes if may_rhyme else self.vp.ze if may_not else torch.zeros_like(rhymes)

    def _note_stuck(self, r: int, i: int, j: int, need: torch.Tensor, rhyming: bool) -> None:
        if self.failures[r] is not None:
            return
        vp = self.vp
        groups = "/".join(vp.groups[g][-1] for g in vp.group_list(self.groups[r]))
        rules = [f"is {need_in_words(need[None])}"] if not need.all() else []
        rules += [f"rhymes in {groups}"] if rhyming else []
        what = " ".join(["no unused character", *([" and ".join(rules)] if rules else [])])
        self.failures[r] = f"line {i + 1}, character {j + 1}: {what}"

    # -- after each step

    def update(self, ids: torch.Tensor) -> None:
        vp, f = self.vp, self.form
        written_rows, written_ids = [], []
        self.closed = [False] * self.batch
        for r, c in enumerate(ids.tolist()):
            i, j = self.line[r], self.pos[r]
            if self.finished[r] or i >= f.lines:
                self.finished[r] = True
                continue
            if (c in (vp.comma, vp.period)) if f.free else j >= f.chars:  # the line closes
                self.line[r], self.pos[r], self.closed[r] = i + 1, 0, True
                continue
            if not f.free:
                fits = self.types[r] & self._fits[i][j][vp.tone_class[c]]  # the open templates c fits
                if fits:
                    self.types[r] = fits
                elif self.failures[r] is None:  # a begin character (fixed ones fit by design)
                    self.failures[r] = (
                        f"line {i + 1}, character {j + 1}: '{vp.vocab.tokens[c]}' is {vp.tone_name(c)} where the "
                        f"tone template needs {need_in_words(self.req[self.open_types[r], i, j])}"
                    )
                if j == f.chars - 1 and (i % 2 == 1 or i == 0 and not vp.is_ze[c]):  # a rhyme: its groups
                    self.groups[r] = (self.groups[r] & vp.group_bits[c]) or self.groups[r]
            written_rows.append(r)
            written_ids.append(c)
            self.taken[r] += 1
            self.pos[r] = j + 1
        if written_rows:
            self.free_ids[written_rows, written_ids] = False

    def select(self, rows: list[int]) -> None:
        """Keep these rows, in this order (beam search reorders and copies its hypotheses)."""
        self.free_ids = self.free_ids[torch.tensor(rows, dtype=torch.long)]
        for name in self._ROW_LISTS:
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in rows])
        self.batch = len(rows)


class CiMask:
    """Per-词 progress through a 词牌's format, and the ids each 词 may write next: its clauses'
    lengths and punctuation (，after a clause that does not rhyme, 。after one that does), 平 or 仄 at
    every 平/仄 position (中 free; `tones="off"` frees them all), every rhyme group in one 词林正韵
    class (a 部's 平, its 上去, or an 入声 部) with no rhyme character twice, its 叶 positions in the
    same 部, no character more than `MAX_USES` times (a 词 repeats more than a 诗 does, but never
    loops; `allow_repeat` lifts it), and the end token after the last clause. Heads start the clauses
    and `fixed` characters are forced at their places: a head's place keeps no tone unless
    `tones="strict"` (as the first character of a line of 诗), a fixed one's must fit. Same interface
    as `FormMask`: a `Constraint`."""

    MAX_USES = 2
    # each row's state, one tensor row a 词 (what `select` reorders)
    _ROW_TENSORS = tuple("open rhymed fixed_ids free_tone uses pos at_punct finished ended ended_line".split())
    masks_repeats = False  # a character may come back (up to MAX_USES)

    def __init__(
        self,
        cp: CiProsody,
        fmt,  # ci.CiFormat
        batch: int,
        heads: list[str] | None = None,
        tones: str = "relaxed",
        fixed: list[dict[tuple[int, int], str]] | None = None,
        fixed_field: str = "keywords",
        allow_repeat: bool = False,
    ):
        if tones not in TONES:
            raise FormError(f"--tones must be one of {', '.join(TONES)}, got {tones!r}", "tones")
        vp = cp.vp
        self.tones, self.allow_repeat = tones, allow_repeat
        self.cp, self.vp, self.fmt, self.batch = cp, vp, fmt, batch
        self.heads = heads or [""] * batch
        n = fmt.chars
        need = torch.zeros(n, dtype=torch.long)  # 0 either, 1 平, 2 仄
        if tones != "off":
            for p, t in enumerate(fmt.tones):
                need[p] = 1 if t == regular.PING else 2 if t == regular.ZE else 0
        self.need = need
        self.group = torch.full((n,), -1, dtype=torch.long)  # rhyme group at each position, -1 none
        self.ye = torch.zeros(n, dtype=torch.bool)
        for p, (g, ye) in fmt.rhyme_at.items():
            self.group[p], self.ye[p] = g, ye
        starts = self.starts = fmt.starts
        self.ends = fmt.ends
        self.clause_of = torch.tensor([c for c, (length, _) in enumerate(fmt.clauses) for _ in range(length)])
        self.punct = torch.tensor([vp.vocab.id(fmt.punctuation(c)) for c in range(len(fmt.clauses))])
        self.tone_masks = torch.stack([vp.char, vp.char & vp.ping, vp.char & vp.ze])  # (3, V)
        groups = len(fmt.groups)
        tone_ok = torch.stack([cp.tone_classes[g.tone] for g in fmt.groups]) if groups else torch.zeros(0, 1)
        self.open = tone_ok[None].expand(batch, -1, -1).clone()  # (B, G, C) the classes each group may rhyme in
        self.rhymed = torch.zeros(batch, max(groups, 1), len(vp.vocab), dtype=torch.bool)  # used rhyme characters
        self.fixed_ids = torch.full((batch, n), -1, dtype=torch.long)
        self.free_tone = torch.zeros(batch, n, dtype=torch.bool)  # heads' places: any tone
        self.uses = torch.zeros(batch, len(vp.vocab), dtype=torch.uint8)
        fixed = fixed or [{} for _ in range(batch)]
        if len(fixed) != batch or len(self.heads) != batch:
            raise ValueError(f"heads and fixed need one entry a row: {len(self.heads)} and {len(fixed)} for {batch}")
        for r in range(batch):
            self._check_heads(self.heads[r])
            places = {(k, 0): ch for k, ch in enumerate(self.heads[r])}
            for (i, j), ch in fixed[r].items():
                if (i, j) in places and places[(i, j)] != ch:
                    raise FormError(f"fixed character '{ch}' at clause {i + 1}: the acrostic head there is "
                                    f"'{places[(i, j)]}'", fixed_field)  # fmt: skip
                places[(i, j)] = ch
            for (i, j), ch in places.items():
                if not (0 <= i < len(starts) and 0 <= j < fmt.clauses[i][0]):
                    raise FormError(f"fixed character '{ch}': clause {i + 1} of {fmt.cipai} has no place {j + 1}",
                                    fixed_field)  # fmt: skip
                self.fixed_ids[r, starts[i] + j] = vp.vocab.id(ch)
                self.free_tone[r, starts[i] + j] = j == 0 and i < len(self.heads[r]) and tones != "strict"
        self.pos = torch.zeros(batch, dtype=torch.long)  # the next character's position; n + clause when punctuating
        self.at_punct = torch.zeros(batch, dtype=torch.bool)
        self.finished = torch.zeros(batch, dtype=torch.bool)  # the last clause written: the end token next
        self.ended = torch.zeros(batch, dtype=torch.bool)  # the end token written
        self.ended_line = torch.zeros(batch, dtype=torch.bool)
        self.failures: list[str | None] = [None] * batch

    def _check_heads(self, heads: str) -> None:
        f = self.fmt
        if len(heads) > len(f.clauses):
            raise FormError(
                f"acrostic '{heads}' has {len(heads)} heads but {f.cipai} (format {f.number}) has "
                f"{len(f.clauses)} clauses",
                "acrostic",
            )
        for ch in heads:
            if ch not in self.vp.vocab or not regular.is_han(ch):
                raise FormError(f"acrostic head '{ch}' is not a Chinese character the model knows", "acrostic")
        if self.tones != "strict":
            return
        vp, start = self.vp, 0
        for c, ch in enumerate(heads):
            need, i = self.need[start], vp.vocab.id(ch)
            if need and not bool(self.tone_masks[int(need), i]):
                raise FormError(
                    f"--tones strict cannot be met: acrostic head '{ch}' ({vp.tone_name(i)}) starts clause {c + 1} "
                    f"of {f.cipai}, which the pattern starts with {regular.PING if need == 1 else regular.ZE}; "
                    "use --tones relaxed",
                    "tones",
                )
            start += f.clauses[c][0]

    def _rhymes(self, rows: torch.Tensor, groups: torch.Tensor, ye: torch.Tensor) -> torch.Tensor:
        """(R, V): the characters that can fill these rows' rhyme positions (of `groups`, 叶 or not)."""
        cp = self.cp
        open_ = self.open[rows, groups]  # (R, C)
        bu = (open_.float() @ cp.same_bu.float()) > 0  # the classes of the open classes' 部
        classes = torch.where(ye[:, None], bu, open_)
        return ((classes.float() @ cp.member_f) > 0) & ~self.rhymed[rows, groups]

    def allowed(self) -> Allowed:
        """The ids each 词 may write next (B, V); a clause's end is never a choice (its punctuation is
        forced where it falls)."""
        vp, n = self.vp, self.fmt.chars
        rows = torch.arange(self.batch)
        done = self.finished
        p = self.pos.clamp(max=n - 1)
        m = self.tone_masks[self.need[p]].clone()  # (B, V)
        if not self.allow_repeat:
            m &= self.uses < self.MAX_USES
        g = self.group[p]
        rhyming = (g >= 0) & ~self.at_punct & ~done
        if bool(rhyming.any()):
            r = rows[rhyming]
            m[r] &= self._rhymes(r, g[r], self.ye[p[r]])
        forced = torch.where(~self.at_punct & ~done, self.fixed_ids[rows, p], -1)
        stuck = ~m.any(dim=1) & ~self.at_punct & ~done & (forced < 0)
        for r in stuck.nonzero().flatten().tolist():
            self._note(r, int(p[r]), "no character fits")
        m[stuck] = vp.char
        special = self.at_punct | (forced >= 0) | done
        single = bool(special.all())
        if not single and not bool(special.any()):
            return Allowed(m, single=False, may_end=False)
        out = m & ~special[:, None]
        punct = self.at_punct & ~done
        clause = self.clause_of[(self.pos - 1).clamp(min=0, max=n - 1)]  # the clause just written
        out[rows[punct], self.punct[clause[punct]]] = True
        force = forced >= 0
        out[rows[force], forced[force]] = True
        out[done] = False
        out[done, EOS] = True
        return Allowed(out, single=single, may_end=False)

    def ahead(self) -> tuple[list[int], torch.Tensor]:
        """The rows choosing a character freely now whose next one, in the same clause, is a rhyme or
        fixed, and what each may write there: (rows, (R, V) bool)."""
        n = self.fmt.chars
        p = self.pos.clamp(max=n - 1)
        rows_all = torch.arange(self.batch)
        nxt = (p + 1).clamp(max=n - 1)
        same_clause = (p + 1 < n) & ~torch.isin(p, torch.tensor(self.ends))
        free_now = ~self.at_punct & ~self.finished & (self.fixed_ids[rows_all, p] < 0)
        fixed_next = self.fixed_ids[rows_all, nxt]
        rhyme_next = self.group[nxt] >= 0
        look = same_clause & free_now & ((fixed_next >= 0) | rhyme_next)
        rows = look.nonzero().flatten()
        if not len(rows):
            return [], torch.zeros(0, len(self.vp.vocab), dtype=torch.bool)
        q = nxt[rows]
        m = self.tone_masks[self.need[q]].clone()
        if not self.allow_repeat:
            m &= self.uses[rows] < self.MAX_USES
        rh = rhyme_next[rows]
        if bool(rh.any()):
            m[rh] &= self._rhymes(rows[rh], self.group[q[rh]], self.ye[q[rh]])
        fx = fixed_next[rows] >= 0
        if bool(fx.any()):
            m[fx] = False
            m[fx.nonzero().flatten(), fixed_next[rows][fx]] = True
        return rows.tolist(), m

    @property
    def all_finished(self) -> bool:
        """Whether every row has written its end token."""
        return bool(self.ended.all())

    def _note(self, r: int, p: int, what: str) -> None:
        if self.failures[r] is None:
            c = int(self.clause_of[p])
            self.failures[r] = f"clause {c + 1}, character {p - self.starts[c] + 1}: {what}"

    def update(self, ids: torch.Tensor) -> None:
        vp, cp, n = self.vp, self.cp, self.fmt.chars
        c = ids.to("cpu", torch.long)
        rows = torch.arange(self.batch)
        live = ~self.finished
        punct = live & self.at_punct
        writes = live & ~self.at_punct
        p = self.pos.clamp(max=n - 1)
        for r in writes.nonzero().flatten().tolist():  # characters the mask did not choose (begins): noted
            need, ch = int(self.need[p[r]]), int(c[r])
            if need and not bool(self.tone_masks[need, ch]) and not bool(self.free_tone[r, p[r]]):
                self._note(r, int(p[r]), f"'{vp.vocab.tokens[ch]}' is {vp.tone_name(ch)} where the pattern needs "
                                         f"{regular.PING if need == 1 else regular.ZE}")  # fmt: skip
        g = self.group[p]
        rhymes = writes & (g >= 0)
        for r in rhymes.nonzero().flatten().tolist():
            gr, ch = int(g[r]), int(c[r])
            has = cp.member[:, ch]  # (C,) the classes of the character
            if bool(self.ye[p[r]]):
                has = (has.float() @ cp.same_bu.float()) > 0
            narrowed = self.open[r, gr] & has
            if bool(narrowed.any()):
                self.open[r, gr] = narrowed
            else:
                self._note(r, int(p[r]), f"'{vp.vocab.tokens[ch]}' does not rhyme with the group")
            self.rhymed[r, gr, ch] = True
        w = rows[writes]
        self.uses[w, c[writes]] = (self.uses[w, c[writes]] + 1).clamp(max=255)
        last = writes & torch.isin(p, torch.tensor(self.ends))
        self.ended_line = punct.clone()
        self.pos = torch.where(writes, self.pos + 1, self.pos)
        self.at_punct = torch.where(writes, last, torch.where(punct, False, self.at_punct))
        self.finished = self.finished | (punct & (self.pos >= n)) | (live & (c == EOS))
        self.ended = self.ended | (c == EOS)

    def select(self, rows: list[int]) -> None:
        idx = torch.tensor(rows, dtype=torch.long)
        for name in self._ROW_TENSORS:
            setattr(self, name, getattr(self, name)[idx])
        self.heads = [self.heads[r] for r in rows]
        self.failures = [self.failures[r] for r in rows]
        self.batch = len(rows)
