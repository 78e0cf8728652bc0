"""Method registry: `@register_method` fills it, `build_model` and `list_models` read it."""
import inspect
from typing import Callable, Dict, List, Optional, Tuple

_METHODS: Dict[str, Tuple[type, dict, str]] = {}


def register_method(name: str, display: Optional[str] = None, **defaults) -> Callable[[type], type]:
    """Register an Interaction class under `name`, with option defaults for this name."""

    def wrap(cls: type) -> type:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        _METHODS[name] = (cls, dict(defaults), display or name)
        return cls

    return wrap


def _load_methods() -> None:
    # Importing the package runs every method file's @register_method.
    from . import interaction  # noqa: F401


def list_models() -> List[str]:
    """Names of all registered layer-interaction methods."""
    _load_methods()
    return sorted(_METHODS)


def display_name(method: str) -> str:
    """The method's name as printed in the papers' tables (e.g. "DLA-L")."""
    return method_entry(method)[2]


def method_entry(method: str) -> Tuple[type, dict, str]:
    _load_methods()
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(sorted(_METHODS))}")
    return _METHODS[method]


def method_options(method: str, backbone: str) -> dict:
    """All options the method accepts, with their defaults for this backbone."""
    cls, defaults, _ = method_entry(method)
    opts = {}
    for klass in reversed(cls.__mro__):  # base-class options first, subclasses may override
        if "__init__" in vars(klass):
            for n, p in inspect.signature(klass.__init__).parameters.items():
                if p.kind is inspect.Parameter.KEYWORD_ONLY:
                    opts[n] = p.default
    opts.update(cls.default_options(backbone))
    opts.update(defaults)
    return opts
