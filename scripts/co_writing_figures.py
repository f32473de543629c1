"""The figures of docs/co-writing.md: a template's poems and refusals, line alternatives and their time,
how often whole-poem and prefix-only ranking differ over 100 test poems, and checks of 6 poems.
`python scripts/co_writing_figures.py` (the bundled model; ../shared/data for the test poems)."""

import random
import time

from tangshi import Poet
from tangshi.data.corpus import load_corpus
from tangshi.evaluation import readers as R
from tangshi.prosody import regular as prosody

TEMPLATE = "床前明月光，＿＿＿＿＿。＿＿＿＿＿，低头＿＿＿。"
REFUSED = [
    ("床前明月光，＿＿＿＿天。＿＿＿＿＿，＿＿＿＿霜。", {}),
    ("＿＿明月光，＿＿＿＿＿。＿＿＿＿＿，低头＿＿＿。", {"tones": "strict"}),
    ("床前明月光，＿＿＿＿＿。＿＿＿＿＿，低头＿＿。", {}),
    (TEMPLATE, {"form": "七绝"}),
]
CLIMB = (
    "风急天高猿啸哀，渚清沙白鸟飞回。无边落木萧萧下，不尽长江滚滚来。"
    "万里悲秋常作客，百年多病独登台。艰难苦恨繁霜鬓，潦倒新停浊酒杯。"
)
FAMOUS = [
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
    "国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。",
    "朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。",
]
WRONG = [  # 流 -> 去; 山 -> 水 (and 住 -> 尽); 心 -> 魂 (and 抵 -> 值)
    "白日依山尽，黄河入海去。欲穷千里目，更上一层楼。",
    "朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不尽，轻舟已过万重水。",
    "国破山河在，城春草木深。感时花溅泪，恨别鸟惊魂。烽火连三月，家书值万金。白头搔更短，浑欲不胜簪。",
]


def main() -> None:
    poet = Poet.load()
    print("## template", TEMPLATE)
    for seed in range(1, 6):
        p = poet.write("", template=TEMPLATE, seed=seed)[0]
        r = prosody.check(p.text)
        print(f"- seed {seed}: {p.text} ({r.form}, rhyme {r.rhyme_group}, relaxed {r.relaxed:.2f})")
    for t, kw in REFUSED:
        try:
            poet.write("", template=t, **kw)
        except ValueError as e:
            print(f"- refused `{t}` {kw}: {e}")

    print("## alternatives, line 3 of a 七律, K=8")
    poet.lines(CLIMB, 3, num=8, seed=0)  # warm up
    times = []
    for s in range(1, 8):
        t0 = time.perf_counter()
        poet.lines(CLIMB, 3, num=8, seed=s)
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"time: median {times[3] * 1000:.0f} ms, min {times[0] * 1000:.0f} ms (7 calls)")
    for a in poet.lines(CLIMB, 3, num=8, seed=1):
        whole, prefix = a["log_likelihood"], a["prefix_log_likelihood"]
        print(f"- {a['line']}: whole {whole:.2f}, prefix {prefix:.2f} (prefix rank {a['prefix_rank']})")
    corpus = load_corpus(["../shared/data/chinese-poetry/quantangshi"], poet.ckpt.config.data)
    regular = [t for t in corpus.texts_of("test") if R.form_of(t) != "other"]
    kept = [t for t in regular if prosody.check(t).relaxed_ok and prosody.check(t).rhyme]
    random.Random(1).shuffle(kept)
    differ = n = top3 = 0
    for i, t in enumerate(kept):
        if n == 100:
            break
        try:
            alts = poet.lines(t, 3, num=8, seed=i)
        except ValueError:
            continue
        n += 1
        differ += alts[0]["prefix_rank"] != 1
        top3 += sum(a["prefix_rank"] <= 3 for a in alts[:3]) < 3
    print(
        f"whole-poem vs prefix-only ranking over {n} test poems (line 3, K=8): the best differs in {differ} "
        f"({100 * differ / n:.0f} %), the top 3 differ as a set in {top3} ({100 * top3 / n:.0f} %)"
    )

    print("## /v1/check (Poet.check)")
    for t in FAMOUS + WRONG:
        checked = poet.check(t, suggest=3)
        r = checked["report"]
        print(f"- {t}: {r['form']}, rhyme {r['rhyme_group'] or 'none'}, relaxed {r['relaxed']:.2f}")
        for p in checked["problems"]:
            better = "、".join(s["char"] for s in p.get("suggestions", []))
            print(f"  - [{p['rule']}] {p['message']}" + (f" — try {better}" if better else ""))


if __name__ == "__main__":
    main()
