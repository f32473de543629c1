"""The bodies the API takes and returns: POST /v1/poems's request, made from every writing option
(`tangshi.options.SPECS`) within this server's limits, its response, and the bodies of POST /v1/check
and POST /v1/lines. Every request body is strict: no unknown field, no true for 1, no "5" for 5."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from tangshi.config import ServeConfig
from tangshi.options import MAX_SEED, MAX_TEMPLATE, SPECS, TONES, Spec
from tangshi.prosody.regular import FORMS_IN_WORDS
from tangshi.serve.errors import lone_surrogate

MAX_MODEL_NAME = 64


def _limits(spec: Spec, s: ServeConfig) -> dict[str, Any]:
    """An option's bounds for this server: its own, tightened by the server's limits where it has one."""
    upper = {"num": s.max_num, "max_length": s.max_length, "beam": s.max_beam, "rerank": s.max_rerank}
    upper["budget"] = s.max_budget
    le = spec.le
    if spec.name in upper:
        le = upper[spec.name] if le is None else min(le, upper[spec.name])
    chars = spec.max_length
    if spec.name == "acrostic":
        chars = min(chars, s.max_begin)
    limits = {"ge": spec.ge, "gt": spec.gt, "le": int(le) if spec.kind is int and le is not None else le}
    limits["max_length"] = chars
    if spec.kind is float:
        limits["allow_inf_nan"] = False
    return {k: v for k, v in limits.items() if v is not None}


def _field(spec: Spec, s: ServeConfig) -> tuple[Any, Any]:
    """A pydantic field for one option: its type, default, bounds and help."""
    if spec.kind is tuple:  # a list of short strings in JSON
        item = Annotated[str, Field(min_length=1, max_length=spec.max_length)]
        return Annotated[list[item], Field(description=spec.help, max_length=spec.items)], list(spec.default)
    kind: Any = Literal[spec.choices] if spec.choices else spec.kind  # type: ignore[valid-type]
    if spec.nullable:
        kind = kind | None
    return Annotated[kind, Field(description=spec.help, **_limits(spec, s))], spec.default


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no true -> 1, no "5" -> 5

    @model_validator(mode="before")
    @classmethod
    def _no_lone_surrogates(cls, data: Any) -> Any:
        """A lone surrogate ("\\ud800") in any value or key is not a character: 422 naming where."""
        if (place := lone_surrogate(data)) is not None:
            raise ValueError(f"{place}: a lone surrogate (U+D800-U+DFFF) is not a character")
        return data


def request_model(settings: ServeConfig) -> type[BaseModel]:
    """The body of POST /v1/poems: the begin, the model, and every writing option within this server's limits."""
    fields: dict[str, Any] = {
        "model": (
            Annotated[str | None, Field(max_length=MAX_MODEL_NAME, description="a loaded checkpoint (GET /v1/models)")],
            None,
        ),
        "begin": (
            Annotated[str, Field(max_length=settings.max_begin, description="begin character or phrase (empty: any)")],
            "",
        ),
    }
    for spec in SPECS:
        fields[spec.name] = _field(spec, settings)
    return create_model("PoemRequest", __base__=_Base, **fields)


class PoemOut(BaseModel):
    text: str
    lines: list[str]
    begin: str
    seed: int
    ended: bool = Field(description="false when the poem was cut at max_length before its end")
    nll: float = Field(description="mean negative log-likelihood per token under the model (nats)")
    log_likelihood: float = Field(description="total log-likelihood of the poem's tokens under the model (nats)")
    acrostic: str = ""
    title: str = Field("", description="the title it was written for")
    author: str = Field("", description="the poet whose manner was asked")
    copied: list[str] = Field(default_factory=list, description="lines found verbatim in the training corpus")
    failure: str | None = Field(None, description="where a form rule could not be met, if anywhere")
    plan: list[dict[str, Any]] | None = Field(None, description="each line's keyword (--keywords, --theme)")
    prosody: dict[str, Any] = Field(description="form, rhyme group, each line's tones, template and scores")


class PoemsOut(BaseModel):
    model: str
    poems: list[PoemOut]
    notes: list[str]


class CheckIn(_Base):
    """The body of POST /v1/check."""

    model: Annotated[str | None, Field(max_length=MAX_MODEL_NAME, description="a loaded checkpoint")] = None
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEMPLATE, description="the poem to read")]
    suggest: Annotated[int, Field(ge=0, le=20, description="characters suggested a broken place")] = 5


class LinesIn(_Base):
    """The body of POST /v1/lines."""

    model: Annotated[str | None, Field(max_length=MAX_MODEL_NAME, description="a loaded checkpoint")] = None
    poem: Annotated[str, Field(min_length=1, max_length=MAX_TEMPLATE, description=f"a {FORMS_IN_WORDS}")]
    line: Annotated[int, Field(ge=1, le=8, description="the line to rewrite, from 1")]
    num: Annotated[int, Field(ge=1, le=32, description="alternatives")] = 8
    seed: Annotated[int | None, Field(ge=0, le=MAX_SEED, description="the same seed, the same alternatives")] = None
    tones: Literal[TONES] = "relaxed"  # type: ignore[valid-type]
