"""Tests of the HDF5 store, its manifest, prepare and verify."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from benchmark.data import store
from benchmark.data.prepare import prepare_dataset, verify_dataset
from benchmark.data.store import (
    MANIFEST_NAME,
    SourceData,
    SplitArrays,
    image_sha256,
    open_split,
    split_digest,
    store_lock,
    verify_store,
    write_store,
)
from benchmark.errors import UserError
from benchmark.specs import load_dataset

# (split, class, file stem) of the generated class-folder source: 6 train and
# 3 test images.
SOURCE_FILES = [
    ("train", "airplane", "0"),
    ("train", "airplane", "1"),
    ("train", "airplane", "2"),
    ("train", "frog", "0"),
    ("train", "frog", "1"),
    ("train", "truck", "0"),
    ("test", "bird", "0"),
    ("test", "bird", "1"),
    ("test", "ship", "0"),
]
TRAIN_COUNT = 6
TEST_COUNT = 3


@pytest.fixture
def spec():
    """The CIFAR-10 spec with split counts matching the generated source."""
    return dataclasses.replace(
        load_dataset("cifar10"), splits={"train": TRAIN_COUNT, "test": TEST_COUNT}
    )


@pytest.fixture
def source(tmp_path) -> Path:
    """A class-folder source of random 32x32 PNGs."""
    top = tmp_path / "source" / "small"
    rng = np.random.default_rng(0)
    for split, class_name, stem in SOURCE_FILES:
        folder = top / split / class_name
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{stem}.png")
    return top


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "data"


def _random_source_data(count: int, seed: int = 0) -> SourceData:
    """Random uint8 images for a train split of `count` and a test split of 3."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, size in (("train", count), ("test", TEST_COUNT)):
        splits[split] = SplitArrays(
            images=rng.integers(0, 256, size=(size, 32, 32, 3), dtype=np.uint8),
            labels=rng.integers(0, 10, size=size).astype(np.int64),
            keys=[f"{split}/{i:05d}" for i in range(size)],
        )
    return SourceData(splits=splits, source={"format": "random", "path": "memory"})


def _stat_tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Map each path under `folder` (and itself) to (inode, mtime in ns)."""
    paths = [folder, *sorted(folder.rglob("*"))]
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


# ----------------------------------------------------------------------------
# Hash rules


def test_image_sha256_is_sha256_of_hwc_bytes():
    """Check the documented per-image rule: SHA-256 of uint8 (H, W, C) C-order bytes."""
    image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    assert image_sha256(image) == hashlib.sha256(image.tobytes()).hexdigest()
    # A non-contiguous view hashes like its C-order copy.
    view = np.asfortranarray(image)
    assert image_sha256(view) == image_sha256(image)


def test_split_digest_rule():
    """Check the documented digest rule: sorted hex digests joined by newlines."""
    hashes = ["b" * 64, "a" * 64, "c" * 64]
    text = "\n".join(["a" * 64, "b" * 64, "c" * 64])
    assert split_digest(hashes) == hashlib.sha256(text.encode("ascii")).hexdigest()


def test_split_digest_is_order_free():
    """Check that permuting images keeps the digest and one pixel changes it."""
    images = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    digest = split_digest(store.image_hashes(images))
    permuted = images[np.random.default_rng(2).permutation(len(images))]
    assert split_digest(store.image_hashes(permuted)) == digest
    changed = images.copy()
    changed[7, 3, 4, 1] ^= 1
    assert split_digest(store.image_hashes(changed)) != digest


def test_chunk_rows_fit_target():
    """Check that chunks hold 16 CIFAR images and one large image."""
    assert store.chunk_rows((32, 32, 3), 50000) == 16
    assert store.chunk_rows((32, 32, 3), 5) == 5
    assert store.chunk_rows((128, 128, 3), 1000) == 1


# ----------------------------------------------------------------------------
# Writing and reading


def test_write_store_layout(root, spec):
    """Check the files, HDF5 datasets, attributes and manifest fields."""
    data = _random_source_data(TRAIN_COUNT)
    store_dir = write_store(root, spec, data)
    assert store_dir == root / "cifar10"
    assert sorted(p.name for p in store_dir.iterdir()) == [
        MANIFEST_NAME,
        "test.h5",
        "train.h5",
    ]
    with h5py.File(store_dir / "train.h5", "r") as handle:
        images = handle["images"]
        assert images.dtype == np.uint8
        assert images.shape == (TRAIN_COUNT, 32, 32, 3)
        assert images.chunks == (TRAIN_COUNT, 32, 32, 3)
        assert images.compression is None
        assert handle["labels"].dtype == np.int64
        assert handle.attrs["dataset"] == "cifar10"
        assert handle.attrs["split"] == "train"
        assert handle.attrs["count"] == TRAIN_COUNT
        assert handle.attrs["spec_version"] == spec.version
        np.testing.assert_array_equal(images[:], data.splits["train"].images)

    manifest = json.loads((store_dir / MANIFEST_NAME).read_text())
    assert manifest["dataset"] == "cifar10"
    assert manifest["spec_version"] == spec.version
    assert (
        manifest["spec_sha256"]
        == hashlib.sha256(Path(spec.path).read_bytes()).hexdigest()
    )
    assert manifest["reference_split"] is True
    assert manifest["source"] == {"format": "random", "path": "memory"}
    libraries = {"numpy", "h5py", "pillow", "python", "benchmark"}
    assert set(manifest["libraries"]) >= libraries
    train = manifest["splits"]["train"]
    arrays = data.splits["train"]
    hashes = [image_sha256(image) for image in arrays.images]
    assert train["count"] == TRAIN_COUNT
    assert train["digest"] == split_digest(hashes)
    assert train["index_sha256"] == store.index_digest(
        arrays.keys, arrays.labels, hashes
    )
    assert "images" not in train
    with h5py.File(store_dir / "train.h5", "r") as handle:
        assert handle["sha256"][:].astype(str).tolist() == hashes
        assert "source_sha256" not in handle
    # No temporary directory is left beside the store.
    assert [p.name for p in root.iterdir() if p.name.startswith(".cifar10.tmp-")] == []


def test_write_store_rejects_short_source(root, spec):
    """Check that a source with fewer images than the spec needs partial=True."""
    data = _random_source_data(TRAIN_COUNT - 1)
    with pytest.raises(UserError, match="has 5 images for split 'train'.*--partial"):
        write_store(root, spec, data)
    assert not (root / "cifar10").exists()
    write_store(root, spec, data, partial=True)
    manifest = json.loads((root / "cifar10" / MANIFEST_NAME).read_text())
    assert manifest["reference_split"] is False
    assert manifest["partial"] is True


def test_open_split_reads(root, spec):
    """Check read, read_range, load_all, labels and keys against the arrays."""
    data = _random_source_data(40)
    spec = dataclasses.replace(spec, splits={"train": 40, "test": TEST_COUNT})
    write_store(root, spec, data)
    expected = data.splits["train"]
    with open_split(root, "cifar10", "train") as reader:
        assert len(reader) == 40
        assert reader.count == 40
        assert reader.image_shape == (32, 32, 3)
        assert reader.digest == split_digest(store.image_hashes(expected.images))
        assert reader.keys == expected.keys
        np.testing.assert_array_equal(reader.labels, expected.labels)
        np.testing.assert_array_equal(reader.load_all(), expected.images)
        np.testing.assert_array_equal(reader.read_range(3, 9), expected.images[3:9])
        assert reader.read_range(5, 5).shape == (0, 32, 32, 3)
        assert reader.read([]).shape == (0, 32, 32, 3)
        for indices in ([7, 2, 2, 39, 0], [39, 1], np.array([5, 4, 3], np.int64)):
            batch = reader.read(indices)
            assert batch.dtype == np.uint8
            np.testing.assert_array_equal(batch, expected.images[list(indices)])
        rng = np.random.default_rng(3)
        for size in (1, 5, 17, 40, 100):
            indices = rng.integers(0, 40, size)
            np.testing.assert_array_equal(
                reader.read(indices), expected.images[indices]
            )
        with pytest.raises(IndexError, match="index 40 is outside split 'train'"):
            reader.read([1, 40])
        with pytest.raises(IndexError, match="index -1"):
            reader.read([-1])
        with pytest.raises(IndexError, match=r"range \[0, 41\)"):
            reader.read_range(0, 41)


def test_open_split_missing_store(root):
    """Check that the missing-store error names `benchmark prepare`."""
    with pytest.raises(UserError, match="run `benchmark prepare cifar10`"):
        open_split(root, "cifar10", "train")


def test_open_split_unknown_split(root, spec):
    """Check that an unknown split name lists the available ones."""
    write_store(root, spec, _random_source_data(TRAIN_COUNT))
    with pytest.raises(UserError, match="available splits: test, train"):
        open_split(root, "cifar10", "validation")


def test_truncated_h5_one_line_error(root, spec):
    """Check that a truncated split file gives a one-line error with the fix."""
    store_dir = write_store(root, spec, _random_source_data(TRAIN_COUNT))
    path = store_dir / "train.h5"
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(UserError) as raised:
        open_split(root, "cifar10", "train")
    message = str(raised.value)
    assert "\n" not in message
    assert "truncated or corrupt" in message
    assert "benchmark prepare cifar10" in message


# ----------------------------------------------------------------------------
# prepare_dataset


def test_prepare_summary(root, spec, source):
    """Check the summary of a first prepare and the stored order."""
    summary = prepare_dataset(spec, source, root, progress=False)
    assert summary["already_prepared"] is False
    assert summary["reference_split"] is True
    assert summary["store"] == str(root / "cifar10")
    assert summary["source"]["format"] == "class-folders"
    assert summary["splits"]["train"]["count"] == TRAIN_COUNT
    assert summary["splits"]["test"]["count"] == TEST_COUNT
    with open_split(root, "cifar10", "train") as reader:
        assert reader.keys[0] == "train/airplane/0.png"
        assert reader.keys[-1] == "train/truck/0.png"
        assert reader.labels.tolist() == [0, 0, 0, 6, 6, 9]
        assert summary["splits"]["train"]["digest"] == reader.digest


def test_prepare_twice_writes_nothing(root, spec, source):
    """Check that a second prepare verifies and leaves every file untouched."""
    first = prepare_dataset(spec, source, root, progress=False)
    before = _stat_tree(root)
    second = prepare_dataset(spec, source, root, progress=False)
    assert second["already_prepared"] is True
    assert second["splits"] == first["splits"]
    assert _stat_tree(root) == before
    # Without a source the existing store is verified too.
    third = prepare_dataset(spec, None, root, progress=False)
    assert third["already_prepared"] is True
    assert _stat_tree(root) == before


@pytest.mark.parametrize("exception", [RuntimeError, KeyboardInterrupt])
def test_prepare_interrupted_leaves_no_store(
    root, spec, source, monkeypatch, exception
):
    """Check that a failure mid-write leaves no store and a re-run succeeds."""
    real_write_split = store._write_split
    calls = []

    def write_then_fail(path, *args):
        calls.append(path)
        if len(calls) == 2:
            raise exception("simulated interruption")
        return real_write_split(path, *args)

    monkeypatch.setattr(store, "_write_split", write_then_fail)
    with pytest.raises(exception, match="simulated interruption"):
        prepare_dataset(spec, source, root, progress=False)
    assert not (root / "cifar10").exists()
    assert [p.name for p in root.iterdir() if ".tmp-" in p.name] == []

    monkeypatch.setattr(store, "_write_split", real_write_split)
    summary = prepare_dataset(spec, source, root, progress=False)
    assert summary["already_prepared"] is False
    assert summary["splits"]["train"]["count"] == TRAIN_COUNT


def test_prepare_removes_stale_temporary(root, spec, source, caplog):
    """Check that a temporary directory of a killed run is removed and logged."""
    stale = root / ".cifar10.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "train.h5").write_bytes(b"half written")
    with caplog.at_level(logging.WARNING, logger="benchmark.data.store"):
        prepare_dataset(spec, source, root, progress=False)
    assert not stale.exists()
    assert "stale temporary directory" in caplog.text
    assert str(stale) in caplog.text


def test_prepare_rejects_incomplete_directory(root, spec, source):
    """Check that a store directory without a manifest is not overwritten."""
    (root / "cifar10").mkdir(parents=True)
    (root / "cifar10" / "train.h5").write_bytes(b"")
    with pytest.raises(UserError, match="not a complete store"):
        prepare_dataset(spec, source, root, progress=False)


def test_prepare_without_source_or_store(root, spec):
    """Check that a missing store and no source ask for --source."""
    with pytest.raises(UserError, match="--source PATH"):
        prepare_dataset(spec, None, root, progress=False)


def test_prepare_existing_store_other_source(root, spec, source, tmp_path):
    """Check that an existing store built from another source is not reused silently."""
    prepare_dataset(spec, source, root, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(UserError, match="was prepared from .*omit --source"):
        prepare_dataset(spec, other, root, progress=False)


def test_prepare_partial_store_needs_partial(root, spec, source):
    """Check that a partial store is marked and not accepted as a reference one."""
    bigger = dataclasses.replace(spec, splits={"train": 10, "test": 10})
    with pytest.raises(UserError, match="--partial"):
        prepare_dataset(bigger, source, root, progress=False)
    summary = prepare_dataset(bigger, source, root, partial=True, progress=False)
    assert summary["reference_split"] is False
    with pytest.raises(UserError, match="partial source"):
        prepare_dataset(bigger, source, root, progress=False)


def test_prepare_lock_held(root, spec, source):
    """Check that a second prepare while the lock is held is rejected."""
    with store_lock(root, "cifar10"):
        with pytest.raises(UserError, match="another process is preparing"):
            prepare_dataset(spec, source, root, progress=False)


# ----------------------------------------------------------------------------
# Verification


def _first_chunk_offset(path: Path) -> int:
    with h5py.File(path, "r") as handle:
        return handle["images"].id.get_chunk_info(0).byte_offset


def test_verify_detects_flipped_byte(root, spec, source):
    """Check that one flipped pixel byte in an .h5 file fails verification."""
    prepare_dataset(spec, source, root, progress=False)
    path = root / "cifar10" / "train.h5"
    # Byte 3072 + 5 is inside the second image of the first chunk.
    offset = _first_chunk_offset(path) + 3072 + 5
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ 0xFF]))
    with pytest.raises(UserError) as raised:
        verify_dataset(spec, root, progress=False)
    message = str(raised.value)
    assert "\n" not in message
    assert "split 'train'" in message
    assert "index 1 key 'train/airplane/1.png'" in message
    assert "expected sha256" in message
    assert "benchmark prepare cifar10" in message


def _edit_digest(manifest):
    manifest["splits"]["train"]["digest"] = "f" * 64


def _edit_count(manifest):
    manifest["splits"]["train"]["count"] = TRAIN_COUNT + 1


def _edit_index(manifest):
    manifest["splits"]["test"]["index_sha256"] = "0" * 64


def _edit_reference_flag(manifest):
    manifest["reference_split"] = False


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(_edit_digest, "manifest digest", id="digest"),
        pytest.param(_edit_count, "manifest lists 7", id="count"),
        pytest.param(_edit_index, "split 'test'.*index digest", id="index"),
        pytest.param(_edit_reference_flag, "reference_split", id="reference-flag"),
    ],
)
def test_verify_detects_edited_manifest(root, spec, source, edit, expected):
    """Check that a hand-edited manifest fails verification with the cause."""
    prepare_dataset(spec, source, root, progress=False)
    manifest_path = root / "cifar10" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    edit(manifest)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=expected) as raised:
        verify_store(root, spec)
    assert "\n" not in str(raised.value)


def _edit_stored_hash(handle):
    handle["sha256"][2] = b"0" * 64


def _edit_label(handle):
    handle["labels"][0] = 5


def _edit_key(handle):
    handle["keys"][1] = "train/airplane/9.png"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(_edit_stored_hash, "index digest", id="image-hash"),
        pytest.param(_edit_label, "index digest", id="label"),
        pytest.param(_edit_key, "index digest", id="key"),
    ],
)
def test_verify_detects_edited_split_file(root, spec, source, edit, expected):
    """Check that editing a per-image row of a split file fails verification."""
    prepare_dataset(spec, source, root, progress=False)
    with h5py.File(root / "cifar10" / "train.h5", "r+") as handle:
        edit(handle)
    with pytest.raises(UserError, match=expected) as raised:
        verify_store(root, spec)
    assert "split 'train'" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_split_image_hashes_checks_digest(root, spec, source):
    """Check that hashes edited in a split file are refused by the protocol's reader."""
    prepare_dataset(spec, source, root, progress=False)
    hashes = store.split_image_hashes(root, "cifar10", "train")
    with open_split(root, "cifar10", "train") as reader:
        assert hashes == store.image_hashes(reader.load_all())
    with h5py.File(root / "cifar10" / "train.h5", "r+") as handle:
        handle["sha256"][0] = b"0" * 64
    with pytest.raises(UserError, match="do not give the manifest's digest"):
        store.split_image_hashes(root, "cifar10", "train")


def test_verify_rejects_other_spec_version(root, spec, source):
    """Check that a store of an older spec version is reported."""
    prepare_dataset(spec, source, root, progress=False)
    newer = dataclasses.replace(spec, version=spec.version + 1)
    with pytest.raises(UserError, match="spec version 1 .* now version 2"):
        verify_dataset(newer, root, progress=False)


def test_verify_summary(root, spec, source):
    """Check that verify returns the same counts and digests as prepare."""
    prepared = prepare_dataset(spec, source, root, progress=False)
    verified = verify_dataset(spec, root, progress=False)
    assert verified["splits"] == prepared["splits"]
    assert verified["reference_split"] is True
    assert "already_prepared" not in verified


def test_store_files_not_owner_only(root, spec):
    """Check that the store gets the umask's permissions, not mkdtemp's 0700."""
    previous = os.umask(0o022)
    try:
        store_dir = write_store(root, spec, _random_source_data(TRAIN_COUNT))
    finally:
        os.umask(previous)
    assert store_dir.stat().st_mode & 0o777 == 0o755
    assert (store_dir / MANIFEST_NAME).stat().st_mode & 0o777 == 0o644
