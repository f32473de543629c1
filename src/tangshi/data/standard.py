"""Standard simplified forms (GB 2312) of the variants OpenCC's t2s leaves (鴈 劒 疎 飜 𬬻 …).

`standard_form(ch)` is the table: what OpenCC's own Japanese and Hong Kong dictionaries say
(jp2t then t2s: 髪 -> 发; hk2s: 粧 -> 妆; t2jp: 飜 -> 翻), else a short hand list of the
異體字 OpenCC does not join (鴈 -> 雁, 疎 -> 疏, ...); only a form inside GB 2312 is ever written.
`standard_map(text)` is what one poem may change: a character is mapped only where its standard
form reads every way it does in the 平水韵 (`prosody.regular.readings`, so the tone and rhyme the
mask chose hold), and never where two different written characters would then be one (a poem
must not repeat a character it did not repeat). `to_standard(text)` applies it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from tangshi.data.text import converter

# Variants OpenCC's dictionaries do not join to their GB 2312 form (第一批異體字整理表 and common use).
HAND = dict(
    zip(
        "疎踈簷鴈劒媿蘂僊臯猨髙巵鼇櫂煖賸嬾牋歛妬隣罇覩隄椀鉏懽筯俛彊怱鳯斾敧堦檝缾袴虀斲峩拏畧遯秪秖穉燄"
        "犂潄筿迺鏁廻邉鼈麤磵悮欵羮栢逈烱蔕暎幙槩壻緜牓諠碁呌鵶鸎藂逺様倐棃濶塲澣廐啣鎗粃觧罏翺皷輙盌睠"
        "邨荅氊蕚姪祐帬憇臙筦瑯瓌羇揜繖醆桮驩顇薫朶顦繙偪殽穽搆慙徧𬬻𫏐𫇛𥩟𬯎",
        "疏疏檐雁剑愧蕊仙皋猿高卮鳌棹暖剩懒笺敛妒邻樽睹堤碗锄欢箸俯强匆凤旆欹阶楫瓶裤齑斫峨拿略遁只只稚焰"
        "犁漱筱乃锁回边鳖粗涧误款羹柏迥炯蒂映幕概婿绵榜喧棋叫鸦莺丛远样倏梨阔场浣厩衔枪秕解垆翱鼓辄碗眷"
        "村答毡萼侄佑裙憩胭管琅瑰羁掩伞盏杯欢悴薰朵憔翻逼肴阱构惭遍炉暂橹伫颓",
        strict=True,
    )
)


def gb2312(ch: str) -> bool:
    """Whether a character (or text) is in GB 2312, the common simplified set."""
    try:
        ch.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


@cache
def standard_form(ch: str) -> str:
    """The GB 2312 form of a (simplified) character OpenCC leaves outside GB 2312; itself otherwise."""
    if len(ch) != 1 or gb2312(ch):
        return ch
    t2s = converter("t2s")
    for config in ("jp2t", "hk2s", "t2jp"):
        form = t2s.convert(converter(config).convert(ch))
        if len(form) == 1 and form != ch and gb2312(form):
            return form
    form = HAND.get(ch, ch)
    return form if gb2312(form) else ch


def _covers(form: str, ch: str) -> bool:
    """Whether `form` reads every way `ch` does: each tone, and each rhyme group `ch` has."""
    from tangshi.prosody.regular import readings

    theirs = readings(form)
    return any(readings(ch)) and all(
        any(r.tone == s.tone and (not r.group or r.group == s.group) for s in theirs) for r in readings(ch)
    )


def standard_map(text: str, same: Callable[[str], bool] | None = None) -> dict[str, str]:
    """The characters of `text` to write in their standard form, so that no rule breaks.

    A variant is mapped where its standard form reads every way it does (`_covers`: the tone and
    rhyme group the mask chose stay); one the 平水韵 has no reading of only where `same(mapped text)`
    says the poem's prosody report is unchanged. Where two different characters of the text would
    become one, both stay as written.
    """
    wanted = {ch: standard_form(ch) for ch in set(text)}
    wanted = {ch: form for ch, form in wanted.items() if form != ch}
    targets: dict[str, int] = {}
    for form in wanted.values():
        targets[form] = targets.get(form, 0) + 1
    wanted = {ch: form for ch, form in wanted.items() if targets[form] == 1 and form not in text}
    mapping = {ch: form for ch, form in wanted.items() if _covers(form, ch)}
    if same is not None:
        for ch in sorted(set(wanted) - set(mapping)):
            trial = {**mapping, ch: wanted[ch]}
            if not _reads(ch) and same(_apply(text, trial)):
                mapping = trial
    return mapping


def _reads(ch: str) -> bool:
    from tangshi.prosody.regular import readings

    return bool(readings(ch))


def _apply(text: str, mapping: dict[str, str]) -> str:
    return "".join(mapping.get(ch, ch) for ch in text) if mapping else text


def poem_map(text: str, regular: bool = True) -> dict[str, str]:
    """`standard_map` of a written poem: a regular poem's unread variants too, where its 平水韵 report
    (`prosody.regular.check`) keeps its form and template and loses no rule (`_no_worse`); a 词's
    only where the readings hold."""
    if not regular:
        return standard_map(text)
    from tangshi.prosody.regular import check

    before = check(text).to_dict()
    return standard_map(text, lambda t: _no_worse(before, check(t).to_dict()))


def _no_worse(before: dict, after: dict) -> bool:
    """Whether a poem's report `after` keeps the form and template of `before` and breaks no rule it kept."""
    return (
        all(after.get(k) == before.get(k) for k in ("form", "template", "rhyme_group"))
        and all(after.get(k) or not before.get(k) for k in ("rhyme", "first_line_rhymes", "relaxed_ok"))
        and all((after.get(k) or 0) >= (before.get(k) or 0) for k in ("relaxed", "strict"))
    )


def to_standard(text: str, same: Callable[[str], bool] | None = None) -> str:
    """`text` with its variants in their standard form (`standard_map`)."""
    return _apply(text, standard_map(text, same))
