"""Backbones as registered components: one file per family, each a `Backbone` (registry.py); importing this package
registers them all (the registry imports none of them)."""
from . import cifar, gpt, imagenet, vit  # noqa: F401
from .registry import Backbone, backbone_info, list_backbones, register_backbone

__all__ = ["Backbone", "backbone_info", "list_backbones", "register_backbone"]
