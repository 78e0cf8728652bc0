"""GPT decoders on the causal layout, in the GPT-2 / nanoGPT form: token embedding plus a learned position embedding,
pre-norm blocks (LayerNorm -> causal self-attention, LayerNorm -> MLP 4x with GPT-2's tanh GELU), a final
LayerNorm and an output head tied to the token embedding. `num_classes` is the vocabulary; a model maps tokens
[B, T] (T <= the context) to logits [B, T, V].

As in vit.py the blocks are grouped into stages of 4, each sharing one interaction; a block hands its method its
output's increment over its input and its input (the identity), so with method `none` the network is GPT-2 (the
same parameters under stage names: `hf_key` maps Hugging Face's `transformer.h.i` to `stages.{i // 4}.blocks.{i %
4}`, and `load_pretrained` reads a `GPT2LMHeadModel` state_dict through `source_key` and `source_tensor`).

No dropout (nanoGPT's default, 0.0) and no stochastic depth of the blocks; the image fields of `Backbone` do not
apply: `input_size` is the context (tokens per sequence), `mean` and `std` are empty.
"""
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..interaction.base import StageSpec
from ..interaction.stage import Stage
from ..layers.layout import CAUSAL
from .registry import Backbone, register_backbone

STAGE_BLOCKS = 4  # blocks per stage, as the ViTs
MAX_DEPTH = 48
CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions <= t; fused qkv projection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.c_attn(x).split(c, 2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's gelu_new


class Block(nn.Module):
    """GPT-2's pre-norm block (x + attn(LN(x)), then + mlp(LN(.))) in the suite's block contract: it returns its
    output's increment over its input, and its input as the identity."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x_in: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        h = x_in + self.attn(self.ln_1(x_in))
        h = h + self.mlp(self.ln_2(h))
        return h - x, x


class GPT(nn.Module):
    """Embeddings, stages of blocks sharing one interaction each, final LayerNorm, tied output head."""

    def __init__(self, vocab: int, context: int, width: int, heads: int, depth: int, interaction: Callable) -> None:
        super().__init__()
        self.context = context
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        sizes = [min(STAGE_BLOCKS, depth - start) for start in range(0, depth, STAGE_BLOCKS)]
        self.stages = nn.ModuleList(
            Stage([Block(width, heads) for _ in range(n)],
                  interaction(StageSpec(width, n, i, len(sizes), CAUSAL, first_block=i * STAGE_BLOCKS)))
            for i, n in enumerate(sizes))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as GPT-2
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """GPT-2's (nanoGPT's) init for the backbone's own parts: normal 0.02 for linears and embeddings, zero biases,
        the residual projections at 0.02 / sqrt(2 n_layer); LayerNorm keeps ones and zeros. The methods' modules
        keep their own init."""
        backbone = [self.wte, self.wpe, *(b for stage in self.stages for b in stage.blocks)]
        for module in (m for part in backbone for m in part.modules()):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") and ".interaction." not in name:
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * depth))

    @staticmethod
    def source_key(name: str) -> str | None:
        """Our name of a Hugging Face GPT-2 parameter (load_pretrained reads their state_dicts through it)."""
        return hf_key(name)

    @staticmethod
    def source_tensor(name: str, tensor: Tensor) -> Tensor:
        """Hugging Face's GPT-2 keeps its linears as Conv1D, weights [in, out]: nn.Linear's transposed."""
        return tensor.t() if name.startswith("transformer.h.") and name.endswith(CONV1D) else tensor

    def no_weight_decay(self) -> set[str]:
        return set()  # nanoGPT's rule: every 2-D matrix decays (embeddings too), biases and LayerNorm (1-D) do not

    def forward(self, tokens: Tensor) -> Tensor:
        t = tokens.shape[1]
        if t > self.context:
            raise ValueError(f"a sequence of {t} tokens is longer than the model's context of {self.context}")
        x = self.wte(tokens) + self.wpe(torch.arange(t, device=tokens.device))
        carry = None
        for stage in self.stages:
            x, carry = stage(x, carry)
        return self.lm_head(self.ln_f(self.stages[-1].interaction.head(x, carry)))


def hf_key(name: str) -> str | None:
    """Our parameter name for Hugging Face's (`transformer.h.5.attn.c_attn.weight` ->
    `stages.1.blocks.1.attn.c_attn.weight`); None for the attention mask buffers (`attn.bias`, `attn.masked_bias`)
    older versions save."""
    if name.startswith("transformer.h."):
        _, _, index, rest = name.split(".", 3)
        if rest in ("attn.bias", "attn.masked_bias"):
            return None
        i = int(index)
        return f"stages.{i // STAGE_BLOCKS}.blocks.{i % STAGE_BLOCKS}.{rest}"
    return name.removeprefix("transformer.")


class GPTBackbone(Backbone):
    """A GPT size: width, heads and context; any depth (blocks) from 1 to MAX_DEPTH."""

    layout = CAUSAL
    inputs = "tokens"
    width: int = 128
    heads: int = 4
    context: int = 256
    mean, std = (), ()  # tokens, not pixels: no normalisation
    default_recipe = None  # "lm" once a language-modelling recipe exists
    default_depth = 6
    plain_name = "GPT"
    size_name = "nano"
    depth_help = f"blocks (1..{MAX_DEPTH}; stages of {STAGE_BLOCKS}); num_classes is the vocabulary"

    @property
    def input_size(self) -> int:
        """Tokens per sequence (no image side): the context, whatever size sets it."""
        return self.context

    def check_depth(self, depth: int, block: str | None = None) -> None:
        if block is not None:
            raise ValueError(f"block {block!r} is a ResNet setting; the {self.name} backbone has GPT blocks only "
                             "(allowed: no block)")
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be 1..{MAX_DEPTH} blocks on the {self.name} backbone "
                             f"({self.default_depth} by default), got {depth}")

    def stage_channels(self, depth: int, block: str | None = None) -> list[int]:
        return [self.width] * math.ceil(depth / STAGE_BLOCKS)

    def model_name(self, depth: int) -> str:
        """``GPT-2 small``; other depths say their blocks (``GPT-2 small/6``)."""
        name = f"{self.plain_name} {self.size_name}"
        return name if depth == self.default_depth else f"{name}/{depth}"

    def build(self, depth: int, num_classes: int, block: str | None, interaction: Callable, *,
              zero_init_residual: bool = False) -> nn.Module:
        return GPT(num_classes, self.context, self.width, self.heads, depth, interaction)


@register_backbone("gpt_nano")
class GPTNano(GPTBackbone):
    """For a 2-core CPU: 6 blocks of width 128 (4 heads of 32), context 256 (a byte-level model's vocabulary: 256)."""

    width, heads, context, default_depth = 128, 4, 256, 6


@register_backbone("gpt2_small")
class GPT2Small(GPTBackbone):
    """GPT-2 small: 12 blocks of width 768, 12 heads, context 1024 (124,439,808 parameters at vocabulary 50257)."""

    width, heads, context, default_depth = 768, 12, 1024, 12
    plain_name, size_name = "GPT-2", "small"
