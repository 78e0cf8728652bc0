"""Backbone registry: `@register_backbone` fills it with one `Backbone` per family (one file each), which owns its
depth rules and their error messages, input size and normalisation, default recipe, stages, layout and options;
`build_model`, the config, the bench and the report read it, so adding a backbone is one file and one import.

It imports none of the backbones: the `backbones` package `__init__` imports every family's file."""
from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from ...core.registry import Registry
from ..layers.layout import FEATURE_MAPS, Layout


class Backbone:
    """A backbone family: what the suite needs to know of it before and while building it."""

    name: ClassVar[str] = ""
    layout: ClassVar[Layout] = FEATURE_MAPS  # what its stages hand their methods
    input_size: ClassVar[int] = 32  # the image side its data sets use
    mean: ClassVar[tuple[float, ...]] = ()
    std: ClassVar[tuple[float, ...]] = ()
    default_recipe: ClassVar[str | None] = None  # the training recipe its papers use (each family sets it)
    default_depth: ClassVar[int] = 20  # what an unset `depth` means
    plain_name: ClassVar[str] = "ResNet"  # what tables call method `none` on it
    inputs: ClassVar[str] = "images"  # what its model is fed: "images" [B, 3, H, W] or "tokens" [B, T]
    depth_help: ClassVar[str] = ""  # the depths it takes, as the config's help prints them
    # Options a run sets through model_opts: name -> allowed values, the first the default.
    options: ClassVar[dict[str, tuple[Any, ...]]] = {}
    # Method option defaults on this backbone, by method name: what the methods' public code used on it.
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    default: ClassVar[bool] = False  # the backbone of a run that names none (one backbone only)
    bench_depth: ClassVar[int | None] = None  # what python -m lai_bench.bench measures unless told (None: default)
    detection: ClassVar[bool] = False  # offers the 4-level feature maps (forward_stages) the COCO detectors read

    def check_depth(self, depth: int, block: str | None = None) -> None:
        """ValueError naming what is allowed when `depth` (and `block`) do not fit: arithmetic only."""
        raise NotImplementedError

    def check_options(self, options: dict[str, Any]) -> None:
        """ValueError naming what is allowed for an option value this backbone does not take."""
        for name, value in options.items():
            allowed = self.options[name]
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(str, allowed))}")

    def option_defaults(self) -> dict[str, Any]:
        return {name: allowed[0] for name, allowed in self.options.items()}

    def model_name(self, depth: int) -> str:
        """How tables name the network at `depth` (``ResNet-164``)."""
        return f"{self.plain_name}-{depth}"

    def stage_channels(self, depth: int, block: str | None = None) -> list[int]:
        """Output channels of each stage (before the method's head), for detection necks and reports."""
        raise NotImplementedError

    def build(self, depth: int, num_classes: int, block: str | None, interaction: Callable, *,
              zero_init_residual: bool = False, **options: Any) -> nn.Module:
        """The network with `interaction(spec)` giving each stage's method object."""
        raise NotImplementedError


def _instance(name: str, cls: type[Backbone]) -> Backbone:
    cls.name = name
    return cls()  # one instance serves every build


BACKBONES: Registry[Backbone] = Registry("backbone", make=_instance)


def register_backbone(name: str) -> Callable[[type[Backbone]], type[Backbone]]:
    """Register a Backbone subclass under `name`."""
    return BACKBONES.register(name)


def list_backbones() -> list[str]:
    """Names of all registered backbones."""
    return BACKBONES.list()


def backbone_info(name: str) -> Backbone:
    """The registered backbone; ValueError in one line naming the nearest and the allowed ones."""
    return BACKBONES.get(name)
