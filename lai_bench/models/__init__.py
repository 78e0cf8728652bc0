"""lai_bench models: one ResNet backbone, every layer-interaction method behind one interface."""
from functools import partial

from .backbone import CIFAR_WIDTHS, IMAGENET_WIDTHS, ResNet, cifar_layout, imagenet_layout
from .registry import display_name, list_models, method_info, method_options, register_method

BACKBONES = ("cifar", "imagenet")
STEMS = ("standard", "deep")
ARCH_OPTIONS = {"stem": "standard"}  # backbone options a run sets through model_opts, with their defaults
BACKBONE_OPTIONS = ("zero_init_residual", *ARCH_OPTIONS)

__all__ = ["build_model", "list_models", "display_name", "method_info", "method_options", "model_options",
           "register_method", "BACKBONES"]


def model_options(method: str, backbone: str) -> dict:
    """Every option a run's `model_opts` may set: the method's (with defaults) and the backbone's `stem`."""
    return {**method_options(method, backbone), **ARCH_OPTIONS}


def build_model(method: str, backbone: str = "cifar", depth: int = 164, num_classes: int = 100,
                block: str | None = None, *, zero_init_residual: bool = False, stem: str = "standard",
                reference: bool = False, **opts) -> ResNet:
    """A ResNet of `depth` on the `backbone` stem with `method` as its layer interaction.

    `opts` are the method's options (see `method_options(method, backbone)`), e.g. `drop_path`,
    `reduction`, and for DLA `cell`, `forward_path`, `backward_path`, `attention`. `reference=True` builds
    the straightforward per-layer implementation (MRLA-base, DLA-B only; see models/reference.py).
    `stem="deep"` (ImageNet only) replaces the 7x7 stem with three 3x3 convs (32, 32, 64 channels), the
    stem of the public MRLA-base ImageNet model.
    """
    cls = method_info(method).cls
    if reference:
        from .reference import reference_impl

        cls = reference_impl(method)
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; allowed: {', '.join(BACKBONES)}")
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ValueError(f"depth must be an integer, got {depth!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    allowed = method_options(method, backbone)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {method!r}; allowed: "
            f"{', '.join(sorted(allowed) + list(BACKBONE_OPTIONS))}"
        )
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; allowed: {', '.join(STEMS)}")
    if stem == "deep" and backbone != "imagenet":
        raise ValueError("stem='deep' is an ImageNet stem; the cifar backbone has its 3x3 stem only")
    if backbone == "cifar":
        block_type, layers = cifar_layout(depth, block)
        widths = CIFAR_WIDTHS
    else:
        block_type, layers = imagenet_layout(depth, block)
        widths = IMAGENET_WIDTHS
    resolved = {**allowed, **opts}
    return ResNet(block_type, layers, widths, backbone, num_classes, interaction=partial(cls, **resolved),
                  zero_init_residual=zero_init_residual, deep_stem=stem == "deep")
