"""Image classification: CIFAR, ImageNet and synthetic images, cross-entropy, top-1/top-5."""
from .task import ClassificationTask

__all__ = ["ClassificationTask"]
