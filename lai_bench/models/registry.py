"""Method registry: `@register_method` fills it with each method's class, option defaults and display metadata
(name as printed in the papers' tables, table order, plot colour); `build_model`, `list_models` and the report
read it, so adding a method touches its own file and one import."""
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MethodInfo:
    cls: type
    defaults: dict = field(default_factory=dict)
    display: str = ""  # e.g. "DLA-L"
    order: float = float("inf")  # position in the papers' tables; unordered methods go last, by name
    color: str | None = None  # matplotlib colour of its points and bars


_METHODS: dict[str, MethodInfo] = {}


def register_method(name: str, display: str | None = None, *, order: float = float("inf"),
                    color: str | None = None, **defaults) -> Callable[[type], type]:
    """Register an Interaction class under `name`, with option defaults for this name and its display metadata."""

    def wrap(cls: type) -> type:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        _METHODS[name] = MethodInfo(cls, dict(defaults), display or name, order, color)
        return cls

    return wrap


def _load_methods() -> None:
    # Importing the package runs every method file's @register_method.
    from . import interaction  # noqa: F401


def list_models() -> list[str]:
    """Names of all registered layer-interaction methods."""
    _load_methods()
    return sorted(_METHODS)


def method_info(method: str) -> MethodInfo:
    """The registered entry; ValueError naming the allowed methods."""
    _load_methods()
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(sorted(_METHODS))}")
    return _METHODS[method]


def display_name(method: str) -> str:
    """The method's name as printed in the papers' tables (e.g. "DLA-L")."""
    return method_info(method).display


def method_options(method: str, backbone: str) -> dict:
    """All options the method accepts, with their defaults for this backbone."""
    info = method_info(method)
    opts = {}
    for klass in reversed(info.cls.__mro__):  # base-class options first, subclasses may override
        if "__init__" in vars(klass):
            for n, p in inspect.signature(klass.__init__).parameters.items():
                if p.kind is inspect.Parameter.KEYWORD_ONLY:
                    opts[n] = p.default
    opts.update(info.cls.default_options(backbone))
    opts.update(info.defaults)
    return opts


def resolved_options(method: str, backbone: str, options: dict) -> dict:
    """Every option of the method as a model built with ``options`` has it: defaults filled in, and options whose
    unset value means something that depends on the others resolved (DLA's ``forward_path``)."""
    return method_info(method).cls.resolve_options({**method_options(method, backbone), **options})


def implied_options(method: str, backbone: str, options: dict) -> set[str]:
    """Options whose value is what leaving them unset resolves to (DLA's ``forward_path=True`` beside a cell): a
    label need not say them. Only options whose default is "unset" (None) can be implied."""
    defaults = method_options(method, backbone)
    unset = [name for name in options if name in defaults and defaults[name] is None]
    return {name for name in unset
            if resolved_options(method, backbone, {**options, name: None}).get(name) == options[name]}


def canonical_method(method: str, options: dict) -> tuple[str, dict]:
    """The registered name that ``method`` with ``options`` amounts to, and the options left to say.

    ``dla_l`` with ``attention=base`` is DLA-B: ``("dla_b", {})``. A name is swapped only for one of the same class
    whose defaults the options set exactly; everything else is returned as given.
    """
    info = method_info(method)
    for name in list_models():
        other = _METHODS[name]
        if name == method or other.cls is not info.cls:
            continue
        differ = {k for k in {*info.defaults, *other.defaults} if info.defaults.get(k) != other.defaults.get(k)}
        if differ and all(k in options and options[k] == other.defaults.get(k) for k in differ):
            return name, {k: v for k, v in options.items() if k not in differ}
    return method, dict(options)
