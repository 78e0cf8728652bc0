"""The ViT recipes' training pieces through timm, on real on-disk data: RandAugment, random erasing and bicubic
crops in the training transform only, repeated augmentation, Mixup/CutMix in training only with the soft-target
loss, the model EMA evaluated beside the model and resumed with it; every new field leaves old run ids alone."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from data_files import write_cifar10, write_imagefolder

from lai_bench.config import ConfigError, RunConfig
from lai_bench.data import build_loaders
from lai_bench.data.augment import Augment
from lai_bench.runtime.distributed import World
from lai_bench.tasks import task_for
from lai_bench.train.lifecycle import Run
from lai_bench.validate import validate

DEIT_AUGMENT = Augment("rand-m9-mstd0.5-inc1", "bicubic", 0.25)


def transform_names(dataset) -> list[str]:
    return [type(t).__name__ for t in dataset.transform.transforms]


def test_the_deit_recipe_resolves_to_its_definition():
    c = validate(RunConfig(backbone="deit_tiny", depth=1, recipe="deit", dataset="synthetic"))
    assert (c.auto_augment, c.interpolation, c.reprob, c.repeated_aug) == ("rand-m9-mstd0.5-inc1", "bicubic", 0.25, 3)
    assert (c.mixup, c.cutmix, c.mixup_prob, c.mixup_switch_prob, c.label_smoothing) == (0.8, 1.0, 1.0, 0.5, 0.1)
    assert (c.model_ema, c.drop_path, c.schedule, c.warmup_lr, c.batch_size) == (0.99996, 0.1, "cosine_epoch", 1e-6,
                                                                               1024)
    v = validate(RunConfig(backbone="vit_cifar_tiny", depth=1, recipe="vit_cifar", dataset="cifar100",
                           download=True))
    assert (v.auto_augment, v.mixup, v.cutmix, v.mixup_prob, v.repeated_aug, v.epochs, v.warmup_epochs) == (
        "cifar10", 1.0, 1.0, 0.5, 3, 100, 10)


def test_imagenet_training_images_get_randaugment_bicubic_crops_and_erasing_and_eval_images_none(tmp_path):
    write_imagefolder(tmp_path, classes=2, per_class=2, size=40)
    train, evaluate, _ = build_loaders("imagenet", 2, 2, data_root=tmp_path, image_size=32, augment=DEIT_AUGMENT)
    names = transform_names(train.dataset.dataset)
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "RandAugment", "ToTensor", "Normalize",
                     "RandomErasing"]
    assert train.dataset.dataset.transform.transforms[0].interpolation.value == "bicubic"
    assert train.dataset.dataset.transform.transforms[-1].mode == "pixel"
    assert transform_names(evaluate.dataset) == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert evaluate.dataset.transform.transforms[0].interpolation.value == "bicubic"
    # Seeded per sample: the same seed gives the same augmented batch, another seed another one.
    again, _, _ = build_loaders("imagenet", 2, 2, data_root=tmp_path, image_size=32, augment=DEIT_AUGMENT)
    other, _, _ = build_loaders("imagenet", 2, 2, data_root=tmp_path, image_size=32, augment=DEIT_AUGMENT, seed=1)
    first = next(iter(train))[0]
    assert torch.equal(first, next(iter(again))[0]) and not torch.equal(first, next(iter(other))[0])


def test_cifar_training_images_get_the_autoaugment_cifar_policy_after_crop_and_flip(tmp_path):
    write_cifar10(tmp_path, n_train=12, n_test=4)
    train, evaluate, _ = build_loaders("cifar10", 4, 4, data_root=tmp_path, augment=Augment("cifar10", reprob=0.25))
    assert transform_names(train.dataset.dataset) == ["RandomCrop", "RandomHorizontalFlip", "AutoAugment",
                                                      "ToTensor", "Normalize", "RandomErasing"]
    assert transform_names(evaluate.dataset) == ["ToTensor", "Normalize"]
    assert next(iter(train))[0].shape == (4, 3, 32, 32)


def test_repeated_augmentation_draws_each_image_three_times_in_a_row_with_three_augmentations(tmp_path):
    write_cifar10(tmp_path, n_train=30, n_test=4)
    train, _, _ = build_loaders("cifar10", 6, 4, data_root=tmp_path, repeats=3, augment=Augment(reprob=0.0))
    pairs = list(train.sampler)
    assert len(pairs) == 30 and len(train) == 5  # an epoch is len(dataset) draws: a third of the images, thrice
    indices = [i for i, _ in pairs]
    assert all(indices[k] == indices[k + 1] == indices[k + 2] for k in range(0, 30, 3))
    assert len({s for _, s in pairs}) == 30  # every copy its own augmentation seed
    images = next(iter(train))[0]
    assert not torch.equal(images[0], images[1])  # the same image, two random crops/flips
    train.sampler.set_epoch(0)
    assert list(train.sampler) == pairs  # (seed, epoch) fixes the epoch
    train.sampler.set_epoch(1)
    assert list(train.sampler) != pairs


def test_bad_augmentation_settings_fail_validation_with_what_is_allowed():
    with pytest.raises(ConfigError, match=r"auto_augment 'autoaug'.*rand-m9-mstd0.5-inc1.*cifar10"):
        validate(RunConfig(auto_augment="autoaug"))
    with pytest.raises(ConfigError, match=r"auto_augment 'rand-x9'.*timm"):
        validate(RunConfig(auto_augment="rand-x9"))
    with pytest.raises(ConfigError, match=r"even batch_size"):
        validate(RunConfig(mixup=0.8, batch_size=7))
    with pytest.raises(ConfigError, match=r"interpolation must be one of bilinear, bicubic"):
        validate(RunConfig(interpolation="nearest"))


class Recorder(torch.nn.Module):
    """Logits of a fixed linear map; keeps what it was given."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.fc = torch.nn.Linear(3 * 8 * 8, classes)

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.fc(x.flatten(1))


def mixup_task(**kw):
    c = validate(RunConfig(dataset="synthetic", synthetic={"num_classes": 4, "image_size": 8, "train_size": 8,
                                                           "eval_size": 8}, recipe="smoke", batch_size=8, **kw))
    task = task_for(c)
    train, evaluate, _ = task.build_data(World(), 8, 8)
    return task, train, evaluate


def test_mixup_and_cutmix_mix_training_batches_only_and_train_on_timm_s_soft_targets():
    task, train, evaluate = mixup_task(mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    net = Recorder()
    x, y = next(iter(train))
    task.seed_step(0, 0, 0)
    loss, sums = task.step(net, (x.clone(), y))
    mixed = net.seen[-1]
    assert not torch.allclose(mixed, x)  # the batch the model saw was mixed
    # By hand: timm's Mixup with the same numpy draws, then the soft-target cross-entropy.
    from timm.data import Mixup

    task.seed_step(0, 0, 0)
    again, soft = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=4)(x.clone(), y)
    assert torch.equal(again, mixed)
    assert soft.sum(1).allclose(torch.ones(8)) and soft.min() >= 0.1 / 4 * 0.999
    want = (-soft * F.log_softmax(net.fc(mixed.flatten(1)), 1)).sum(1).mean()
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    # The same step seed mixes the same way (a resumed run), another step another way.
    task.seed_step(0, 1, 0)
    task.step(net, (x.clone(), y))
    assert not torch.equal(net.seen[-1], mixed)
    # Evaluation sees the images as they are.
    net.seen.clear()
    task.evaluate(net, evaluate, World())
    eval_x = next(iter(evaluate))[0]
    assert torch.equal(net.seen[0], eval_x)


def test_without_mixup_the_loss_is_plain_cross_entropy_with_label_smoothing():
    task, train, _ = mixup_task(label_smoothing=0.1)
    assert task.mixer is None
    net = Recorder()
    x, y = next(iter(train))
    loss, _ = task.step(net, (x, y))
    assert torch.equal(net.seen[-1], x)
    assert float(loss.detach()) == pytest.approx(float(F.cross_entropy(net.fc(x.flatten(1)), y, label_smoothing=0.1)))


def tiny_vit(**kw):
    return RunConfig(method="mrla_light", backbone="vit_cifar_tiny", depth=2, dataset="synthetic",
                     synthetic={"num_classes": 4, "train_size": 32, "eval_size": 16}, recipe="vit_cifar", epochs=2,
                     batch_size=8, eval_batch_size=16, model_ema=0.9, measure=False, keep_checkpoints="all", **kw)


def test_the_model_ema_is_evaluated_beside_the_model_recorded_and_differs_from_it(tmp_path):
    record = Run(tiny_vit(), tmp_path).run()
    m = record["metrics"]
    assert {"top1_final", "top1_best", "top1_ema_final", "top1_ema_best", "top5_ema_final"} <= set(m)
    assert all("ema_eval_top1" in h and "eval_top1" in h for h in record["history"])
    assert m["top1_ema_best"] == max(h["ema_eval_top1"] for h in record["history"])
    ckpt = torch.load(tmp_path / "checkpoints" / f"{record['run_id']}.pt", weights_only=False)
    model, ema = ckpt["model"], ckpt["ema"]
    assert model.keys() == ema.keys()
    assert any(not torch.equal(model[k], ema[k]) for k in model if model[k].is_floating_point())
    # decay 0.9 over 8 steps from the initial weights: EMA = 0.9^8 init + sum 0.1 * 0.9^k w_{8-k}, not the model.
    assert not torch.allclose(model["head.weight"], ema["head.weight"])


def test_a_run_stopped_mid_epoch_resumes_its_ema_and_mixup_to_the_same_record(tmp_path):
    from test_train import StopAfter

    from lai_bench.train.lifecycle import Interrupted

    reference = Run(tiny_vit(), tmp_path / "ref").run()
    with pytest.raises(Interrupted):
        Run(tiny_vit(), tmp_path / "cut", stop=StopAfter(5)).run()
    resumed = Run(tiny_vit(), tmp_path / "cut").run()
    for got, want in zip(resumed["history"], reference["history"]):
        for key in ("train_loss", "eval_top1", "ema_eval_top1", "ema_eval_loss"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key


def test_the_new_recipe_fields_leave_every_sgd_run_id_as_it_was():
    base = RunConfig(method="dla_l", recipe="cifar")
    explicit = RunConfig(method="dla_l", recipe="cifar", auto_augment=None, interpolation="bilinear", reprob=0.0,
                         repeated_aug=1, mixup=0.0, cutmix=0.0, mixup_prob=1.0, mixup_switch_prob=0.5,
                         model_ema=0.0, warmup_lr=0.0)
    assert base.run_id() == explicit.run_id()
    assert RunConfig(method="dla_l", recipe="cifar", mixup=0.2).run_id() != base.run_id()
    assert np.isfinite(validate(base).lr)
