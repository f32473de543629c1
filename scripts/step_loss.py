"""Test loss of the bundled model read through its writing steps (`CharRNN.step`), as tangshi writes.

    python scripts/step_loss.py [fast|float]

"fast": the steps as this CPU takes them (uint8 by int8, bfloat16 or int8, `model.kernels.step_weights`);
"float": float32 steps. The Tang test split, 256 poems a batch, one step a position; nats per token, end
token included.
"""

import sys
import time

import torch

from tangshi import Poet
from tangshi.data.corpus import load_corpus
from tangshi.data.vocab import BOS, EOS

torch.set_num_threads(2)
mode = sys.argv[1] if len(sys.argv) > 1 else "fast"
if mode == "float":
    import tangshi.model.kernels

    tangshi.model.kernels.step_weights = lambda device: "float32"
poet = Poet.load()
c = load_corpus(["../shared/data/chinese-poetry/quantangshi"], poet.ckpt.config.data)
texts = c.texts_of("test")
tot, n = 0.0, 0
t0 = time.time()
with torch.inference_mode():
    for start in range(0, len(texts), 256):
        seqs = [[BOS, *poet.vocab.encode(t), EOS] for t in texts[start : start + 256]]
        L = max(map(len, seqs))
        x = torch.zeros(len(seqs), L, dtype=torch.long)
        for i, s in enumerate(seqs):
            x[i, : len(s)] = torch.tensor(s)
        lens = torch.tensor([len(s) for s in seqs])
        state = None
        for t in range(L - 1):
            lp, state = poet.model.step(x[:, t], state)
            lp = torch.log_softmax(lp.float(), -1)
            m = (t + 1) < lens
            tot -= lp[m].gather(1, x[m, t + 1][:, None]).sum().item()
            n += int(m.sum())
print(
    f"{mode}: step-by-step test loss {tot / n:.4f} over {n} tokens ({len(texts)} poems), {time.time() - t0:.0f}s",
    flush=True,
)
