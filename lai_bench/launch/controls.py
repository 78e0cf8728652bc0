"""Matched-cost controls (a grid's ``controls: [params, flops]``): for each method run, a plain ResNet run of the same
recipe, seed and dataset whose depth gives the nearest parameter count (FLOPs) at or above the method's.

CIFAR ResNets only: depths 9n+2 (bottleneck) or 6n+2 (basic), the block of the method's run. ImageNet is left out:
its standard depths (50, 101, 152) are too far apart, and matching would need per-stage block counts.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..config import RunConfig
from ..models.backbones.cifar import MAX_DEPTH as CIFAR_MAX_DEPTH
from ..validate import validate

CONTROL_KINDS = ("params", "flops")
CONTROL_NAMES = {"params": "params-matched", "flops": "FLOPs-matched"}


def check_controls(value: Any) -> list[str]:
    """The control kinds a grid asks for; ValueError naming the bad value."""
    if value is None:
        return []
    kinds = [value] if isinstance(value, str) else value
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise ValueError(f"'controls' must be a list of {', '.join(CONTROL_KINDS)}, got {value!r}")
    unknown = [k for k in kinds if k not in CONTROL_KINDS]
    if unknown:
        raise ValueError(f"'controls': unknown kind(s) {', '.join(map(repr, unknown))}; allowed: "
                         f"{', '.join(CONTROL_KINDS)}")
    return list(dict.fromkeys(kinds))


def control_configs(configs: Iterable[RunConfig], kinds: Sequence[str]) -> list[tuple[RunConfig, str]]:
    """``(plain ResNet config, kind)`` for every method run and kind; ValueError for a run that cannot have one."""
    out = []
    for config in configs if kinds else ():
        if config.method == "none":
            continue
        _check_supported(config)
        for kind in kinds:
            depth = control_depth(config, kind)
            if depth != config.depth:
                out.append((control_config(config, depth), kind))
    return out


def _check_supported(config: RunConfig) -> None:
    """Controls exist for classification on the CIFAR ResNet only."""
    if config.backbone != "cifar" or config.task != "classification":
        raise ValueError(f"controls: run {config.name()} is {config.task} on the {config.backbone} backbone; "
                         "matched-cost controls are built for CIFAR ResNet classification only (depth 9n+2 / 6n+2; "
                         "ImageNet depths are too far apart)")


def control_config(config: RunConfig, depth: int) -> RunConfig:
    """The plain ResNet of ``depth`` with everything else of ``config`` (recipe, seed, data, backbone options)."""
    from ..models import backbone_info

    backbone_options = backbone_info(config.backbone).option_defaults()
    plain = copy.deepcopy(config)
    plain.method, plain.depth, plain.block = "none", depth, _block(config)
    plain.model_opts = {k: v for k, v in (config.model_opts or {}).items() if k in backbone_options}
    return validate(plain)


def _block(config: RunConfig) -> str:
    """The block type of a CIFAR run (``basic`` or ``bottleneck``)."""
    from ..models.backbones.cifar import cifar_layout
    from ..models.backbones.resnet import BLOCKS

    block_type, _ = cifar_layout(config.depth, config.block)
    return next(name for name, cls in BLOCKS.items() if cls is block_type)


def control_depth(config: RunConfig, kind: str) -> int:
    """The smallest depth of the run's block type whose plain ResNet has at least the method's params (FLOPs)."""
    from ..data import dataset_info

    info = dataset_info(config.dataset, data_root=config.data_root, synthetic=config.synthetic or None)
    block = _block(config)
    opts = json.dumps(config.model_opts or {}, sort_keys=True, default=str)
    target = model_cost(config.method, config.depth, block, info.num_classes, info.image_size, opts, kind)
    step = 9 if block == "bottleneck" else 6
    for depth in range(config.depth, CIFAR_MAX_DEPTH + 1, step):
        if model_cost("none", depth, block, info.num_classes, info.image_size, "{}", kind) >= target:
            return depth
    raise ValueError(f"controls: no plain CIFAR ResNet up to depth {CIFAR_MAX_DEPTH} has the {kind} of "
                     f"{config.name()}")


@functools.lru_cache(maxsize=512)
def model_cost(method: str, depth: int, block: str, num_classes: int, image_size: int, opts: str, kind: str) -> int:
    """Exact parameter count (built on the meta device) or fvcore FLOPs of one image, as the records count them."""
    import torch

    from ..models import build_model
    from ..runtime.measure import count_flops, count_params

    if kind == "params":
        with torch.device("meta"):
            return count_params(build_model(method, "cifar", depth, num_classes, block, **json.loads(opts)))
    torch.manual_seed(0)
    model = build_model(method, "cifar", depth, num_classes, block, **json.loads(opts))
    return count_flops(model, (3, image_size, image_size)).total
