"""Building blocks shared by the layer-interaction methods, each once (as in timm/layers), in plain PyTorch.

Every layer is ordinary autograd on every device, so torch.compile captures a whole train step.
"""
from .attention import BaseAttention, ChannelConv1d, LightAttention, eca_kernel_size, num_heads
from .drop import DropPath
from .gates import DIALSTMCell, GateCell, GateMLP, align
from .ops import depthwise3x3, gap, matmul_weighted_sum, residual_relu, scalar_weighted_sum, weighted_sum
from .token_attention import TokenBaseAttention, TokenLightAttention, base_attention, light_attention

__all__ = [
    "BaseAttention", "ChannelConv1d", "DIALSTMCell", "DropPath", "GateCell", "GateMLP", "LightAttention",
    "TokenBaseAttention", "TokenLightAttention", "align", "base_attention", "depthwise3x3", "eca_kernel_size", "gap",
    "light_attention", "matmul_weighted_sum", "num_heads", "residual_relu", "scalar_weighted_sum", "weighted_sum",
]
