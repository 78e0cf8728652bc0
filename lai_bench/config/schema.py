"""Validating plain data against a schema type (a dataclass or TypedDict) with pydantic, and a pydantic error as one
line naming the key path, the bad value and what is allowed; the types whose errors say what they allow."""
import functools
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, Strict, TypeAdapter, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

from ..core.errors import did_you_mean


@functools.cache
def adapter(schema: Any) -> TypeAdapter:
    """The pydantic validator of a schema type (a dataclass or TypedDict), built once."""
    return TypeAdapter(schema)


def schema_error(error: ValidationError, schema: Any, prefix: str = "") -> str:
    """A pydantic error as one line: the key path, the bad value and what is allowed (unknown keys: did you mean)."""
    e = error.errors()[0]
    loc = (prefix, *e["loc"]) if prefix else e["loc"]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "the config"
    if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _keys(schema, e["loc"][:-1])
        return f"unknown key {path!r}{did_you_mean(e['loc'][-1], allowed)}; allowed: {', '.join(allowed)}"
    if e["type"] == "not_allowed":
        return f"{path} {e['msg']}, got {e['input']!r}"
    return f"{path}: {e['msg'][:1].lower()}{e['msg'][1:]}, got {e['input']!r}"


def _keys(schema: Any, loc: tuple) -> list[str]:
    """The keys of the dataclass or TypedDict found at `loc` inside `schema`."""
    for part in loc:
        schema = _plain(typing.get_type_hints(schema)[part])
    return list(typing.get_type_hints(schema))


def _plain(hint: Any) -> Any:
    """`X | None` -> X."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else hint


# -- schema types: each says what it allows, and its errors quote that ----------------------------------------
def _allowing(text: str | Callable[[], str]) -> WrapValidator:
    """Any failure of the type it wraps becomes one error saying what is allowed."""

    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:
            allowed = text() if callable(text) else text
            raise PydanticCustomError("not_allowed", "must be {allowed}", {"allowed": allowed}) from None

    check.allowed = text  # what `describe` reads
    return WrapValidator(check)


def describe(hint: Any) -> str:
    """What a schema type allows, in words ("an integer >= 1", "one of a, b"); `X | None` adds "or null"."""
    plain = _plain(hint)
    for meta in typing.get_args(plain)[1:] if typing.get_origin(plain) is Annotated else ():
        allowed = getattr(getattr(meta, "func", None), "allowed", None)
        if allowed is not None:
            text = allowed() if callable(allowed) else allowed
            return text + (" or null" if plain is not hint else "")
    return getattr(plain, "__name__", str(plain))


def kind(base: Any, text: str | Callable[[], str], *constraints: Any) -> Any:
    """`base` under `constraints`, described in its errors by `text` (e.g. "an integer >= 1")."""
    return Annotated[base, *constraints, _allowing(text)]


def one_of(values: Iterable[str]) -> Any:
    """Exactly one of `values` (text)."""
    values = tuple(values)
    return kind(Literal[values], "one of " + ", ".join(values))


def _number_text(value: Any, handler: Callable[[Any], Any]) -> Any:
    """Text such as "1e-3" (YAML 1.1 reads it as text) is that number; an int stays an int, as run ids hash it."""
    number = float(value) if isinstance(value, str) else value
    checked = handler(number)
    return number if type(number) is int else checked


def real(text: str, **bounds: float) -> Any:
    """A finite number within `bounds` (gt, ge, lt, le); not a bool."""
    return kind(float, text, Strict(), Field(allow_inf_nan=False, **bounds), WrapValidator(_number_text))


def registered(names: Callable[[], list[str]]) -> Any:
    """A name of a registry's entry (methods, backbones, tasks), looked up when a config is validated: plug-ins may
    have registered more since import."""

    def check(value: str) -> str:
        if value not in names():
            raise ValueError(value)
        return value

    return kind(str, lambda: "one of " + ", ".join(names()), Strict(), AfterValidator(check))
