"""lai_bench.data on small datasets written in the real on-disk formats (CPU, a few seconds)."""
import pickle

import numpy as np
import pytest
import torch
import torchvision
from data_files import class_colours, make_separable_cifar, write_cifar10, write_cifar100, write_imagefolder
from torch.utils.data import DistributedSampler

from lai_bench.data import (
    CIFAR_MEAN,
    CIFAR_STD,
    DATASETS,
    DatasetInfo,
    DatasetNotFoundError,
    DeviceCifarLoader,
    build_datasets,
    build_loaders,
    dataset_info,
)

MEAN = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
STD = torch.tensor(CIFAR_STD).view(3, 1, 1)
SMALL = dict(num_classes=5, image_size=16, train_size=40, eval_size=21, seed=3)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_train=100, n_test=50, seed=0)
    write_cifar100(root, n_train=200, n_test=60, seed=1)
    return root


def raw_cifar(folder, files, label_key):
    """Images [N, 3, 32, 32] uint8 and labels straight from the pickles, read the way the CIFAR website does."""
    entries = [pickle.loads((folder / f).read_bytes(), encoding="bytes") for f in files]
    data = np.concatenate([e[b"data"] for e in entries]).reshape(-1, 3, 32, 32)
    return torch.from_numpy(data), torch.tensor(sum((e[label_key] for e in entries), []))


def normalise(images_u8):
    return (images_u8.float() / 255 - MEAN) / STD


def collect(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------------------------------------- formats and errors


def test_written_cifar_has_the_official_layout(cifar_root):
    folder = cifar_root / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)])
    batch = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (20, 3072)
    assert len(batch[b"labels"]) == 20
    assert pickle.loads((folder / "batches.meta").read_bytes(), encoding="bytes")[b"label_names"][0] == b"airplane"
    folder = cifar_root / "cifar-100-python"
    train = pickle.loads((folder / "train").read_bytes(), encoding="bytes")
    assert {b"data", b"fine_labels", b"coarse_labels"} <= set(train) and train[b"data"].shape == (200, 3072)
    assert len(pickle.loads((folder / "meta").read_bytes(), encoding="bytes")[b"fine_label_names"]) == 100
    # Stock torchvision insists on the official md5s: the reason build_datasets uses CIFAR10Files/CIFAR100Files.
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        torchvision.datasets.CIFAR10(cifar_root, download=False)


@pytest.mark.parametrize("fn", [dataset_info, build_datasets, lambda n: build_loaders(n, 2, 2)])
def test_unknown_dataset_lists_the_allowed_names(fn):
    with pytest.raises(ValueError) as e:
        fn("mnist")
    assert all(name in str(e.value) for name in DATASETS)


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_is_one_clear_error(tmp_path, name, folder):
    with pytest.raises(DatasetNotFoundError) as e:
        build_loaders(name, 8, 8, data_root=tmp_path)
    assert isinstance(e.value, FileNotFoundError)
    assert str(tmp_path / folder) in str(e.value) and "download" in str(e.value)


def test_missing_imagenet_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train")):
        build_datasets("imagenet", data_root=tmp_path)


# ---------------------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("name, folder, files, key, classes", [
    ("cifar10", "cifar-10-batches-py", ["test_batch"], b"labels", 10),
    ("cifar100", "cifar-100-python", ["test"], b"fine_labels", 100),
])
def test_cifar_loaders(cifar_root, name, folder, files, key, classes):
    train, evaluate, info = build_loaders(name, 16, 32, data_root=cifar_root)
    n_train = 100 if name == "cifar10" else 200
    assert info == DatasetInfo(name, classes, 32, n_train, len(evaluate.dataset))
    assert dataset_info(name) == DatasetInfo(name, classes, 32, 50000, 10000)
    assert len(train) == n_train // 16  # drop_last
    x, y = next(iter(train))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= y.min() and y.max() < classes
    # Eval: the raw pickles, in file order, with only ToTensor + Normalize applied.
    images, labels = raw_cifar(cifar_root / folder, files, key)
    x, y = collect(evaluate)
    assert torch.equal(y, labels)
    torch.testing.assert_close(x, normalise(images))


def test_cifar10_reads_all_five_train_batches(cifar_root):
    train, _, _ = build_datasets("cifar10", data_root=cifar_root)
    folder = cifar_root / "cifar-10-batches-py"
    images, labels = raw_cifar(folder, [f"data_batch_{i}" for i in range(1, 6)], b"labels")
    assert torch.equal(torch.from_numpy(train.data).permute(0, 3, 1, 2), images)
    assert train.targets == labels.tolist() and train.classes[-1] == "truck"


def test_augmentation_changes_train_images_only(cifar_root):
    train, evaluate, _ = build_datasets("cifar10", data_root=cifar_root)
    plain = normalise(torch.from_numpy(train.data[:8]).permute(0, 3, 1, 2))
    torch.manual_seed(0)
    augmented = torch.stack([train[i][0] for i in range(8)])
    assert augmented.shape == plain.shape
    assert sum(not torch.equal(a, p) for a, p in zip(augmented, plain)) >= 6  # 1 in 162 crops is the identity
    assert torch.equal(evaluate[3][0], evaluate[3][0])
    torch.testing.assert_close(evaluate[3][0], normalise(torch.from_numpy(evaluate.data[3]).permute(2, 0, 1)))


# ---------------------------------------------------------------------------------------------- ImageNet layout


def test_imagefolder(tmp_path):
    write_imagefolder(tmp_path, classes=3, per_class=4, size=40, val_per_class=2)
    train, evaluate, info = build_loaders("imagenet", 4, 5, data_root=tmp_path, image_size=32)
    assert info == DatasetInfo("imagenet", 3, 32, 12, 6)
    assert dataset_info("imagenet", data_root=tmp_path, image_size=32) == info
    assert dataset_info("imagenet") == DatasetInfo("imagenet", 1000, 224, 1281167, 50000)
    x, y = next(iter(train))
    assert x.shape == (4, 3, 32, 32) and y.max() < 3
    x, y = collect(evaluate)
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 0, 1, 1, 2, 2]
    # Class colours survive the JPEG round trip and the ImageNet normalisation: brightest class is brightest.
    assert x[4:].mean() > x[:2].mean()


def test_imagefolder_val_missing_a_class_is_refused(tmp_path):
    write_imagefolder(tmp_path, classes=3, per_class=1, size=8)
    for f in (tmp_path / "val" / "n00000001").iterdir():
        f.unlink()
    (tmp_path / "val" / "n00000001").rmdir()
    with pytest.raises(ValueError, match="class folders"):
        build_datasets("imagenet", data_root=tmp_path, image_size=8)


# ---------------------------------------------------------------------------------------------- synthetic


def synthetic_tensors(**opts):
    train, evaluate, info = build_datasets("synthetic", synthetic=opts)
    return [torch.stack([ds[i][0] for i in range(len(ds))]) for ds in (train, evaluate)], \
        [train.targets, evaluate.targets], info


def test_synthetic_is_deterministic_and_seeded():
    torch.manual_seed(123)
    (a_train, a_eval), a_labels, info = synthetic_tensors(**SMALL)
    torch.manual_seed(456)  # the global RNG must not matter
    (b_train, b_eval), b_labels, _ = synthetic_tensors(**SMALL)
    assert torch.equal(a_train, b_train) and torch.equal(a_eval, b_eval) and a_labels == b_labels
    (c_train, c_eval), _, _ = synthetic_tensors(**{**SMALL, "seed": 4})
    assert not torch.equal(a_train, c_train) and not torch.equal(a_eval, c_eval)
    assert not torch.equal(a_train[: len(a_eval)], a_eval)  # the splits are different samples
    assert a_train.shape == (40, 3, 16, 16) and a_train.dtype == torch.float32
    assert sorted(set(a_labels[0])) == list(range(5)) and a_labels[0].count(0) == 8  # balanced
    assert info == DatasetInfo("synthetic", 5, 16, 40, 21)
    assert dataset_info("synthetic", **SMALL) == info == dataset_info("synthetic", synthetic=SMALL, batch_size=8)


def test_synthetic_classes_are_separable():
    # Nearest prototype recovers the label: the signal a tiny model learns from.
    train, _, _ = build_datasets("synthetic", synthetic=dict(num_classes=10, train_size=200))
    x = torch.stack([train[i][0] for i in range(200)])
    distances = torch.cdist(x.flatten(1), train.prototypes.flatten(1))
    assert (distances.argmin(1) == torch.tensor(train.targets)).float().mean() > 0.9


def test_synthetic_options_are_checked():
    with pytest.raises(TypeError, match="num_class"):
        build_datasets("synthetic", synthetic={"num_class": 3})
    with pytest.raises(ValueError, match="conflicts"):
        build_datasets("synthetic", image_size=8, synthetic={"image_size": 16})
    assert build_datasets("synthetic", image_size=8)[2].image_size == 8


# ---------------------------------------------------------------------------------------------- determinism


def batches(loader, n=3):
    return [b for _, b in zip(range(n), loader)]


def test_loader_is_deterministic_for_a_seed(cifar_root):
    def run(seed, workers=0):
        train, _, _ = build_loaders("cifar10", 16, 16, data_root=cifar_root, seed=seed, workers=workers)
        torch.randn(7)  # disturb the global RNG: augmentation must not depend on it
        return [t for batch in batches(train) + batches(train) for t in batch]

    a = run(0)
    assert all(torch.equal(p, q) for p, q in zip(a, run(0)))
    assert not torch.equal(a[0], run(1)[0])
    # Per-sample seeds: worker processes (persistent across the two passes) give the very same batches.
    assert all(torch.equal(p, q) for p, q in zip(a, run(0, workers=2)))


def test_epochs_reshuffle_and_reseeding_replays_an_epoch(cifar_root):
    train, _, _ = build_loaders("cifar10", 16, 16, data_root=cifar_root)
    first, second = collect(train), collect(train)
    assert not torch.equal(first[1], second[1])
    # What a resumed run does: pin the epoch, get that epoch's batches back, augmentation included.
    train.sampler.set_epoch(1)
    again = collect(train)
    assert torch.equal(second[0], again[0]) and torch.equal(second[1], again[1])


def test_distributed_samplers_cover_eval_exactly_once():
    ranks = [build_loaders("synthetic", 4, 4, distributed=True, num_replicas=2, rank=r, synthetic=SMALL)
             for r in range(2)]
    eval_indices = [list(ev.sampler) for _, ev, _ in ranks]
    assert sorted(eval_indices[0] + eval_indices[1]) == list(range(21))  # 21: odd, so no padding allowed
    assert sum(len(collect(ev)[1]) for _, ev, _ in ranks) == 21
    train_samplers = [tr.sampler for tr, _, _ in ranks]
    assert all(isinstance(s, DistributedSampler) and s.shuffle for s in train_samplers)
    indices = [[i for i, _ in s] for s in train_samplers]  # the train samplers yield (index, augmentation seed)
    assert sorted(indices[0] + indices[1]) == list(range(40))  # 40 divides evenly: a partition
    assert len(ranks[0][0]) == 20 // 4
    train = ranks[0][0]
    epoch0 = collect(train)
    train.sampler.set_epoch(1)
    assert not torch.equal(collect(train)[1], epoch0[1])
    train.sampler.set_epoch(0)
    assert torch.equal(collect(train)[0], epoch0[0])


# ---------------------------------------------------------------------------------------------- device-resident CIFAR


def coloured_cifar(n=64, seed=0):
    """Images [N, 32, 32, 3] uint8: red is a column gradient (shows shift and flip), green encodes the label."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10)
    images = np.zeros((n, 32, 32, 3), dtype=np.uint8)
    images[..., 0] = np.arange(32, dtype=np.uint8) * 7 + 10
    images[..., 1] = (labels * 20 + 40).astype(np.uint8)[:, None, None]
    images[..., 2] = 90
    return images, labels


def test_device_loader_eval_is_plain_normalisation():
    images, labels = coloured_cifar(70)
    loader = DeviceCifarLoader(images, labels, 32, train=False)
    assert len(loader) == 3
    x, y = collect(loader)
    torch.testing.assert_close(x, normalise(torch.from_numpy(images).permute(0, 3, 1, 2)))
    assert torch.equal(y, torch.from_numpy(labels))


def test_device_loader_crops_and_flips_each_sample_with_its_label():
    images, labels = coloured_cifar(70)
    loader = DeviceCifarLoader(images, labels, 32, train=True, seed=5)
    assert len(loader) == 2  # drop_last
    x, y = collect(loader)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    pixels = (x * STD + MEAN) * 255
    # Label alignment: the central 24x24 is never padding, and its green is the sample's label.
    centre = pixels[:, 1, 4:28, 4:28]
    assert torch.equal(((centre - 40) / 20).round().long(), y.view(-1, 1, 1).expand_as(centre))
    # Each image is one of the 9 x 9 x 2 crops/flips of its source, and many different ones are drawn.
    source = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    padded = torch.nn.functional.pad(source, (4, 4, 4, 4))
    seen = set()
    for img, label in zip(pixels.round(), y.tolist()):
        candidates = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)]
        matches = []
        for dy, dx, f in candidates:
            crop = padded[:, :, dy:dy + 32, dx:dx + 32]
            crop = crop.flip(3) if f else crop
            hit = (crop == img).flatten(1).all(1).nonzero().flatten().tolist()
            matches += [(dy, dx, f) for i in hit if labels[i] == label]
        assert matches, "an output image is no crop/flip of a source image with its label"
        seen.update(matches)
    assert len(seen) > 20 and {f for _, _, f in seen} == {False, True}


def test_device_loader_is_seeded_by_epoch():
    images, labels = coloured_cifar(64)
    loader = DeviceCifarLoader(images, labels, 16, train=True, seed=1)
    epoch0, epoch1 = collect(loader), collect(loader)
    assert not torch.equal(epoch0[0], epoch1[0])
    loader.sampler.set_epoch(0)  # the same call as for a DistributedSampler
    again = collect(loader)
    assert torch.equal(again[0], epoch0[0]) and torch.equal(again[1], epoch0[1])
    other = DeviceCifarLoader(images, labels, 16, train=True, seed=2)
    assert not torch.equal(collect(other)[1], epoch0[1])


def test_device_loader_shards():
    images, labels = coloured_cifar(21)
    ev = [collect(DeviceCifarLoader(images, labels, 4, train=False, num_replicas=2, rank=r))[1] for r in range(2)]
    assert sorted(torch.cat(ev).tolist()) == sorted(labels.tolist()) and len(ev[0]) == 11
    # Train shards: disjoint samples, equal batch counts on every rank. Identify samples by their blue value.
    images[..., 2] = np.arange(21, dtype=np.uint8)[:, None, None] * 10
    tr = [DeviceCifarLoader(images, labels, 5, train=True, num_replicas=2, rank=r) for r in range(2)]
    assert len(tr[0]) == len(tr[1]) == 2
    ids = [((collect(t)[0] * STD + MEAN) * 255)[:, 2, 16, 16].round().div(10).long().tolist() for t in tr]
    assert set(ids[0]).isdisjoint(ids[1]) and len(set(ids[0])) == 10


def test_build_loaders_gpu_resident(cifar_root):
    train, evaluate, info = build_loaders("cifar10", 16, 50, data_root=cifar_root, gpu_resident=True)
    assert isinstance(train, DeviceCifarLoader) and isinstance(evaluate, DeviceCifarLoader)
    assert info.train_size == 100 and len(train) == 6
    images, labels = raw_cifar(cifar_root / "cifar-10-batches-py", ["test_batch"], b"labels")
    x, y = collect(evaluate)
    torch.testing.assert_close(x, normalise(images))
    assert torch.equal(y, labels)
    with pytest.raises(ValueError, match="gpu_resident"):
        build_loaders("synthetic", 4, 4, gpu_resident=True)


def test_make_separable_cifar(tmp_path):
    make_separable_cifar(tmp_path, num_classes=10, n_train=50, n_test=20)
    _, evaluate, info = build_loaders("cifar10", 8, 20, data_root=tmp_path)
    x, y = collect(evaluate)
    centre = ((x * STD + MEAN) * 255).mean((2, 3))
    nearest = torch.cdist(centre, torch.tensor(class_colours(10), dtype=torch.float32)).argmin(1)
    assert torch.equal(nearest, y) and info.num_classes == 10
