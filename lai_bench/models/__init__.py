"""lai_bench models: registered backbones, every layer-interaction method behind one interface.

Importing this package imports every backbone and method file (each package's `__init__` imports its members), so
whoever imports anything under `lai_bench.models` finds both registries full; the registries import none of them."""
from functools import partial

from torch import nn

from . import backbones, interaction  # noqa: F401  (registers every backbone and method)
from .backbones import Backbone, backbone_info, list_backbones, register_backbone
from .pretrained import PretrainedError, load_pretrained
from .registry import display_name, list_models, method_info, method_options, register_method

__all__ = ["Backbone", "PretrainedError", "backbone_info", "build_model", "check_layout", "default_backbone",
           "display_name",
           "list_backbones", "list_models", "load_pretrained", "method_info", "method_options", "model_options",
           "register_backbone", "register_method"]


def default_backbone() -> str:
    """The backbone of a run (or a record) that names none: the one registered with `default = True`."""
    defaults = [name for name in list_backbones() if backbone_info(name).default]
    if len(defaults) != 1:
        raise ValueError(f"{len(defaults)} backbones are registered as the default (allowed: exactly one); "
                         f"backbones: {', '.join(list_backbones())}")
    return defaults[0]


def model_options(method: str, backbone: str) -> dict:
    """Every option a run's `model_opts` may set: the method's (with defaults) and the backbone's (e.g. `stem`)."""
    return {**method_options(method, backbone), **backbone_info(backbone).option_defaults()}


def methods_on(backbone: str) -> list[str]:
    """The registered methods that work on the backbone's layout."""
    layout = backbone_info(backbone).layout.name
    return [m for m in list_models() if layout in method_info(m).cls.layouts]


def check_layout(method: str, backbone: str) -> None:
    """ValueError in one line when the method cannot work on the backbone's layout, naming those that can."""
    layout = backbone_info(backbone).layout.name
    if layout not in method_info(method).cls.layouts:
        raise ValueError(f"method {method!r} does not work on backbone {backbone!r} ({layout} layout: it supports "
                         f"{', '.join(method_info(method).cls.layouts)}); methods that do: "
                         f"{', '.join(methods_on(backbone))}")


def build_model(method: str, backbone: str | None = None, depth: int | None = None, num_classes: int = 100,
                block: str | None = None, *, zero_init_residual: bool = False, reference: bool = False,
                **opts) -> nn.Module:
    """The `backbone` network of `depth` (None: the backbone's `default_depth`) with `method` as its layer interaction.

    `opts` are the method's options (see `method_options(method, backbone)`), e.g. `drop_path`, `reduction`, and
    for DLA `cell`, `forward_path`, `backward_path`, `attention`, and the backbone's options (the ResNets' `stem`:
    "deep", ImageNet only, replaces the 7x7 stem with three 3x3 convs, the public MRLA-base ImageNet stem).
    `reference=True` builds the straightforward per-layer implementation (MRLA-base, DLA-B only; models/reference.py).
    """
    backbone = backbone or default_backbone()
    cls = method_info(method).cls
    if reference:
        from .reference import reference_impl

        cls = reference_impl(method)
    info = backbone_info(backbone)
    depth = info.default_depth if depth is None else depth
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ValueError(f"depth must be an integer, got {depth!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    check_layout(method, backbone)
    allowed = method_options(method, backbone)
    arch = {k: opts.pop(k) for k in list(opts) if k in info.options}
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {method!r}; allowed: "
            f"{', '.join(sorted(allowed) + ['zero_init_residual', *info.options])}"
        )
    info.check_options(arch)
    info.check_depth(depth, block)
    resolved = {**allowed, **opts}
    return info.build(depth, num_classes, block, partial(cls, **resolved), zero_init_residual=zero_init_residual,
                      **arch)
