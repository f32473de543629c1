"""Fixed-seed poems of every kind of request, as JSON lines: to compare the writing before and after a change.

    python scripts/golden.py > before.jsonl   # ... change the code ...
    python scripts/golden.py > after.jsonl && diff before.jsonl after.jsonl

Each line: the request (begins and options), then each poem's text, nll and failure. The poems depend
on the CPU's kind of writing steps (qint8, int8, bfloat16 or float32): compare on one machine.
"""

from __future__ import annotations

import json
import sys

from tangshi.api import Poet
from tangshi.options import OptionError

REQUESTS: list[tuple[list[str], dict]] = [
    (["月"], {}),
    (["春风", "秋"], {"num": 2}),
    (["月"], {"form": "五绝"}),
    (["山"], {"form": "七绝"}),
    (["山"], {"form": "五律", "rhyme": "阳", "tones": "strict"}),
    (["月"], {"form": "七律"}),
    (["月"], {"form": "七律", "beam": 10}),
    (["月"], {"beam": 4, "num": 2}),
    ([""], {"acrostic": "春夏秋冬", "form": "五绝", "num": 2}),
    ([""], {"acrostic": "春夏秋冬"}),
    ([""], {"keywords": ("明月", "故乡"), "form": "七绝"}),
    ([""], {"theme": "送别友人", "form": "五律"}),
    ([""], {"title": "送友人", "form": "五律"}),
    ([""], {"title": "送友人", "form": "五律", "beam": 4}),
    ([""], {"title": "送友人", "form": "五律", "plan": True}),
    ([""], {"title": "春晓"}),
    ([""], {"author": "李白", "form": "七绝"}),
    (["春"], {"cipai": "浣溪沙"}),
    ([""], {"cipai": "念奴娇", "format": 2, "acrostic": "大江"}),
    (["梅"], {"form": "七绝", "genre": "宋诗"}),
    ([""], {"template": "春眠不觉晓，＿＿＿＿＿。夜来风雨声，＿＿＿＿＿。"}),
    ([""], {"template": "＿＿＿＿＿，＿＿＿＿＿。＿＿明月＿，＿＿＿＿＿。"}),
    (["月"], {"greedy": True, "random_state": True, "ignore_end": True, "max_length": 50}),
    (["月"], {"rerank": 4, "relevance_weight": 1.0, "coherence_weight": 1.0, "title": "月夜"}),
    (["日"], {"temperature": 0.7, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.5}),
    (["花"], {"prefix": "春眠不觉晓", "form": "五绝", "diversity": 0.3, "cohesion": 1.0}),
    (["夜"], {"form": "五绝", "guidance": 3.0, "title": "夜雨"}),
]


def main() -> None:
    poet = Poet.load()
    for seed in (1, 2):
        for begins, options in REQUESTS:
            try:
                written = poet.write(begins, seed=seed, **options)
                poems: object = [{"text": p.text, "nll": p.nll, "failure": p.failure} for p in written]
            except OptionError as e:  # a refusal is behaviour too
                poems = {"refused": str(e), "field": e.field}
            request = {"begins": begins, **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}}
            print(json.dumps({"seed": seed, "request": request, "poems": poems}, ensure_ascii=False))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
