"""Datasets, splits, loaders: generated data only (no downloads)."""
import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from localmamba.engine import data, loaders


def test_fake_images_are_balanced_and_deterministic():
    a = data.make_fake_images(num_classes=5, num_images=50, size=16, seed=3)
    b = data.make_fake_images(num_classes=5, num_images=50, size=16, seed=3)
    assert a.images.shape == (50, 16, 16, 3) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images)
    assert np.bincount(a.targets).tolist() == [10] * 5
    assert not torch.equal(a.images, data.make_fake_images(5, 50, 16, seed=4).images)


def test_stratified_split_is_exact_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    kept, held = data.stratified_split(labels, 20, seed=0)
    assert len(held) == 20 and len(kept) == 180
    assert not set(kept) & set(held)
    assert np.bincount(labels[held], minlength=4).tolist() == [10, 5, 3, 2]
    kept2, held2 = data.stratified_split(labels, 20, seed=0)
    assert np.array_equal(held, held2)
    assert not np.array_equal(held, data.stratified_split(labels, 20, seed=1)[1])
    with pytest.raises(ValueError):
        data.stratified_split(labels, 200)


def _write_npz(path, n=60, classes=3, size=32):
    ds = data.make_fake_images(classes, n, size, seed=0)
    data.save_npz(path, ds.images.numpy(), ds.labels.numpy(), ds.classes)
    return ds


def test_npz_round_trip_and_val_split(tmp_path):
    path = tmp_path / "tiny.npz"
    ref = _write_npz(path)
    d = dict(np.load(path))
    assert set(d) == {"jpeg", "offsets", "labels", "classes"} and d["offsets"].dtype == np.int64
    ds = data.load_npz(path, workers=2)
    assert ds.images.shape == (60, 32, 32, 3) and ds.classes == ref.classes
    assert torch.equal(ds.labels, ref.labels)
    for i in (0, 59):  # image i is the JPEG between offsets[i] and offsets[i+1]
        img = Image.open(io.BytesIO(d["jpeg"][d["offsets"][i]:d["offsets"][i + 1]].tobytes()))
        assert np.array_equal(np.asarray(img.convert("RGB")), ds.images[i].numpy())
    train, val, classes = data.build_datasets("cifar10", str(path), val_split=12)
    assert (len(train), len(val)) == (48, 12) and classes == ref.classes
    assert np.bincount(val.targets).tolist() == [4, 4, 4]
    # the same images are held out every time
    _, val2, _ = data.build_datasets("cifar10", str(path), val_split=12)
    assert torch.equal(val.images, val2.images)


def test_malformed_npz_errors_say_what_is_expected(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, jpeg=np.zeros(10, np.uint8), labels=np.zeros(2, np.int64))
    with pytest.raises(data.DataError, match="offsets"):
        data.load_npz(bad)
    bad2 = tmp_path / "bad2.npz"
    np.savez(bad2, jpeg=np.zeros(10, np.uint8), offsets=np.array([0, 5, 3]), labels=np.zeros(2, np.int64),
             classes=np.array(["a"]))
    with pytest.raises(data.DataError, match="increasing"):
        data.load_npz(bad2)
    notnpz = tmp_path / "x.npz"
    notnpz.write_bytes(b"not a zip file")
    with pytest.raises(data.DataError, match="could not read"):
        data.load_npz(notnpz)


def test_missing_cifar_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.build_datasets("cifar10", str(tmp_path / "nothing"))
    msg = str(e.value)
    assert "cifar-10-batches-py" in msg and "--download" in msg and "train/<class>" in msg
    with pytest.raises(data.DataError, match="--data-dir is required"):
        data.build_datasets("cifar100", None)


def test_image_folder_layout_errors(tmp_path):
    with pytest.raises(data.DataError, match=r"train/<class>"):
        data.build_datasets("imagenet", str(tmp_path / "missing"))
    (tmp_path / "a" / "train").mkdir(parents=True)
    with pytest.raises(data.DataError, match="no class sub-folders"):
        data.build_datasets("imagenet", str(tmp_path / "a"))
    (tmp_path / "a" / "train" / "cat").mkdir()
    with pytest.raises(data.DataError, match="without images"):
        data.build_datasets("imagenet", str(tmp_path / "a"))
    root = data.make_fake_image_folder(tmp_path / "b", num_classes=2, train_per_class=3, val_per_class=1, size=16)
    (root / "val").rename(root / "elsewhere")
    with pytest.raises(data.DataError, match="--val-split"):
        data.build_datasets("imagenet", str(root))


def test_image_folders_lazy_and_in_memory(tmp_path):
    root = data.make_fake_image_folder(tmp_path / "f", num_classes=3, train_per_class=4, val_per_class=2, size=24)
    train, val, classes = data.build_datasets("imagenet", str(root), img_size=24)
    assert (len(train), len(val), classes) == (12, 6, ["class_0", "class_1", "class_2"])
    assert not isinstance(train, data.InMemoryImages)  # ImageNet folders are read per item
    train.transform = loaders.eval_transform(24)
    x, y = train[0]
    assert x.shape == (3, 24, 24)
    # a CIFAR-like folder is decoded into memory, resized to the image size
    (root / "val").rename(root / "test")
    train, val, _ = data.build_datasets("cifar10", str(root), img_size=16)
    assert isinstance(train, data.InMemoryImages) and train.images.shape == (12, 16, 16, 3) and len(val) == 6
    _, held, _ = data.build_datasets("imagenet", str(root), val_split=3)
    assert len(held) == 3 and sorted(held.targets) == [0, 1, 2]


def test_validation_alone_leaves_the_training_images_unread(tmp_path):
    root = data.make_fake_image_folder(tmp_path / "f", num_classes=3, train_per_class=4, val_per_class=2, size=16)
    for f in (root / "train").rglob("*.png"):
        f.write_bytes(b"not an image")  # decoding any training image would fail
    train, val, classes = data.build_datasets("cifar10", str(root), load_train=False)
    assert train is None and isinstance(val, data.InMemoryImages) and len(val) == 6
    assert classes == ["class_0", "class_1", "class_2"]
    (root / "val" / "class_2").rename(root / "val" / "class_9")
    with pytest.raises(data.DataError, match="differ from the training split"):  # train/'s folders still checked
        data.build_datasets("cifar10", str(root), load_train=False)
    (root / "val" / "class_9").rename(root / "val" / "class_2")
    (root / "train").rename(tmp_path / "elsewhere")
    (root / "val").rename(root / "test")
    for dataset in ("cifar10", "imagenet"):  # a folder of test/ alone
        train, val, _ = data.build_datasets(dataset, str(root), load_train=False)
        assert train is None and len(val) == 6
    with pytest.raises(data.DataError, match="train"):  # a held-out split needs them
        data.build_datasets("cifar10", str(root), val_split=3, load_train=False)
    fake_train, fake_val, _ = data.build_datasets("fake", load_train=False, fake_val_size=20)
    assert fake_train is None and torch.equal(fake_val.images, data.build_datasets("fake", fake_val_size=20)[1].images)


def test_loader_order_and_augmentation_depend_on_seed_and_epoch_only():
    ds = data.make_fake_images(4, 64, 32)
    ds.transform = loaders.train_transform(32, "pad", "rand-m9-mstd0.5-inc1", reprob=0.25)

    def first_batch(seed, epoch, noise_rng):
        torch.manual_seed(noise_rng)  # global RNG state must not matter with workers
        loader = loaders.build_loader(ds, 16, train=True, seed=seed, workers=1)
        loaders.set_loader_epoch(loader, epoch)
        return next(iter(loader))

    x1, y1 = first_batch(0, 2, 0)
    x2, y2 = first_batch(0, 2, 123)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = first_batch(0, 3, 0)
    assert not torch.equal(x1, x3)


def test_posterize_zero_bits_is_black():
    from PIL import Image

    img = Image.new("RGB", (4, 4), (200, 100, 50))
    assert np.asarray(loaders._posterize(img, 0)).max() == 0
    assert loaders._posterize(img, 8) is img


def test_device_loader_shards_and_augments():
    ds = data.make_fake_images(4, 40, 32)
    shards = []
    for rank in range(2):
        dl = loaders.DeviceLoader(ds, 8, "cpu", train=True, img_size=32, seed=1, rank=rank, world_size=2)
        dl.set_epoch(0)
        batches = list(dl)
        assert len(batches) == len(dl) == 2 and batches[0][0].shape == (8, 3, 32, 32)
        shards.append(torch.cat([y for _, y in batches]))
        again = list(dl)
        assert torch.equal(batches[0][0], again[0][0])  # same (seed, epoch, rank): same batch
        dl.set_epoch(1)
        assert not torch.equal(batches[0][0], next(iter(dl))[0])
    assert len(set(shards[0].tolist()) | set(shards[1].tolist())) > 1
    erasing = loaders.DeviceLoader(ds, 8, "cpu", train=True, img_size=32, reprob=1.0)
    assert next(iter(erasing))[0].shape == (8, 3, 32, 32)
    val = loaders.DeviceLoader(ds, 16, "cpu", train=False, img_size=32)
    xs = torch.cat([x for x, _ in val])
    assert xs.shape == (40, 3, 32, 32) and len(val) == 3
    # no augmentation at evaluation: normalised images in dataset order
    mean = torch.tensor(loaders.IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(loaders.IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    ref = (ds.images.permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert torch.allclose(xs, ref, atol=1e-5)
    # resized on the way in
    assert next(iter(loaders.DeviceLoader(ds, 4, "cpu", train=False, img_size=16)))[0].shape == (4, 3, 16, 16)


def test_device_loader_crops_from_its_generator_and_erases_from_the_global_ones():
    ds = data.make_fake_images(4, 16, 32)

    def batch(global_seed, reprob):
        random.seed(global_seed)
        torch.manual_seed(global_seed)
        return next(iter(loaders.DeviceLoader(ds, 8, "cpu", train=True, img_size=32, seed=3, reprob=reprob)))[0]

    assert torch.equal(batch(0, 0.0), batch(1, 0.0))  # crop and flip: (seed, epoch, rank) alone
    assert torch.equal(batch(0, 1.0), batch(0, 1.0))  # erasing: the global generators' state
    assert not torch.equal(batch(0, 1.0), batch(1, 1.0))
