import ast
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import POEMS
from tangshi.evaluation.losses import corpus_loss, text_loss
from tangshi.model import checkpoint

SRC = Path(__file__).resolve().parents[1] / "src" / "tangshi"


def test_text_loss_is_the_mean_over_characters_and_end_token(tiny_run):
    ck = checkpoint.load(tiny_run / "best")
    text = POEMS[0][1]
    ids = torch.tensor([[2, *ck.vocab.encode(text)]])
    targets = torch.tensor([*ck.vocab.encode(text), 3])
    logits, _ = ck.model(ids)
    expected = F.cross_entropy(logits[0], targets).item()
    report = text_loss(ck, [text])
    assert report["tokens"] == len(text) + 1 and report["poems"] == 1
    assert abs(report["loss"] - expected) < 1e-4
    assert abs(report["perplexity"] - math.exp(report["loss"])) < 1e-2


def test_corpus_loss_in_any_format(tiny_run, poems_txt, json_dir):
    ck = checkpoint.load(tiny_run / "best")
    a = corpus_loss(ck, [poems_txt])
    b = corpus_loss(ck, [json_dir])
    assert a["poems"] == b["poems"] == len(POEMS)
    assert abs(a["loss"] - b["loss"]) < 1e-4
    assert a["tokens"] == sum(len(c) + 1 for _, c in POEMS)


def _imports(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside functions."""
    tree = ast.parse(path.read_text("utf-8"))
    return {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if not (isinstance(node, ast.ImportFrom) and node.module is None)
    }


def test_evaluate_imports_nothing_of_training():
    assert not _imports(SRC / "evaluation" / "losses.py") & {"tangshi.training.train", "tangshi.training.distributed"}
    for path in SRC.rglob("*.py"):  # the loss is evaluation's: nobody takes it from train
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "tangshi.training.train":
                names = {a.name for a in node.names}
                assert not names & {"mean_loss", "batch_loss", "collate"}, f"{path.name} imports {names} from train"


@pytest.mark.slow
def test_loading_a_poet_imports_neither_train_nor_distributed():
    code = (
        "import sys\n"
        "from tangshi import Poet\n"
        "import tangshi.evaluation.losses, tangshi.api\n"
        "print(sorted(m for m in ('tangshi.training.train', 'tangshi.training.distributed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_mean_loss_is_the_one_training_validates_with():
    from tangshi.evaluation import losses
    from tangshi.training import train

    assert train.mean_loss is losses.mean_loss and train.collate is losses.collate
