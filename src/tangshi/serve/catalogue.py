"""What the server offers, read without the writer: GET /health, GET /v1/models (the loaded
checkpoints with their model cards) and GET /v1/cipai (the 词牌 of the 词谱, for --cipai); HEAD
answers each like GET, without the body."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tangshi.api import Poet
from tangshi.prosody.cipai import CiError, find, search, to_dicts
from tangshi.serve.state import Shared

router = APIRouter()


@router.head("/health", include_in_schema=False)
@router.get("/health")
async def health(served: Shared) -> dict[str, Any]:
    return {"status": "ok", "models": list(served.poets)}


@router.head("/v1/models", include_in_schema=False)
@router.get("/v1/models")
async def models(served: Shared) -> dict[str, Any]:
    return {"models": [_card(name, poet) for name, poet in served.poets.items()]}


def _card(name: str, poet: Poet) -> dict[str, Any]:
    """One loaded checkpoint: its shape, what it can be asked for, and its model card (no file paths)."""
    cfg = poet.ckpt.config
    return {
        "name": name,
        "cell": cfg.model.cell,
        "layers": cfg.model.num_layers,
        "hidden_size": cfg.model.hidden_size,
        "vocabulary": len(poet.vocab),
        "script": cfg.data.script,
        "line_index": poet.ckpt.lines is not None,
        "authors": poet.vocab.authors(),
        "genres": poet.vocab.genres(),
        "word_statistics": poet.words is not None,
        "card": poet.ckpt.card,
    }


@router.head("/v1/cipai", include_in_schema=False)
@router.get("/v1/cipai")
async def cipai(q: Annotated[str, Query(max_length=16, description="a name or alias, part of one, or a count")] = ""):
    """The 词牌 for --cipai: those whose name or an alias holds `q` (all for none), each with its
    formats (character count, clauses, rhymes); an exact name also gets each format's pattern."""
    try:
        exact = find(q) if q and not q.isdigit() else None
    except CiError:
        exact = None
    found = [exact] if exact is not None else search(q)
    return {"cipai": to_dicts(found, patterns=exact is not None)}
