"""The vocabulary against the rules, as tensors: the forms and their tone templates (`Form`, templates
with open places), each character's tones and 平水韵 groups (`VocabProsody`) and its 词林正韵 classes
(`CiProsody`), and the tables of which characters fit each place of a form. Made once a checkpoint
(`generation.bundle.Bundle`), read by the masks (`generation.constraints`) and the planner.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from tangshi.data.text import split_at_breaks
from tangshi.data.vocab import Vocab
from tangshi.options import OptionError
from tangshi.prosody import cipai, regular

FIRST_TYPES = "aAbB"  # the four templates, by the type of line 1
ALL_TYPES = 0b1111  # a set of templates as bits: bit k for FIRST_TYPES[k]
RHYMING_FIRST = 0b1010  # the templates whose line 1 rhymes (A, B)
FREE_MIN, FREE_MAX = 4, 9  # characters per line of a free form


class FormError(OptionError):
    """A form request that cannot be met; the message says why, `field` names the option."""


@dataclass(frozen=True)
class Form:
    name: str
    lines: int
    chars: int  # characters per line; 0 for a free form (FREE_MIN to FREE_MAX, the model's choice)

    @property
    def free(self) -> bool:
        return self.chars == 0

    @property
    def length(self) -> int:
        """Most tokens of a poem: characters and punctuation (the end token not counted)."""
        return self.lines * ((self.chars or FREE_MAX) + 1)


def get_form(name: str) -> Form:
    if name not in regular.FORMS:
        raise FormError(f"--form must be one of {', '.join(regular.FORMS)}, got {name!r}", "form")
    lines, chars = regular.FORMS[name]
    return Form(name, lines, chars)


OPEN = "＿_"  # an open place of a template


def parse_template(text: str, form: str = "free") -> tuple[Form, dict[tuple[int, int], str]]:
    """A poem with open places (`OPEN`) -> (its regular form, {(line, place): fixed character}, both
    0-based). The form is `form` when one is given (the template must have its shape), else the one
    whose shape the template has."""
    lines = split_at_breaks(text)
    if form != "free":
        f = get_form(form)
    else:
        shapes = {regular.FORMS[name]: name for name in regular.FORMS}
        name = shapes.get((len(lines), len(lines[0]) if lines else 0))
        if name is None or any(len(ln) != len(lines[0]) for ln in lines):
            shape = regular.shape(lines)
            got = f"has lines of {shape} places" if shape else "has no line"
            raise FormError(
                f"--template {got}: not the shape of a {regular.FORMS_IN_WORDS} "
                "(4 or 8 lines of 5 or 7); give --form to be told which line is off",
                "template",
            )
        f = get_form(name)
    if len(lines) != f.lines:
        raise FormError(f"--template has {len(lines)} lines, a {f.name} has {f.lines}", "template")
    fixed = {}
    for i, ln in enumerate(lines):
        if len(ln) != f.chars:
            raise FormError(f"--template line {i + 1} has {len(ln)} places, a {f.name} line has {f.chars}", "template")
        for j, ch in enumerate(ln):
            if ch in OPEN:
                continue
            if not regular.is_han(ch):
                where = f"--template line {i + 1}, place {j + 1}"
                raise FormError(f"{where}: '{ch}' is neither a character nor an open place (＿ or _)", "template")
            fixed[(i, j)] = ch
    return f, fixed


def free_form(lines: int) -> Form:
    if lines < 1:
        raise FormError("an acrostic needs at least one head character", "acrostic")
    return Form("free", lines, 0)


class VocabProsody:
    """The vocabulary's characters as tensors: Han with a reading, 平, 仄, and 平 group membership."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.groups = regular.group_names()
        v = len(vocab)
        self.char = torch.zeros(v, dtype=torch.bool)
        self.ping = torch.zeros(v, dtype=torch.bool)
        self.ze = torch.zeros(v, dtype=torch.bool)
        self.in_group = torch.zeros(len(self.groups), v, dtype=torch.bool)
        index = {g: i for i, g in enumerate(self.groups)}
        for i, tok in enumerate(vocab.tokens):
            if len(tok) != 1 or not regular.is_han(tok):
                continue
            rs = regular.readings(tok)
            if not rs:
                continue
            self.char[i] = True
            for r in rs:
                if r.tone == regular.PING:
                    self.ping[i] = True
                    if r.group in index:
                        self.in_group[index[r.group], i] = True
                else:
                    self.ze[i] = True
        self.comma, self.period = vocab.id("，"), vocab.id("。")
        # the same facts as Python values, for the per-row bookkeeping of a decoding step
        self.is_ze = self.ze.tolist()
        self.tone_class = (self.ping.long() + 2 * self.ze.long()).tolist()  # 0 none, 1 平, 2 仄, 3 both
        self.group_bits = [0] * v  # each id's 平 groups as bits, group g as 1 << g
        for g, members in enumerate(self.in_group):
            for i in members.nonzero().flatten().tolist():
                self.group_bits[i] |= 1 << g
        self._rhymes: dict[int, torch.Tensor] = {}

    def rhymes(self, bits: int) -> torch.Tensor:
        """(V,) bool: the 平 characters of the groups in `bits` (made once a set of groups)."""
        m = self._rhymes.get(bits)
        if m is None:
            m = self._rhymes[bits] = self.in_group[self.group_list(bits)].any(dim=0)
        return m

    def group_list(self, bits: int) -> list[int]:
        """The groups in a set of groups as bits, in order."""
        return [g for g in range(len(self.groups)) if bits >> g & 1]

    def tone_name(self, i: int) -> str:
        return {(True, False): regular.PING, (False, True): regular.ZE, (True, True): "平 or 仄"}.get(
            (bool(self.ping[i]), bool(self.ze[i])), "of unknown tone"
        )


@functools.lru_cache(maxsize=32)
def tone_requirements(form: Form, tones: str) -> torch.Tensor:
    """(4 templates, lines, chars, 2) bool: which tones (平, 仄) each position accepts."""
    req = torch.ones(4, form.lines, max(form.chars, 1), 2, dtype=torch.bool)
    if tones == "off" or form.free:
        return req
    checked = regular.checked_positions(form.chars, strict=tones == "strict")
    for k, first in enumerate(FIRST_TYPES):
        for i, kind in enumerate(regular.template(first, form.lines)):
            pattern = regular.line_pattern(kind, form.chars)
            for j in checked:
                req[k, i, j] = torch.tensor([pattern[j] == regular.PING, pattern[j] == regular.ZE])
    return req


@functools.lru_cache(maxsize=32)
def fit_tables(vp: VocabProsody, form: Form, tones: str) -> tuple[list, torch.Tensor, list]:
    """Look-up tables that make a decoding step a few look-ups a row, made once per vocabulary and form.

    A set of open templates is a 4-bit number; a character's tone class is `VocabProsody.tone_class`:
    1 (平), 2 (仄), 3 (both readings) or 0 (no reading). Returns
    code [lines][chars][16 sets]: which tones (bit 1 平, bit 2 仄) some open template takes there;
    tone_masks (4 codes, V): the characters each code allows;
    fits [lines][chars][4 classes]: the set of templates a character of each class fits there."""
    req = tone_requirements(form, tones)
    bits = torch.tensor([1 << k for k in range(4)])
    sets = (torch.arange(16)[:, None] & bits) > 0  # (16, 4): the templates in each set
    per_pos = req.permute(1, 2, 0, 3)  # (lines, chars, 4 templates, 2 tones)
    need = (per_pos[:, :, None] & sets[:, :, None]).any(dim=3)  # (lines, chars, 16 sets, 2 tones)
    code = need[..., 0].long() + 2 * need[..., 1].long()
    tone_masks = torch.stack([torch.zeros_like(vp.char), vp.char & vp.ping, vp.char & vp.ze, vp.char])
    classes = torch.tensor([[False, False], [True, False], [False, True], [True, True]])  # (4, 2)
    takes = (per_pos[:, :, None] & classes[:, None]).any(dim=-1)  # (lines, chars, 4 classes, 4 templates)
    fits = (takes.long() * bits).sum(dim=-1)
    return code.tolist(), tone_masks, fits.tolist()


@functools.lru_cache(maxsize=32)
def mask_sizes(vp: VocabProsody, form: Form, tones: str) -> list[int]:
    """How many characters each tone code's mask of `fit_tables` allows (code 3: every character)."""
    return fit_tables(vp, form, tones)[1].sum(dim=1).tolist()


def template_fits(vp: VocabProsody, form: Form, tones: str, line: int, pos: int, char: str) -> int:
    """The set of tone templates (4 bits, as `FormMask.types`) that take `char` at (line, pos), 0-based."""
    return fit_tables(vp, form, tones)[2][line][pos][vp.tone_class[vp.vocab.id(char)]]


def need_in_words(req: torch.Tensor) -> str:
    """What a (templates, 2) requirement asks for, in words."""
    ping, ze = bool(req[:, 0].any()), bool(req[:, 1].any())
    return regular.PING if ping and not ze else regular.ZE if ze and not ping else "平 or 仄"


# ---------------------------------------------------------------- 词 by 词牌


class CiProsody:
    """The vocabulary's characters against the 词林正韵: 平, 仄, and membership of each rhyme class
    (平 and 上去 of 部 1–14, 入 of 部 15–19) and of each 部."""

    def __init__(self, vp: VocabProsody):
        self.vp = vp
        self.classes = cipai.rhyme_classes()
        index = {c: k for k, c in enumerate(self.classes)}
        v = len(vp.vocab)
        self.member = torch.zeros(len(self.classes), v, dtype=torch.bool)  # (C, V)
        for i, tok in enumerate(vp.vocab.tokens):
            if bool(vp.char[i]):
                for r in cipai.rhymes(tok):
                    self.member[index[r], i] = True
        bus = torch.tensor([c.bu for c in self.classes])
        self.same_bu = bus[:, None] == bus[None, :]  # (C, C): classes of one 部
        self.tone_classes = {  # the classes a rhyme of each tone may take
            regular.PING: torch.tensor([c.kind == regular.PING for c in self.classes]),
            regular.ZE: torch.tensor([c.kind != regular.PING for c in self.classes]),
        }
        self.member_f = self.member.float()

    def name(self, k: int) -> str:
        return self.classes[k].name
