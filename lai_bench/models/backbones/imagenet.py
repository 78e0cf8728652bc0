"""The ImageNet ResNet (torchvision's v1.5): a 7x7 stem (or the deep 3x3 stem), four stages of widths 64-512."""


from ...core.normalization import IMAGENET_MEAN, IMAGENET_STD
from .registry import register_backbone
from .resnet import BLOCKS, BasicBlock, BlockType, Bottleneck, ResNetBackbone

WIDTHS = (64, 128, 256, 512)
# The torchvision family plus small ones (10, 14, 26, as in timm) for quick tests.
IMAGENET_LAYOUTS = {
    10: (BasicBlock, (1, 1, 1, 1)),
    14: (Bottleneck, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    26: (Bottleneck, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def imagenet_layout(depth: int, block: str | None = None) -> tuple[BlockType, tuple[int, ...]]:
    if depth not in IMAGENET_LAYOUTS:
        raise ValueError(f"ImageNet depth {depth} is not a ResNet; allowed: {sorted(IMAGENET_LAYOUTS)}")
    block_type, layers = IMAGENET_LAYOUTS[depth]
    if block is not None and BLOCKS.get(block) is not block_type:
        expected = "basic" if block_type is BasicBlock else "bottleneck"
        raise ValueError(f"ImageNet ResNet-{depth} uses {expected} blocks, not {block!r}")
    return block_type, layers


@register_backbone("imagenet")
class ImageNetResNet(ResNetBackbone):
    """`stem="deep"` replaces the 7x7 stem with three 3x3 convs (32, 32, 64 channels), the stem of the public
    MRLA-base ImageNet model."""

    stem, widths = "7x7", WIDTHS
    input_size = 224
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    default_recipe = "imagenet"
    default_depth = 50
    depth_help = "/".join(map(str, IMAGENET_LAYOUTS))
    options = {"stem": ("standard", "deep")}
    detection = True
    # The public ImageNet models' settings: DLA's DSU reduction 16, MRLA-base's 16-channel heads, KCLA's 64-channel
    # heads with the re-projection at block 11.
    method_defaults = {"dla_l": {"reduction": 16}, "dla_b": {"reduction": 16}, "mrla_base": {"head_dim": 16},
                       "kcla": {"head_dim": 64, "reproject_at": 11}}

    def layers(self, depth: int, block: str | None = None) -> tuple[BlockType, tuple[int, ...]]:
        return imagenet_layout(depth, block)
