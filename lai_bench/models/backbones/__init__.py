"""Backbones as registered components: one file per family, each a `Backbone` (registry.py)."""
from .registry import Backbone, backbone_info, list_backbones, register_backbone

__all__ = ["Backbone", "backbone_info", "list_backbones", "register_backbone"]
