"""The training augmentations of the ViT recipes, through the field's libraries: timm's RandAugment and
RandomErasing, torchvision's AutoAugment CIFAR-10 policy, bicubic crops; the standard pipelines when all are off.

Every random draw of these transforms comes from python's `random`, numpy or the torch CPU generator, which
`SeededSamples` seeds per sample: a batch stays a function of (seed, epoch).
"""
import math
from dataclasses import dataclass

from torchvision import transforms
from torchvision.transforms import InterpolationMode

AUTO_AUGMENT_POLICIES = {"cifar10": transforms.AutoAugmentPolicy.CIFAR10}


@dataclass(frozen=True)
class Augment:
    """A run's augmentation settings (the recipe fields of the same names); the defaults are the CNN pipelines."""

    auto_augment: str | None = None  # a timm RandAugment string, or a name of AUTO_AUGMENT_POLICIES
    interpolation: str = "bilinear"
    reprob: float = 0.0  # random erasing probability (pixel mode)

    @property
    def plain(self) -> bool:
        return self.auto_augment is None and self.interpolation == "bilinear" and self.reprob == 0.0


def check_auto_augment(text: str) -> None:
    """ValueError naming what is allowed unless `text` is a timm RandAugment string or a named policy."""
    if text in AUTO_AUGMENT_POLICIES:
        return
    if not text.startswith("rand"):
        raise ValueError(f"auto_augment {text!r}: allowed a timm RandAugment string such as rand-m9-mstd0.5-inc1, "
                         f"or {', '.join(AUTO_AUGMENT_POLICIES)}")
    from timm.data.auto_augment import rand_augment_transform

    try:
        rand_augment_transform(text, {})
    except Exception as err:  # timm raises AssertionError/ValueError/KeyError on a malformed string
        raise ValueError(f"auto_augment {text!r} is not a RandAugment string timm reads ({err}); allowed e.g. "
                         "rand-m9-mstd0.5-inc1 (DeiT), rand-m7-n2") from None


def _auto_augment(aug: Augment, mean: tuple[float, ...], image_size: int) -> list:
    if aug.auto_augment is None:
        return []
    if aug.auto_augment in AUTO_AUGMENT_POLICIES:
        return [transforms.AutoAugment(AUTO_AUGMENT_POLICIES[aug.auto_augment])]
    from timm.data.auto_augment import rand_augment_transform

    # timm's hparams as its create_transform sets them: fill with the mean colour, the crop's size, interpolation.
    hparams = {"translate_const": int(image_size * 0.45), "img_mean": tuple(round(255 * m) for m in mean),
               "interpolation": _pil_interpolation(aug.interpolation)}
    return [rand_augment_transform(aug.auto_augment, hparams)]


def _pil_interpolation(name: str) -> int:
    from PIL import Image

    return {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[name]


def _erasing(aug: Augment) -> list:
    if aug.reprob == 0.0:
        return []
    from timm.data.random_erasing import RandomErasing

    return [RandomErasing(aug.reprob, mode="pixel", max_count=1, device="cpu")]


def cifar_transform(train: bool, mean: tuple[float, ...], std: tuple[float, ...], aug: Augment = Augment()):
    """CIFAR: crop (pad 4) and flip, then the recipe's auto-augmentation; normalise; then random erasing."""
    norm = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if not train:
        return transforms.Compose(norm)
    return transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                               *_auto_augment(aug, mean, 32), *norm, *_erasing(aug)])


def imagenet_transform(train: bool, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                       aug: Augment = Augment()):
    """ImageNet: random-resized crop and flip (timm's create_transform order: then RandAugment, normalise, random
    erasing); eval: resize to size/0.875 and centre crop, both at the recipe's interpolation."""
    mode = InterpolationMode(aug.interpolation)
    norm = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if train:
        return transforms.Compose([transforms.RandomResizedCrop(size, interpolation=mode),
                                   transforms.RandomHorizontalFlip(), *_auto_augment(aug, mean, size), *norm,
                                   *_erasing(aug)])
    return transforms.Compose([transforms.Resize(math.floor(size * 256 / 224), interpolation=mode),
                               transforms.CenterCrop(size), *norm])


def tensor_transform(aug: Augment = Augment()):
    """Synthetic images are tensors already: of the recipe's augmentations only random erasing applies."""
    erasing = _erasing(aug)
    return erasing[0] if erasing else None
