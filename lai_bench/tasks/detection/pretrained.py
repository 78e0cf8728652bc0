"""A detector's backbone from ImageNet weights: a lai_bench run record, its weights or checkpoint file, or a
torchvision ResNet state_dict (for method `none`; names mapped). The classifier (fc.*) is dropped; anything else
that does not fit is one PretrainedError naming the missing, unexpected and mis-shaped keys."""
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...models import backbone_info, list_backbones, method_info
from ...models.backbones.resnet import ResNet
from ...records.store import RecordError, read_record
from ...runtime.checkpoint import WEIGHTS_FORMAT
from ..registry import default_task

SHOWN_KEYS = 5  # keys named in an error, per kind


class PretrainedError(ValueError):
    """A `pretrained` file that cannot be read or does not fit the backbone."""


def load_backbone(body: ResNet, path: str | os.PathLike, method: str, depth: int,
                  model_opts: dict[str, Any] | None = None) -> str:
    """Load ImageNet weights into `body` (an ImageNet-stem ResNet of `method` and `depth`); returns one line saying
    what was loaded. A folder is searched for the completed run of that method, depth and `model_opts`."""
    path = Path(path)
    if path.is_dir():
        path = record_in_folder(path, method, depth, model_opts or {})
    if not path.is_file():
        raise PretrainedError(f"pretrained {path}: no such file (a run record .json, a lai_bench weights or "
                              f"checkpoint .pt, or a torchvision ResNet state_dict)")
    expected = f"an ImageNet-stem {method} ResNet-{depth} backbone"
    if path.suffix == ".json":
        state, source = from_record(path, method, depth)
    else:
        state, source = from_torch_file(path, method, depth)
    load_state(body, state, source, expected)
    return source


def record_in_folder(folder: Path, method: str, depth: int, model_opts: dict[str, Any]) -> Path:
    """The record of the completed ImageNet run of `method`, `depth` and `model_opts` with final weights, in `folder`
    or one level below (a results folder holds one folder per grid); the lowest seed, then the newest."""
    found, seen = [], []
    for path in sorted([*folder.glob("*.json"), *folder.glob("*/*.json")]):
        try:
            record = read_record(path)
        except (OSError, RecordError):
            continue  # jobs.json, a corrupt or foreign file: not a candidate
        config = record["config"]
        if not _classifier_run(config):
            continue
        seen.append(f"{record.get('name')} ({record.get('status')})")
        if (config.get("method"), config.get("depth"), config.get("model_opts") or {}) == (method, depth, model_opts) \
                and record.get("status") == "completed" and record.get("weights"):
            found.append((config.get("seed", 0), -path.stat().st_mtime, path))
    if not found:
        opts = "".join(f"-{k}={v}" for k, v in sorted(model_opts.items()))
        more = f" and {len(seen) - SHOWN_KEYS} more" if len(seen) > SHOWN_KEYS else ""
        listed = ", ".join(seen[:SHOWN_KEYS]) + more
        raise PretrainedError(f"pretrained {folder}: no completed ImageNet run of {method}{opts} depth {depth} with "
                              f"weights in this folder or its grid folders (found: {listed or 'no ImageNet runs'})")
    return min(found)[2]


def from_record(path: Path, method: str, depth: int) -> tuple[dict[str, Tensor], str]:
    """The weights a lai_bench run record names (relative to the record's folder when relative)."""
    try:
        record = read_record(path)
    except (OSError, RecordError) as err:
        raise PretrainedError(f"pretrained {path} is not a readable lai_bench run record ({err})") from None
    check_config(record["config"], path, method, depth)
    weights = record.get("weights")
    if not weights:
        raise PretrainedError(f"pretrained {path}: run {record.get('run_id')} (status {record.get('status')}) names "
                              f"no weights file (a completed run with keep_checkpoints final or all has one)")
    weights_path = Path(weights) if Path(weights).is_absolute() else path.parent / weights
    if not weights_path.is_file():
        raise PretrainedError(f"pretrained {path}: its weights file {weights_path} does not exist")
    state, _ = from_torch_file(weights_path, method, depth)
    return state, f"lai_bench run {record.get('run_id')} weights {weights_path} (record {path})"


def from_torch_file(path: Path, method: str, depth: int) -> tuple[dict[str, Tensor], str]:
    """A lai_bench weights file or training checkpoint, or a torchvision ResNet state_dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, a pickle of arbitrary objects, garbage: torch raises many kinds
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise PretrainedError(f"pretrained {path} is not a readable torch file ({reason})") from None
    if not isinstance(obj, dict):
        raise PretrainedError(f"pretrained {path} holds a {type(obj).__name__}, not a state_dict or weights dict")
    if obj.get("format") == WEIGHTS_FORMAT:
        check_config(obj.get("config") or {}, path, method, depth)
        return tensors(obj.get("model"), path), f"lai_bench run {obj.get('run_id')} weights {path}"
    if "optimizer" in obj and "model" in obj:  # a training checkpoint: no config, the keys decide
        return (tensors(obj["model"], path),
                f"lai_bench run {obj.get('run_id')} checkpoint {path} (after epoch {obj.get('epoch')})")
    state = tensors(obj.get("model", obj.get("state_dict", obj)), path)
    if "conv1.weight" in state or any(key.startswith("layer1.") for key in state):
        return from_torchvision(state), f"torchvision ResNet-{depth} state_dict {path}"
    return state, f"state_dict {path}"


def tensors(state: Any, path: Path) -> dict[str, Tensor]:
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedError(f"pretrained {path} holds no state_dict (a dict of tensors)")
    return state


def detection_backbone() -> str:
    """The backbone the detectors are built on: the registered one with 4-level features (`Backbone.detection`)."""
    return next(name for name in list_backbones() if backbone_info(name).detection)


def _classifier_run(config: dict) -> bool:
    """A run that trained the detector's backbone as a classifier: the default task (image classification; records
    from before tasks existed name none) on the backbone the detectors are built on."""
    return (config.get("task") or default_task()) == default_task() and config.get("backbone") == detection_backbone()


def check_config(config: dict, path: Path, method: str, depth: int) -> None:
    """The run behind a record or weights file must be an ImageNet-stem classification run of `method`, `depth`."""
    task = config.get("task") or default_task()
    got = config.get("method")
    try:
        same_method = method_info(got).cls is method_info(method).cls
    except ValueError:
        same_method = False
    if not _classifier_run(config) or not same_method \
            or config.get("depth") != depth:
        raise PretrainedError(
            f"pretrained {path} is from a {task} run of {got} on the {config.get('backbone')} backbone, depth "
            f"{config.get('depth')}; expected an ImageNet classification run of {method}, depth {depth}"
        )


def from_torchvision(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's ResNet names to lai_bench's: conv1/bn1 -> stem.0/stem.1, layerN.i -> stages.N-1.blocks.i."""
    mapped = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "conv1":
            key = f"stem.0.{rest}"
        elif head == "bn1":
            key = f"stem.1.{rest}"
        elif head.startswith("layer") and head[5:].isdigit():
            block, _, rest = rest.partition(".")
            key = f"stages.{int(head[5:]) - 1}.blocks.{block}.{rest}"
        mapped[key] = value  # anything else keeps its name (fc.* is dropped later, the rest is unexpected)
    return mapped


def ignored(key: str) -> bool:
    """The classifier and BatchNorm's batch counter take no part in the comparison."""
    return key.startswith("fc.") or key.endswith("num_batches_tracked")


def load_state(body: ResNet, state: dict[str, Tensor], source: str, expected: str) -> None:
    """Load `state` into `body`; PretrainedError naming the missing, unexpected and mis-shaped keys."""
    own = {k: v for k, v in body.state_dict().items() if not ignored(k)}
    given = {k: v for k, v in state.items() if not ignored(k)}
    missing = sorted(own.keys() - given.keys())
    unexpected = sorted(given.keys() - own.keys())
    mismatched = sorted(f"{k} {tuple(given[k].shape)} (expected {tuple(own[k].shape)})"
                        for k in own.keys() & given.keys() if given[k].shape != own[k].shape)
    problems = [f"{len(keys)} {kind} key(s): {', '.join(keys[:SHOWN_KEYS])}{', ...' if len(keys) > SHOWN_KEYS else ''}"
                for kind, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched))
                if keys]
    if problems:
        raise PretrainedError(f"{source} does not fit {expected}: {'; '.join(problems)}")
    counters = {k: v for k, v in state.items() if k.endswith("num_batches_tracked") and k in body.state_dict()}
    body.load_state_dict({**given, **counters}, strict=False)
