"""Method registry: `@register_method` fills it with each method's class, option defaults and display metadata
(name as printed in the papers' tables, table order, plot colour); `build_model`, `list_models` and the report
read it, so adding a method touches its own file and one import.

It imports none of the methods: the `interaction` package `__init__` imports every method file. It sits beside the
methods, as the backbone registry beside the backbones, and imports nothing of the suite but the generic Registry:
a method's file can import it while the backbones (which import the methods) are still loading."""
from collections.abc import Callable
from dataclasses import dataclass, field

from ...core.registry import Registry


@dataclass(frozen=True)
class MethodInfo:
    cls: type
    defaults: dict = field(default_factory=dict)
    display: str = ""  # e.g. "DLA-L"
    order: float = float("inf")  # position in the papers' tables; unordered methods go last, by name
    color: str | None = None  # matplotlib colour of its points and bars


def _method_info(name: str, cls: type, /, display: str | None = None, order: float = float("inf"),
                 color: str | None = None, **defaults) -> MethodInfo:
    # Name and class positional-only: a method option may be called anything.
    return MethodInfo(cls, dict(defaults), display or name, order, color)


METHODS: Registry[MethodInfo] = Registry("method", make=_method_info)


def register_method(name: str, display: str | None = None, *, order: float = float("inf"),
                    color: str | None = None, **defaults) -> Callable[[type], type]:
    """Register an Interaction class under `name`, with option defaults for this name and its display metadata."""
    return METHODS.register(name, display=display, order=order, color=color, **defaults)


def list_models() -> list[str]:
    """Names of all registered layer-interaction methods."""
    return METHODS.list()


def method_info(method: str) -> MethodInfo:
    """The registered entry; ValueError in one line naming the nearest and the allowed methods."""
    return METHODS.get(method)


def display_name(method: str) -> str:
    """The method's name as printed in the papers' tables (e.g. "DLA-L")."""
    return method_info(method).display


def canonical_method(method: str, options: dict) -> tuple[str, dict]:
    """The registered name that ``method`` with ``options`` amounts to, and the options left to say.

    ``dla_l`` with ``attention=base`` is DLA-B: ``("dla_b", {})``. A name is swapped only for one of the same class
    whose defaults the options set exactly; everything else is returned as given.
    """
    info = method_info(method)
    for name, other in METHODS.info().items():
        if name == method or other.cls is not info.cls:
            continue
        differ = {k for k in {*info.defaults, *other.defaults} if info.defaults.get(k) != other.defaults.get(k)}
        if differ and all(k in options and options[k] == other.defaults.get(k) for k in differ):
            return name, {k: v for k, v in options.items() if k not in differ}
    return method, dict(options)
