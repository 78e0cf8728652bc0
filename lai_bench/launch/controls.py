"""Matched-cost controls (a grid's ``controls: [params, flops]``): for each method run, a plain ResNet run of the same
recipe, seed and dataset whose depth gives the nearest parameter count (FLOPs) at or above the method's.

For a task that declares `controls` (classification) on a backbone whose depths lie close together (`Backbone.deeper`:
the CIFAR ResNet, 9n+2 bottleneck or 6n+2 basic, the block of the method's run). ImageNet is left out: its standard
depths (50, 101, 152) are too far apart, and matching would need per-stage block counts.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..config import RunConfig
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
    """Controls exist for a task whose model is the classifier (`Task.controls`) on a backbone whose depths lie close
    together (`Backbone.deeper`: the CIFAR ResNet's 6n+2 / 9n+2; ImageNet's 50, 101, 152 are too far apart)."""
    from ..models import backbone_info, list_backbones
    from ..tasks import list_tasks, task_class

    if not task_class(config.task).controls or not hasattr(backbone_info(config.backbone), "deeper"):
        tasks = [name for name in list_tasks() if task_class(name).controls]
        backbones = [name for name in list_backbones() if hasattr(backbone_info(name), "deeper")]
        raise ValueError(f"controls: run {config.name()} is {config.task} on the {config.backbone} backbone; "
                         f"matched-cost controls are built for task {' or '.join(tasks)} on backbone "
                         f"{' or '.join(backbones)} only (allowed: those, or no controls)")


def control_config(config: RunConfig, depth: int) -> RunConfig:
    """The plain ResNet of ``depth`` with everything else of ``config`` (recipe, seed, data, backbone options)."""
    from ..models import backbone_info

    backbone_options = backbone_info(config.backbone).option_defaults()
    plain = copy.deepcopy(config)
    plain.method, plain.depth, plain.block = "none", depth, _block(config)
    plain.model_opts = {k: v for k, v in (config.model_opts or {}).items() if k in backbone_options}
    return validate(plain)


def _block(config: RunConfig) -> str:
    """The block type of the run (``basic`` or ``bottleneck``)."""
    from ..models import backbone_info

    return backbone_info(config.backbone).deeper(config.depth, config.block)[0]


def control_depth(config: RunConfig, kind: str) -> int:
    """The smallest depth of the run's block type whose plain ResNet has at least the method's params (FLOPs)."""
    from ..data import dataset_info

    info = dataset_info(config.dataset, data_root=config.data_root, synthetic=config.synthetic or None)
    from ..models import backbone_info

    block, depths = backbone_info(config.backbone).deeper(config.depth, config.block)
    opts = json.dumps(config.model_opts or {}, sort_keys=True, default=str)
    cost = functools.partial(model_cost, backbone=config.backbone, block=block, num_classes=info.num_classes,
                             image_size=info.image_size, kind=kind)
    target = cost(config.method, config.depth, opts=opts)
    for depth in depths:
        if cost("none", depth, opts="{}") >= target:
            return depth
    raise ValueError(f"controls: no plain network on backbone {config.backbone} up to depth {depths[-1]} has the "
                     f"{kind} of {config.name()}")


@functools.lru_cache(maxsize=512)
def model_cost(method: str, depth: int, *, backbone: str, block: str, num_classes: int, image_size: int, opts: str,
               kind: str) -> int:
    """Exact parameter count (built on the meta device) or fvcore FLOPs of one image, as the records count them."""
    import torch

    from ..models import build_model
    from ..runtime.measure import count_flops, count_params

    if kind == "params":
        with torch.device("meta"):
            return count_params(build_model(method, backbone, depth, num_classes, block, **json.loads(opts)))
    torch.manual_seed(0)
    model = build_model(method, backbone, depth, num_classes, block, **json.loads(opts))
    return count_flops(model, (3, image_size, image_size)).total
