"""Per-channel image statistics (RGB on the 0-1 scale), defined once: the data sets, the backbones and the
detectors read them from here."""

# The DLA reference code's CIFAR statistics, used for CIFAR-100 as well so both share one pipeline.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
# torchvision's (and mmdetection's 123.675, 116.28, 103.53 / 58.395, 57.12, 57.375 on 0-255) ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
