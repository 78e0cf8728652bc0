"""How things read in tables and figures: method, model and dataset names, their order, colours, numbers."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..models.registry import MethodInfo, canonical_method, method_info

# How tables print the names a task declares, filled as each task registers (lai_bench.tasks.registry): its data
# sets, in the order the tasks declare them, and its option values (a detector's name).
DATASET_NAMES: dict[str, str] = {}
VALUE_NAMES: dict[str, str] = {}
_SYNTHETIC: set[str] = set()  # data sets built from a seed: ranked after the real ones
MISSING = "–"


def name_dataset(name: str, title: str, synthetic: bool = False) -> None:
    """How tables print data set `name`, e.g. CIFAR-100 for cifar100."""
    DATASET_NAMES.setdefault(name, title)
    if synthetic:
        _SYNTHETIC.add(name)


def name_value(value: str, title: str) -> None:
    """How tables print an option value, e.g. Faster R-CNN for faster_rcnn."""
    VALUE_NAMES.setdefault(value, title)


def _registered(method: Any) -> MethodInfo | None:
    """The method's registry entry (display name, order, colour); None for a method this code does not know."""
    try:
        return method_info(str(method))
    except ValueError:
        return None


def _backbone(backbone: Any):
    """The registered backbone (names, layout); None when unknown or not given."""
    from ..models import backbone_info

    try:
        return backbone_info(str(backbone)) if isinstance(backbone, str) else None
    except ValueError:
        return None


def method_name(method: Any, backbone: Any = None) -> str:
    """The paper's display name of a method (its code name when unknown); `none` is the plain network of its
    backbone (ResNet, DeiT, ViT)."""
    info = _registered(method)
    family = _backbone(backbone)
    if method == "none" and family is not None:
        return family.plain_name
    return info.display if info else str(method)


def real_method(method: Any, options: Mapping[str, Any]) -> str:
    """The registered method a run built (the registry's ``canonical_method``): ``dla_l`` with ``attention=base``
    is ``dla_b`` (DLA-B), and back; options a run left unset (missing, NaN) are its method's defaults."""
    if _registered(method) is None:
        return str(method)
    given = {k: v for k, v in options.items() if value_text(v) != MISSING}
    return canonical_method(str(method), given)[0]


def natural_key(text: str) -> list:
    """Sort key reading digit runs as numbers: "reduction=2" before "reduction=16"."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(text))]


def method_rank(method: Any) -> tuple[float, str]:
    """Sort key: the paper's order, then the name; unknown methods last."""
    info = _registered(method)
    return (info.order if info else float("inf"), str(method))


def method_color(method: Any) -> str:
    """A fixed colour per method; unknown methods get a stable colour from tab20."""
    info = _registered(method)
    if info and info.color:
        return info.color
    from matplotlib import colormaps

    index = sum(map(ord, str(method))) % 20
    return colormaps["tab20"](index)


def model_name(depth: Any, backbone: Any = None) -> str:
    """``ResNet-164`` from a depth; ``DeiT-S`` on a ViT backbone."""
    family = _backbone(backbone)
    if family is None:
        return f"ResNet-{int(depth)}" if finite(depth) else "ResNet-?"
    return family.model_name(int(depth)) if finite(depth) else f"{family.plain_name}-?"


def dataset_name(dataset: Any) -> str:
    """``CIFAR-100`` from ``cifar100``."""
    return DATASET_NAMES.get(dataset, str(dataset))


def detector_name(detector: Any) -> str:
    """``Faster R-CNN`` from ``faster_rcnn``: an option value as its task names it."""
    return VALUE_NAMES.get(detector, str(detector))


def dataset_rank(dataset: Any) -> tuple[int, str]:
    """Sort key: the data sets in the order their tasks declare them (CIFAR-10, CIFAR-100, ImageNet, COCO), the
    synthetic ones after them, then others."""
    order = [d for d in DATASET_NAMES if d not in _SYNTHETIC] + [d for d in DATASET_NAMES if d in _SYNTHETIC]
    return (order.index(dataset), "") if dataset in DATASET_NAMES else (len(order), str(dataset))


def finite(value: Any) -> bool:
    """True for a real, finite number."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def sortable(value: Any) -> float:
    """A number for sorting, missing last."""
    return float(value) if finite(value) else float("inf")


def fmt_mean_std(mean: Any, std: Any, n: int, digits: int = 2) -> str:
    """``77.10 ± 0.25``; the mean alone when fewer than two seeds; ``–`` when missing."""
    if not finite(mean):
        return MISSING
    if n >= 2 and finite(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def fmt_number(value: Any, digits: int = 2, signed: bool = False) -> str:
    """A fixed-point number, ``+`` signed if asked; ``–`` when missing."""
    if not finite(value):
        return MISSING
    if signed:  # a true minus sign, so LaTeX does not typeset a hyphen
        return f"{float(value):+.{digits}f}".replace("-", "−")
    return f"{float(value):.{digits}f}"


def value_text(value: Any) -> str:
    """A config value as a short label fragment."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def option_text(value: Any) -> str:
    """A config option for a label: an option a run did not set is the model's default."""
    text = value_text(value)
    return "default" if text == MISSING else text


def n_distinct(values: pd.Series) -> int:
    """Distinct values, a missing value counting as one of them."""
    return values.map(value_text).nunique()


def md_escape(text: Any) -> str:
    """Make text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def one_seed(frame: pd.DataFrame) -> bool:
    """True when no configuration of `frame` has two completed seeds: nothing can be ranked or tested."""
    return "n" in frame and not frame.empty and frame["n"].fillna(0).max() <= 1
