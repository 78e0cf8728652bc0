"""COCO object detection on lai_bench backbones: torchvision Faster R-CNN, Mask R-CNN and RetinaNet with FPN.

model.py builds the detectors (FPN, frozen stem/stage 1/BatchNorm, mmdetection's settings where torchvision has the
argument), pretrained.py loads backbone weights, data.py reads COCO (or a synthetic set of shapes, shapes.py),
evaluate.py turns predictions into pycocotools COCOeval metrics, flops.py counts FLOPs at mmdetection's 1280x800.
The task that trains them is lai_bench.tasks.detection.task.
"""
