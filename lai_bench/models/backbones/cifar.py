"""The CIFAR ResNet: a 3x3 stem, three stages of widths 16/32/64, depth 6n+2 (basic) or 9n+2 (bottleneck)."""
from typing import Any

from ...core.normalization import CIFAR_MEAN, CIFAR_STD
from .registry import register_backbone
from .resnet import BLOCKS, BlockType, ResNetBackbone

WIDTHS = (16, 32, 64)
# ResNet-1202 (He et al. 2016) is the deepest CIFAR ResNet in the literature; deeper is a typo (and slow to build).
MAX_DEPTH = 1202


def cifar_layout(depth: int, block: str | None = None) -> tuple[BlockType, tuple[int, ...]]:
    """Blocks per stage for a CIFAR depth: basic 6n+2, bottleneck 9n+2.

    When both fit (20, 56, 110, 164 ...), depth >= 164 means bottleneck, as in the ResNet and
    pre-activation papers (ResNet-20..110 basic, ResNet-164/1001 bottleneck).
    """
    fits = {name: (depth - 2) % per == 0 and depth > 2 for name, per in (("basic", 6), ("bottleneck", 9))}
    if block is None:
        candidates = [name for name, ok in fits.items() if ok]
        if not candidates:
            raise ValueError(
                f"CIFAR depth {depth} fits no block type: basic needs 6n+2 (20, 32, 44, 56, 110), "
                f"bottleneck needs 9n+2 (29, 47, 164, 1001)"
            )
        block = "bottleneck" if "bottleneck" in candidates and (depth >= 164 or len(candidates) == 1) else "basic"
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; allowed: basic, bottleneck")
    if not fits[block]:
        need = "6n+2" if block == "basic" else "9n+2"
        raise ValueError(f"CIFAR depth {depth} does not fit {block} blocks (depth must be {need}, n >= 1)")
    n = (depth - 2) // (6 if block == "basic" else 9)
    return BLOCKS[block], (n, n, n)


@register_backbone("cifar")
class CifarResNet(ResNetBackbone):
    stem, widths = "3x3", WIDTHS
    input_size = 32
    mean, std = CIFAR_MEAN, CIFAR_STD
    default_recipe = "cifar"
    default = True  # the backbone of a run that names none
    bench_depth = 164  # what python -m lai_bench.bench measures unless told: the papers' CIFAR ResNet-164
    depth_help = f"basic 6n+2, bottleneck 9n+2, at most {MAX_DEPTH}"
    options = {"stem": ("standard", "deep")}  # the ResNet family's stems; this one builds the standard only

    def check_depth(self, depth: int, block: str | None = None) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"depth must be at most {MAX_DEPTH} on the cifar backbone (ResNet-{MAX_DEPTH}, "
                             f"the deepest CIFAR ResNet published), got {depth}")
        super().check_depth(depth, block)

    def layers(self, depth: int, block: str | None = None) -> tuple[BlockType, tuple[int, ...]]:
        return cifar_layout(depth, block)

    def deeper(self, depth: int, block: str | None = None) -> tuple[str, list[int]]:
        """The block type at `depth` and every depth of that type from `depth` up: the plain networks a method's
        matched-cost control is chosen from (depths 6n+2 or 9n+2 lie close together; ImageNet's do not)."""
        block_type, _ = cifar_layout(depth, block)
        name = next(name for name, cls in BLOCKS.items() if cls is block_type)
        return name, list(range(depth, MAX_DEPTH + 1, 6 if name == "basic" else 9))

    def check_options(self, options: dict[str, Any]) -> None:
        super().check_options(options)
        if options.get("stem") == "deep":
            raise ValueError("stem='deep' is an ImageNet stem; the cifar backbone has its 3x3 stem only")
