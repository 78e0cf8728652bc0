"""The method registry as the suite reads it: every name's entry (interaction/registry.py, re-exported) and a
method's options on a backbone, which need the backbone registry too. The backbones import the methods, so what
reads both registries sits here, above them."""
import inspect

from .backbones.registry import backbone_info
from .interaction.registry import (
    METHODS,
    MethodInfo,
    canonical_method,
    display_name,
    list_models,
    method_info,
    register_method,
)

__all__ = ["METHODS", "MethodInfo", "canonical_method", "display_name", "implied_options", "list_models",
           "method_info", "method_options", "register_method", "resolved_options"]


def method_options(method: str, backbone: str) -> dict:
    """All options the method accepts, with their defaults for this backbone."""
    info = method_info(method)
    opts = {}
    for klass in reversed(info.cls.__mro__):  # base-class options first, subclasses may override
        if "__init__" in vars(klass):
            for n, p in inspect.signature(klass.__init__).parameters.items():
                if p.kind is inspect.Parameter.KEYWORD_ONLY:
                    opts[n] = p.default
    opts.update(info.cls.default_options(_layout(backbone)))
    opts.update(_backbone_defaults(backbone, method))
    opts.update(info.defaults)
    return opts


def _backbone_defaults(backbone: str, method: str) -> dict:
    try:
        return dict(backbone_info(backbone).method_defaults.get(method, {}))
    except ValueError:
        return {}


def _layout(backbone: str) -> str | None:
    """The backbone's layout name; None for an unknown backbone, which is reported where it is validated."""
    try:
        return backbone_info(backbone).layout.name
    except ValueError:
        return None


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
