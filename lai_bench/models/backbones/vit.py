"""Vision Transformers on the token layout: DeiT-T/S/B (224x224, patch 16) and CIFAR ViTs (32x32, patch 4), built
from timm's parts (PatchEmbed, the ViT Block with F.scaled_dot_product_attention).

The blocks are grouped into stages of 4, the groups of the public MRLA-base DeiT code (it restarts its memory every
4 blocks): 3 stages at depth 12, so per-stage state (MRLA-base memory, DLA's DSU) resets at the same places for
every method. A block hands its method its output's increment over its input and its input (the identity), so the
method acts after the whole pre-norm block (both residual adds), as the public MRLA DeiT modules do. With method
`none` the network is timm's DeiT: the same parameters under stage names (`load_timm_state_dict` maps timm's
`blocks.i` to `stages.{i // 4}.blocks.{i % 4}`), the same logits.

Stochastic depth is DeiT's (timm's VisionTransformer, the DeiT and public MRLA DeiT code): each block drops its
attention and MLP branches per sample, at rates rising linearly over the blocks from 0 to the run's `drop_path`; the
method's own branch is added undropped, as the public MRLA DeiT modules are. `drop_schedule="constant"` drops every
branch at the run's rate instead: the public MRLA-base DeiT model's hard-coded `dpr = [0.1] * 12`.
"""
import math
from collections.abc import Callable
from functools import partial

import torch
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ...core.normalization import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD
from ..interaction.base import StageSpec
from ..interaction.stage import Stage
from ..layers.layout import TOKENS
from .registry import Backbone, register_backbone

STAGE_BLOCKS = 4  # blocks per stage: the public MRLA-base DeiT memory restarts every 4 blocks
MAX_DEPTH = 48


class TokenBlock(Block):
    """timm's pre-norm ViT block (x + attn(LN(x)), then + mlp(LN(.))) in the suite's block contract: it returns
    its output's increment over its input, and its input as the identity."""

    def forward(self, x_in: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return super().forward(x_in) - x, x


class VisionTransformer(nn.Module):
    """Patch embedding, class token, learned position embedding, stages of pre-norm blocks sharing one interaction
    each, final LayerNorm, head on the class token (DeiT without distillation)."""

    def __init__(self, img_size: int, patch: int, width: int, heads: int, depth: int, num_classes: int,
                 interaction: Callable, drop_path: float = 0.0, drop_schedule: str = "linear") -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch, 3, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, width))
        norm = partial(nn.LayerNorm, eps=1e-6)
        sizes = [min(STAGE_BLOCKS, depth - start) for start in range(0, depth, STAGE_BLOCKS)]
        # timm's rule: block i drops at i / (depth - 1) x the rate; or the rate everywhere (public MRLA-base DeiT)
        rates = (torch.linspace(0, drop_path, depth, device="cpu").tolist() if drop_schedule == "linear"
                 else [drop_path] * depth)
        stages = []
        for i, n in enumerate(sizes):
            inter = interaction(StageSpec(width, n, i, len(sizes), TOKENS, first_block=i * STAGE_BLOCKS))
            blocks = [TokenBlock(width, heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm, drop_path=rate)
                      for rate in rates[i * STAGE_BLOCKS: i * STAGE_BLOCKS + n]]
            stages.append(Stage(blocks, inter))
        self.stages = nn.ModuleList(stages)
        self.norm = norm(width)
        self.head = nn.Linear(width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ViT init for the backbone's own parts (truncated normal 0.02 for linears, zero biases); the methods'
        modules keep their own."""
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)  # the DeiT and MRLA DeiT code's (timm 0.3.2); timm 1.x: normal 1e-6
        backbone = [*(b for stage in self.stages for b in stage.blocks), self.head]
        for module in (m for part in backbone for m in part.modules()):
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @staticmethod
    def source_key(name: str) -> str:
        """Our name of a timm ViT parameter (load_pretrained reads timm's state_dicts through it)."""
        return timm_key(name)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        carry = None
        for stage in self.stages:
            x, carry = stage(x, carry)
        return self.norm(self.stages[-1].interaction.head(x, carry))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x)[:, 0])


def timm_key(name: str) -> str:
    """Our parameter name for timm's (`blocks.5.attn.qkv.weight` -> `stages.1.blocks.1.attn.qkv.weight`)."""
    if name.startswith("blocks."):
        _, index, rest = name.split(".", 2)
        i = int(index)
        return f"stages.{i // STAGE_BLOCKS}.blocks.{i % STAGE_BLOCKS}.{rest}"
    return name


class ViTBackbone(Backbone):
    """A ViT family member: width, heads, image size and patch; any depth from 1 to MAX_DEPTH (12 as published)."""

    layout = TOKENS
    detection = False
    width: int = 192
    heads: int = 3
    patch: int = 16
    options = {"drop_schedule": ("linear", "constant")}  # stochastic depth over the blocks (module docstring)
    default_depth = 12
    plain_name = "DeiT"
    size_letter = "T"  # the DeiT paper's T/S/B
    depth_help = f"blocks, 12 as published (1..{MAX_DEPTH}; stages of {STAGE_BLOCKS})"

    def check_depth(self, depth: int, block: str | None = None) -> None:
        if block is not None:
            raise ValueError(f"block {block!r} is a ResNet setting; the {self.name} backbone has ViT blocks only "
                             "(allowed: no block)")
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be 1..{MAX_DEPTH} blocks on the {self.name} backbone (12 as published), "
                             f"got {depth}")

    def stage_channels(self, depth: int, block: str | None = None) -> list[int]:
        return [self.width] * math.ceil(depth / STAGE_BLOCKS)

    def model_name(self, depth: int) -> str:
        """``DeiT-S`` as the papers name it; other depths say their blocks (``DeiT-S/6``)."""
        name = f"{self.plain_name}-{self.size_letter}"
        return name if depth == self.default_depth else f"{name}/{depth}"

    def build(self, depth: int, num_classes: int, block: str | None, interaction: Callable, *,
              zero_init_residual: bool = False, drop_schedule: str = "linear") -> nn.Module:
        """The run's `drop_path` goes to the blocks (DeiT's per-branch linear schedule), none to the method."""
        rate = interaction.keywords.get("drop_path", 0.0) if isinstance(interaction, partial) else 0.0
        method = partial(interaction, drop_path=0.0) if isinstance(interaction, partial) else interaction
        return VisionTransformer(self.input_size, self.patch, self.width, self.heads, depth, num_classes, method,
                                 drop_path=rate, drop_schedule=drop_schedule)


@register_backbone("deit_tiny")
class DeiTTiny(ViTBackbone):
    input_size, mean, std, default_recipe = 224, IMAGENET_MEAN, IMAGENET_STD, "deit"
    width, heads = 192, 3


@register_backbone("deit_small")
class DeiTSmall(DeiTTiny):
    width, heads, size_letter = 384, 6, "S"


@register_backbone("deit_base")
class DeiTBase(DeiTTiny):
    width, heads, size_letter = 768, 12, "B"


@register_backbone("vit_cifar_tiny")
class ViTCifarTiny(ViTBackbone):
    """32x32 images in 4x4 patches: 64 patch tokens and the class token."""

    input_size, mean, std, default_recipe = 32, CIFAR_MEAN, CIFAR_STD, "vit_cifar"
    width, heads, patch, plain_name = 192, 3, 4, "ViT"


@register_backbone("vit_cifar_small")
class ViTCifarSmall(ViTCifarTiny):
    width, heads, size_letter = 384, 6, "S"
