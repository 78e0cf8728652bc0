"""Validating plain data against a schema type (a dataclass or TypedDict) with pydantic, and a pydantic error as one
line naming the key path, the bad value and what is allowed."""
import functools
import typing
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .errors import did_you_mean


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
