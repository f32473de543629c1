"""Twenty-four poems with the default options: titles, keywords, themes and poets in the four forms, begin
characters, and 词 by 词牌, each with its rule check.

    python scripts/showcase.py [CHECKPOINT]     # default: the bundled model
"""

import sys

from tangshi import Poet

poet = Poet.load(sys.argv[1] if len(sys.argv) > 1 else None)
asks = [
    dict(title="送友人", form="五律"),
    dict(title="春夜喜雨", form="五律"),
    dict(title="登高", form="七律"),
    dict(title="秋思", form="七绝"),
    dict(title="江南春", form="七绝"),
    dict(title="月下独酌", form="五绝"),
    dict(keywords=("明月", "故乡"), form="五绝"),
    dict(keywords=("秋风", "落叶", "孤雁"), form="七律"),
    dict(keywords=("桃花", "流水"), form="七绝"),
    dict(keywords=("长安", "故人"), title="寄友", form="五律"),
    dict(theme="思念故乡", form="七绝"),
    dict(theme="边塞征战", form="七律"),
    dict(theme="送别友人", form="五绝"),
    dict(theme="山中隐居", form="五律"),
    dict(author="李白", title="将进酒", form="七律"),
    dict(author="杜甫", title="春望", form="五律"),
    dict(author="白居易", form="七绝"),
    dict(author="李商隐", title="无题", form="七律"),
    dict(author="刘禹锡", keywords=("夕阳",), form="七绝"),
    dict(author="韦应物", theme="秋夜", form="五绝"),
    dict(begin="月", form="五绝"),
    dict(begin="山", form="七律"),
    dict(cipai="浣溪沙"),
    dict(cipai="鹧鸪天", title="春游"),
]
for i, ask in enumerate(asks):
    try:
        p = poet.write(ask.get("begin", ""), seed=100 + i, **{k: v for k, v in ask.items() if k != "begin"})[0]
    except ValueError as e:  # an option the model cannot meet: say so and go on
        print(f"- {ask}: {e}")
        continue
    shape = ask.get("form") or ask["cipai"]
    what = ", ".join(
        f"{k} {'/'.join(v) if isinstance(v, tuple) else v}" for k, v in ask.items() if k not in ("form", "cipai")
    )
    plan = " ".join(e["word"] for e in p.plan) if p.plan else ""
    r = p.prosody
    rules = f"{r['form']}, rhyme {'yes' if r['rhyme'] else 'no'}, relaxed {r['relaxed']:.2f}" if "form" in ask else ""
    rules = rules or f"{r['cipai']}, rhyme {r['rhyme']:.2f}, tones {r['tones']:.2f}"
    print(f"- [{shape}]{' ' + what if what else ''}{' — plan: ' + plan if plan else ''}: {p.text} ({rules})")
