"""Build tangshi's 词谱 (src/tangshi/cipu.json) from the couyun project's 词谱 in ../shared/data.

    python scripts/make_cipu.py [--source ../shared/data/couyun/ci_pu] [--out src/tangshi/cipu.json]

Keeps what writing and checking need, no example 词: for each 词牌 its names (the first is the name,
the rest aliases), 单调/双调 and character count; for each format (the 钦定词谱's formats in its
order, then 龙榆生's), the tone of every character (平, 仄, 中 either), the clauses (length and the
mark that ends it: 句, 读, 韵, 叶, 换) and the rhyme groups (their tone, 平 or 仄, and the positions
that rhyme together, 0-based; a negative position -p rhymes by 叶韵). A format whose marked pattern
disagrees with its tone string (和声 words such as 竹枝/女儿 inside the pattern, 叠 repeats, a mark
out of place) is left out, and counted.
The couyun data is MIT-licensed (couyun/LICENSE); the notice goes into the file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

TONES = "平仄中"
ENDS = "句读韵叶换"


def clauses(sep: list[str], tones: str, rhymes: set[int]) -> list[list] | None:
    """[[length, mark], ...] from the marked lines, or None where they disagree with the tone string.
    A 平 or 仄 right before 韵 at a rhyme position is the rhyme's tone (平韵, 仄韵, 换仄韵), a mark."""
    out, n, p = [], 0, 0
    for line in sep:
        for i, ch in enumerate(line):
            if ch in "平仄" and line[i + 1 : i + 2] == "韵" and p - 1 in rhymes:
                continue
            if ch in TONES:
                if p >= len(tones) or tones[p] != ch:
                    return None
                n, p = n + 1, p + 1
            elif ch in ENDS:
                if n:
                    out.append([n, ch])
                n = 0
            elif ch != "\u3000":
                return None  # 和声 words (竹枝, 女儿), 叠/重 marks: not a pattern of characters alone
        if n:
            out.append([n, "句"])
            n = 0
    return out if p == len(tones) else None


def rhyme_tone(tones: str, positions: list[int], key: int) -> str:
    """平 or 仄: the tone the pattern gives most of a rhyme group's own positions (叶 ones aside); where it
    gives 中 alone, the group's key says (negative keys are the 仄 groups in the couyun data)."""
    own = [tones[p] for p in positions if p >= 0 and tones[p] in "平仄"]
    if own:
        return max("平仄", key=own.count)
    return "仄" if key < 0 else "平"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=Path("../shared/data/couyun/ci_pu"))
    ap.add_argument("--out", type=Path, default=Path("src/tangshi/cipu.json"))
    args = ap.parse_args()
    index = json.loads((args.source / "ci_index.json").read_text("utf-8"))
    licence = (args.source.parent / "LICENSE").read_text("utf-8").strip()
    cipai, kept, dropped = [], 0, 0
    for entry in index:
        formats = []
        for source, path in (("钦定词谱", f"ci_list/cipai_{entry['idx']}.json"),
                             ("龙榆生", f"ci_long/cipai_{entry['idx']}_long.json")):  # fmt: skip
            p = args.source / path
            if not p.exists():
                continue
            for f in json.loads(p.read_text("utf-8")):
                rhymes = {abs(q) for v in f["yun_classify"].values() for q in v}
                cl = clauses(f["ge_lyu_sep"], f["ge_lyu_str"], rhymes)
                if cl is None:
                    dropped += 1
                    continue
                groups = [
                    {"tone": rhyme_tone(f["ge_lyu_str"], v, int(k)), "at": sorted(v, key=abs)}
                    for k, v in sorted(f["yun_classify"].items(), key=lambda kv: int(kv[0]))
                ]
                formats.append({"source": source, "tones": f["ge_lyu_str"], "clauses": cl, "rhymes": groups})
                kept += 1
        if formats:
            kind, chars, _ = entry["type"]
            cipai.append({"names": entry["names"], "type": kind, "chars": chars, "formats": formats})
    data = {"source": "couyun 词谱 (钦定词谱 and 龙榆生《唐宋词格律》), MIT licence:\n" + licence, "cipai": cipai}
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, separators=(",", ":"))
    os.replace(tmp, args.out)
    print(f"{len(cipai)} 词牌, {kept} formats kept, {dropped} left out -> {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
