"""COCO object detection on lai_bench backbones: torchvision Faster R-CNN, Mask R-CNN and RetinaNet with FPN.

task.py is the task (its options, data sets, step, evaluation); model.py builds the detectors (FPN, frozen
stem/stage 1/BatchNorm, mmdetection's settings where torchvision has the argument), pretrained.py loads backbone
weights, data.py reads COCO (or a synthetic set of shapes, shapes.py), evaluate.py turns predictions into pycocotools
COCOeval metrics, flops.py counts FLOPs at mmdetection's 1280x800, bench.py is its bench step and report.py its COCO
tables and AP-vs-GFLOPs figure.
"""
from .task import DetectionTask

__all__ = ["DetectionTask"]
