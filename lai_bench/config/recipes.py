"""Training recipes as data: one base and, per recipe, what it changes (the papers' and toolboxes' settings)."""
from typing import Any

# The DLA code's CIFAR README: SGD 0.1, batch 128, 180 epochs, /10 at 100 and 150, wd 1e-4, drop-path 0.2.
CIFAR = dict(epochs=180, batch_size=128, eval_batch_size=100, lr=0.1, momentum=0.9, weight_decay=1e-4,
             nesterov=False, schedule="step", milestones=(100, 150), gamma=0.1, warmup_epochs=0, label_smoothing=0.0,
             drop_path=0.2, zero_init_residual=False, warmup_iters=0, lr_scaling="none", optimizer="sgd", min_lr=0.0,
             warmup_lr=0.0, auto_augment=None, interpolation="bilinear", reprob=0.0, repeated_aug=1, mixup=0.0,
             cutmix=0.0, mixup_prob=1.0, mixup_switch_prob=0.5, model_ema=0.0)
# The DLA/MRLA ImageNet recipe: batch 256, 100 epochs, 3 warm-up epochs, x0.1 every 30, last BN zero-init.
IMAGENET = {**CIFAR, "epochs": 100, "batch_size": 256, "eval_batch_size": 256, "milestones": (30, 60, 90),
            "warmup_epochs": 3, "zero_init_residual": True}
RECIPES: dict[str, dict[str, Any]] = {
    "cifar": CIFAR,
    "imagenet": IMAGENET,
    # The alternative ImageNet script: label smoothing 0.1, per-iteration cosine, 5 warm-up epochs.
    "imagenet_cosine": {**IMAGENET, "schedule": "cosine", "milestones": (), "warmup_epochs": 5,
                        "label_smoothing": 0.1},
    # A few quick steps: smoke runs and tests.
    "smoke": {**CIFAR, "epochs": 1, "batch_size": 32, "eval_batch_size": 64, "lr": 0.05, "milestones": (),
              "drop_path": 0.0},
    # mmdetection's 1x COCO schedule: 12 epochs, SGD 0.02 at a global batch of 16 (scaled linearly for other
    # batches), wd 1e-4, linear warm-up over 500 iterations from 0.001x, x0.1 after epochs 8 and 11.
    "coco_1x": {**CIFAR, "epochs": 12, "batch_size": 16, "eval_batch_size": 8, "lr": 0.02, "milestones": (8, 11),
                "drop_path": 0.0, "warmup_iters": 500, "lr_scaling": "linear"},
    # DeiT (Touvron et al. 2021; the MRLA DeiT main.py defaults, through timm's implementations): AdamW (eps 1e-8; no
    # weight decay on norms, biases, position embedding and class token, timm's rule) at 5e-4 x global batch / 512
    # (here 1e-3 at the MRLA command's 4 x 256 = 1024, scaled linearly), wd 0.05, 300 epochs, timm's cosine
    # scheduler stepped per epoch (5 warm-up epochs from 1e-6, down to 1e-5), RandAugment rand-m9-mstd0.5-inc1,
    # bicubic, random erasing 0.25 (pixel mode), repeated augmentation x3, Mixup 0.8 / CutMix 1.0 (switch 0.5) with
    # label smoothing 0.1 in the soft targets, drop path 0.1, model EMA 0.99996.
    "deit": {**CIFAR, "epochs": 300, "batch_size": 1024, "eval_batch_size": 1024, "lr": 1e-3, "weight_decay": 0.05,
             "schedule": "cosine_epoch", "milestones": (), "warmup_epochs": 5, "warmup_lr": 1e-6,
             "label_smoothing": 0.1, "drop_path": 0.1, "lr_scaling": "linear", "optimizer": "adamw", "min_lr": 1e-5,
             "auto_augment": "rand-m9-mstd0.5-inc1", "interpolation": "bicubic", "reprob": 0.25, "repeated_aug": 3,
             "mixup": 0.8, "cutmix": 1.0, "model_ema": 0.99996},
    # ViT from scratch on CIFAR (Lee, Lee & Song 2021, "Vision Transformer for Small-Size Datasets", arXiv 2112.13492;
    # the defaults of its code, aanna0701/SPT_LSA_ViT main.py): AdamW lr 1e-3 at batch 128, wd 0.05, 100 epochs,
    # cosine per iteration after 10 warm-up epochs, label smoothing 0.1, drop path 0.1, crop (pad 4) and flip then
    # AutoAugment's CIFAR-10 policy, random erasing 0.25, repeated augmentation x3, Mixup 1.0 / CutMix 1.0 applied to
    # half the batches (switch 0.5). docs/faithfulness.md lists where this differs from that code.
    "vit_cifar": {**CIFAR, "epochs": 100, "batch_size": 128, "eval_batch_size": 256, "lr": 1e-3, "weight_decay": 0.05,
                  "schedule": "cosine", "milestones": (), "warmup_epochs": 10, "label_smoothing": 0.1,
                  "drop_path": 0.1, "optimizer": "adamw", "auto_augment": "cifar10", "reprob": 0.25,
                  "repeated_aug": 3, "mixup": 1.0, "cutmix": 1.0, "mixup_prob": 0.5},
}
# The linear warm-up over `warmup_iters` starts at this fraction of the lr (mmdetection's warmup_ratio).
WARMUP_ITERS_START = 0.001
RECIPE_FIELDS = tuple(CIFAR)
DEFAULT_RECIPE = "cifar"  # what an unset `recipe` means
