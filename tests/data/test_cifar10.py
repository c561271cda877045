"""Tests of the CIFAR-10 source readers and the archive download."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import pickle
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.data import cifar10
from benchmark.data.download import download_official
from benchmark.data.prepare import prepare_dataset
from benchmark.data.store import open_split, split_digest
from benchmark.errors import UserError
from benchmark.specs import load_dataset

# Real CIFAR-10 files inside the shared data folder (see tests/conftest.py).
LOSSLESS_TARBALL = "cifar10/cifar10-lossless-subset.tar.gz"
JPEG_TARBALL = "cifar10/cifar10-jpeg.tar.gz"

# Red values of the first four pixels of train image 0 and test image 0 in the
# official python archive.
TRAIN_0_RED_START = [59, 43, 50, 68]
TEST_0_RED_START = [158, 159, 165, 166]

# Per-channel train mean of the JPEG copy (re-encoded at quality about 75). The
# official pixels give (125.31, 122.95, 113.87).
JPEG_TRAIN_MEAN = (125.27, 122.93, 113.86)
MEAN_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def spec():
    return load_dataset("cifar10")


@pytest.fixture(scope="module")
def lossless_subset(tmp_path_factory, shared_data):
    """Official pixels of train 0-3999 and test 0-999, read from the PNGs.

    Returns a dict split -> (images uint8 (N, 32, 32, 3), labels int64 (N,)),
    in official index order, plus the extracted folder under key "folder".
    """
    folder = tmp_path_factory.mktemp("lossless")
    with tarfile.open(shared_data / LOSSLESS_TARBALL) as archive:
        archive.extractall(folder, filter="data")
    top = folder / "cifar10-lossless-subset"
    rows = {"train": [], "test": []}
    with open(top / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            rows[row["split"]].append(
                (int(row["official_index"]), int(row["label"]), row["file"])
            )
    arrays = {}
    for split, entries in rows.items():
        entries.sort()
        images = np.stack(
            [np.asarray(Image.open(top / name).convert("RGB")) for *_, name in entries]
        )
        labels = np.array([label for _, label, _ in entries], dtype=np.int64)
        arrays[split] = (images, labels)
    arrays["folder"] = top
    return arrays


def _pickle_batch(images: np.ndarray, labels: np.ndarray, name: str) -> bytes:
    """Pickle images (N, 32, 32, 3) the way the official batches store them."""
    # Each row: the 1024 red values, then green, then blue, row-major.
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {
        b"batch_label": name.encode(),
        b"labels": [int(label) for label in labels],
        b"data": np.ascontiguousarray(planes),
        b"filenames": [f"{name}_{i}.png".encode() for i in range(len(images))],
    }
    return pickle.dumps(batch, protocol=2)


def _write_official(
    folder: Path, members: dict[str, bytes], tarball: bool = True
) -> Path:
    """Write members as cifar-10-batches-py/<name> into a .tar.gz or a folder."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name, data in members.items():
        (batches / name).write_bytes(data)
    if not tarball:
        return batches
    path = folder / "cifar-10-python.tar.gz"
    # Fastest gzip level: the test needs the format, not the compression.
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        archive.add(batches, arcname="cifar-10-batches-py")
    return path


def _subset_members(lossless_subset) -> dict[str, bytes]:
    """data_batch_1 with train 0-3999 and test_batch with test 0-999."""
    train_images, train_labels = lossless_subset["train"]
    test_images, test_labels = lossless_subset["test"]
    return {
        "data_batch_1": _pickle_batch(train_images, train_labels, "data_batch_1"),
        "test_batch": _pickle_batch(test_images, test_labels, "test_batch"),
    }


def _add_small_batches(members: dict[str, bytes], lossless_subset) -> None:
    """Add data_batch_2 to data_batch_5 with two images each."""
    images, labels = lossless_subset["train"]
    for name in ("data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"):
        members[name] = _pickle_batch(images[:2], labels[:2], name)


def _with_member_md5(spec, members: dict[str, bytes], archive_md5: str | None = None):
    """Return the spec with its checksums replaced by those of `members`."""
    member_md5 = {
        name: hashlib.md5(data, usedforsecurity=False).hexdigest()
        for name, data in members.items()
    }
    source = dataclasses.replace(
        spec.source,
        member_md5=member_md5,
        md5=archive_md5 or spec.source.md5,
    )
    return dataclasses.replace(spec, source=source)


# ----------------------------------------------------------------------------
# Official archive


def test_official_archive_matches_png_pixels(tmp_path, spec, lossless_subset):
    """Check that the official-format reader returns exactly the PNG pixels."""
    path = _write_official(tmp_path, _subset_members(lossless_subset))
    data = cifar10.read_source(path, spec, partial=True, progress=False)
    for split in ("train", "test"):
        images, labels = lossless_subset[split]
        arrays = data.splits[split]
        assert arrays.images.dtype == np.uint8
        assert arrays.images.shape == images.shape
        np.testing.assert_array_equal(arrays.images, images)
        np.testing.assert_array_equal(arrays.labels, labels)
        assert arrays.keys == [f"{split}/{i:05d}" for i in range(len(images))]
    assert data.source["format"] == "official-archive"
    assert data.source["checksums_verified"] is False


def test_official_archive_known_pixel_values(tmp_path, spec, lossless_subset):
    """Check the published red values of train image 0 and test image 0."""
    path = _write_official(tmp_path, _subset_members(lossless_subset))
    data = cifar10.read_source(path, spec, partial=True, progress=False)
    assert data.splits["train"].images[0, 0, :4, 0].tolist() == TRAIN_0_RED_START
    assert data.splits["test"].images[0, 0, :4, 0].tolist() == TEST_0_RED_START


def test_official_member_md5_mismatch_rejected(tmp_path, spec, lossless_subset):
    """Check that a member whose MD5 differs from the spec is rejected by name."""
    members = _subset_members(lossless_subset)
    _add_small_batches(members, lossless_subset)
    path = _write_official(tmp_path, members)
    with pytest.raises(UserError, match=r"data_batch_1 .* has MD5 [0-9a-f]{32}"):
        cifar10.read_source(path, spec, progress=False)


def test_official_full_member_wrong_md5_rejected(tmp_path, spec):
    """Check that partial does not excuse a full 10,000-image member."""
    images = np.zeros((10000, 32, 32, 3), dtype=np.uint8)
    labels = np.zeros(10000, dtype=np.int64)
    members = {"data_batch_1": _pickle_batch(images, labels, "data_batch_1")}
    path = _write_official(tmp_path, members, tarball=False)
    with pytest.raises(UserError, match="data_batch_1 .* has MD5"):
        cifar10.read_source(path, spec, partial=True, progress=False)


def test_official_missing_members_rejected(tmp_path, spec, lossless_subset):
    """Check that an incomplete archive needs partial=True."""
    members = _subset_members(lossless_subset)
    path = _write_official(tmp_path, members)
    checked_spec = _with_member_md5(spec, members)
    with pytest.raises(UserError, match="is missing data_batch_2, .*data_batch_5"):
        cifar10.read_source(path, checked_spec, progress=False)


def test_official_matching_md5_verified(tmp_path, spec, lossless_subset):
    """Check that members and archive with the spec's MD5s are marked verified."""
    members = _subset_members(lossless_subset)
    _add_small_batches(members, lossless_subset)
    path = _write_official(tmp_path, members)
    archive_md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    checked_spec = _with_member_md5(spec, members, archive_md5)
    data = cifar10.read_source(path, checked_spec, progress=False)
    assert data.source["checksums_verified"] is True
    assert data.source["md5_matches"] is True
    assert data.source["md5"] == archive_md5
    assert all(m["md5_matches"] for m in data.source["members"].values())
    # Batch 2 starts at global index 10000, whatever batch 1 holds.
    keys = data.splits["train"].keys
    assert keys[4000:4003] == ["train/10000", "train/10001", "train/20000"]


def test_official_folder_equals_archive(tmp_path, spec, lossless_subset):
    """Check that the extracted folder gives the same arrays as the archive."""
    members = _subset_members(lossless_subset)
    archive = _write_official(tmp_path / "archive", members)
    folder = _write_official(tmp_path / "folder", members, tarball=False)
    from_archive = cifar10.read_source(archive, spec, partial=True, progress=False)
    from_folder = cifar10.read_source(folder, spec, partial=True, progress=False)
    assert from_folder.source["format"] == "official-folder"
    for split in ("train", "test"):
        assert from_folder.splits[split].keys == from_archive.splits[split].keys
        np.testing.assert_array_equal(
            from_folder.splits[split].images, from_archive.splits[split].images
        )
    # The parent of cifar-10-batches-py/ is accepted too.
    from_parent = cifar10.read_source(folder.parent, spec, partial=True, progress=False)
    assert from_parent.splits["test"].keys == from_archive.splits["test"].keys


class _RemoveFile:
    """Pickles into a call of os.remove, which a plain unpickler would run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.remove, (str(self.path),))


def test_official_pickle_cannot_run_code(tmp_path, spec):
    """Check that a pickle naming a non-numpy global is rejected, not called."""
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("still here")
    payload = pickle.dumps({b"data": _RemoveFile(sentinel), b"labels": []}, protocol=2)
    path = _write_official(tmp_path / "source", {"test_batch": payload}, tarball=False)
    with pytest.raises(UserError, match="cannot unpickle test_batch"):
        cifar10.read_source(path, spec, partial=True, progress=False)
    assert sentinel.exists()


# ----------------------------------------------------------------------------
# Lossless subset (labels.csv)


def test_lossless_subset_equals_official_reader(
    tmp_path, spec, lossless_subset, shared_data
):
    """Check that labels.csv keys, pixels and digests equal the official reader's."""
    official = cifar10.read_source(
        _write_official(tmp_path, _subset_members(lossless_subset)),
        spec,
        partial=True,
        progress=False,
    )
    subset = cifar10.read_source(shared_data / LOSSLESS_TARBALL, spec, progress=False)
    assert subset.source["format"] == "lossless-subset"
    assert subset.source["container"] == "tarball"
    assert len(subset.source["sha256"]) == 64
    for split in ("train", "test"):
        assert subset.splits[split].keys == official.splits[split].keys
        np.testing.assert_array_equal(
            subset.splits[split].labels, official.splits[split].labels
        )
        np.testing.assert_array_equal(
            subset.splits[split].images, official.splits[split].images
        )


def test_lossless_subset_label_mismatch_rejected(tmp_path, spec, lossless_subset):
    """Check that a class_name that disagrees with the label is rejected."""
    folder = tmp_path / "subset"
    (folder / "train").mkdir(parents=True)
    image = lossless_subset["train"][0][0]
    Image.fromarray(image).save(folder / "train" / "00000.png")
    (folder / "labels.csv").write_text(
        "split,official_index,label,class_name,file\ntrain,0,6,truck,train/00000.png\n"
    )
    with pytest.raises(UserError, match="line 2: class_name 'truck'"):
        cifar10.read_source(folder, spec, partial=True, progress=False)


# ----------------------------------------------------------------------------
# Class-named folders


# (split, class, file stem) of a small class-folder source. Stems 2 and 10
# check numeric ordering; automobile comes before cat by class index.
CLASS_FOLDER_FILES = [
    ("train", "cat", "1"),
    ("train", "airplane", "10"),
    ("train", "airplane", "2"),
    ("train", "automobile", "0"),
    ("train", "airplane", "0"),
    ("test", "truck", "0"),
    ("test", "airplane", "3"),
]
CLASS_FOLDER_TRAIN_KEYS = [
    "train/airplane/0.png",
    "train/airplane/2.png",
    "train/airplane/10.png",
    "train/automobile/0.png",
    "train/cat/1.png",
]


def _write_class_folders(top: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write random 32x32 PNGs in class folders; return pixels by key."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for split, class_name, stem in CLASS_FOLDER_FILES:
        folder = top / split / class_name
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{stem}.png")
        pixels[f"{split}/{class_name}/{stem}.png"] = image
    return pixels


def _tar_shuffled(top: Path, path: Path, seed: int = 0) -> Path:
    """Tar the files under top.parent in a shuffled order."""
    files = sorted(p for p in top.rglob("*") if p.is_file())
    random.Random(seed).shuffle(files)
    with tarfile.open(path, "w:gz") as archive:
        for file in files:
            archive.add(file, arcname=file.relative_to(top.parent).as_posix())
    return path


def test_class_folders_order_independent_of_tar(tmp_path, spec):
    """Check that a shuffled tarball gives the folder's keys, order and digest."""
    top = tmp_path / "images" / "cifar10-small"
    pixels = _write_class_folders(top)
    tarball = _tar_shuffled(top, tmp_path / "small.tar.gz")
    from_folder = cifar10.read_source(top.parent, spec, partial=True, progress=False)
    from_tar = cifar10.read_source(tarball, spec, partial=True, progress=False)
    assert from_folder.source["format"] == "class-folders"
    assert from_tar.source["format"] == "class-folders"
    assert from_folder.splits["train"].keys == CLASS_FOLDER_TRAIN_KEYS
    assert from_folder.splits["train"].labels.tolist() == [0, 0, 0, 1, 3]
    test_keys = ["test/airplane/3.png", "test/truck/0.png"]
    assert from_folder.splits["test"].keys == test_keys
    for split in ("train", "test"):
        folder_arrays = from_folder.splits[split]
        tar_arrays = from_tar.splits[split]
        assert tar_arrays.keys == folder_arrays.keys
        np.testing.assert_array_equal(tar_arrays.images, folder_arrays.images)
        np.testing.assert_array_equal(tar_arrays.labels, folder_arrays.labels)
        for key, image in zip(folder_arrays.keys, folder_arrays.images):
            np.testing.assert_array_equal(image, pixels[key])


def test_class_folders_top_folder_optional(tmp_path, spec):
    """Check that the folder holding train/ and test/ is accepted directly."""
    top = tmp_path / "top"
    _write_class_folders(top)
    data = cifar10.read_source(top, spec, partial=True, progress=False)
    assert data.splits["train"].keys == CLASS_FOLDER_TRAIN_KEYS


def test_class_folders_unknown_class_rejected(tmp_path, spec):
    """Check that a folder name outside the ten classes is rejected."""
    top = tmp_path / "top"
    _write_class_folders(top)
    (top / "train" / "plane").mkdir()
    Image.new("RGB", (32, 32)).save(top / "train" / "plane" / "0.png")
    with pytest.raises(UserError, match="unknown class folder 'plane'"):
        cifar10.read_source(top, spec, partial=True, progress=False)


def test_class_folders_wrong_size_rejected(tmp_path, spec):
    """Check that an image that is not 32x32 is rejected by file name."""
    top = tmp_path / "top"
    _write_class_folders(top)
    Image.new("RGB", (64, 32)).save(top / "test" / "truck" / "0.png")
    with pytest.raises(UserError, match=r"'test/truck/0.png' .* is 64x32"):
        cifar10.read_source(top, spec, partial=True, progress=False)


def test_class_folders_stray_file_rejected(tmp_path, spec):
    """Check that a non-image file inside a class folder is rejected."""
    top = tmp_path / "top"
    _write_class_folders(top)
    (top / "train" / "cat" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="unexpected file 'train/cat/notes.txt'"):
        cifar10.read_source(top, spec, partial=True, progress=False)


def test_class_folders_hidden_files_skipped(tmp_path, spec):
    """Check that hidden files such as macOS '._' copies are ignored."""
    top = tmp_path / "top"
    _write_class_folders(top)
    (top / "train" / "cat" / "._1.png").write_bytes(b"resource fork")
    data = cifar10.read_source(top, spec, partial=True, progress=False)
    assert data.splits["train"].keys == CLASS_FOLDER_TRAIN_KEYS


def test_corrupt_image_rejected(tmp_path, spec):
    """Check that an undecodable image is rejected by file name."""
    top = tmp_path / "top"
    _write_class_folders(top)
    (top / "train" / "cat" / "1.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot decode image 'train/cat/1.png'"):
        cifar10.read_source(top, spec, partial=True, progress=False)


# ----------------------------------------------------------------------------
# Layout detection and spec checks


def _make_empty_folder(path: Path) -> None:
    path.mkdir()


def _make_text_file(path: Path) -> None:
    path.write_bytes(b"plain text, not a tarball")


def _make_tarball_of_text(path: Path) -> None:
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("readme.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))


@pytest.mark.parametrize(
    "make_source",
    [
        pytest.param(_make_empty_folder, id="empty-folder"),
        pytest.param(_make_text_file, id="not-tar"),
        pytest.param(_make_tarball_of_text, id="tar-without-images"),
    ],
)
def test_unrecognised_source_lists_layouts(tmp_path, spec, make_source):
    """Check that an unknown source gives one line listing the accepted layouts."""
    path = tmp_path / "source"
    make_source(path)
    with pytest.raises(UserError) as raised:
        cifar10.read_source(path, spec, progress=False)
    message = str(raised.value)
    assert "\n" not in message
    assert "cifar-10-python.tar.gz" in message
    assert "labels.csv" in message
    assert "{train,test}/<class>" in message


def test_missing_source_rejected(tmp_path, spec):
    """Check that a path that does not exist is reported as not found."""
    with pytest.raises(UserError, match="source not found"):
        cifar10.read_source(tmp_path / "absent.tar.gz", spec, progress=False)


def test_truncated_tarball_rejected(tmp_path, spec):
    """Check that a cut-off .tar.gz gives a one-line error."""
    top = tmp_path / "images" / "top"
    _write_class_folders(top)
    tarball = _tar_shuffled(top, tmp_path / "small.tar.gz")
    data = tarball.read_bytes()
    tarball.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as raised:
        cifar10.read_source(tarball, spec, partial=True, progress=False)
    assert "\n" not in str(raised.value)


def test_spec_with_other_shape_rejected(tmp_path, spec):
    """Check that the reader rejects a spec asking for another image size."""
    other = dataclasses.replace(spec, resolution=64)
    with pytest.raises(UserError, match="32x32x3 only"):
        cifar10.read_source(tmp_path, other, progress=False)


# ----------------------------------------------------------------------------
# Download (local file:// URLs only)


def _spec_for_url(spec, url: str, md5: str):
    source = dataclasses.replace(spec.source, url=url, md5=md5)
    return dataclasses.replace(spec, source=source)


def test_download_official_from_file_url(tmp_path, spec):
    """Check that a download with the right MD5 lands under the spec's file name."""
    payload = os.urandom(3 * 1024 * 1024 + 17)
    served = tmp_path / "served.bin"
    served.write_bytes(payload)
    md5 = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    local_spec = _spec_for_url(spec, served.as_uri(), md5)
    path = download_official(local_spec, tmp_path / "downloads", progress=False)
    assert path == tmp_path / "downloads" / spec.source.filename
    assert path.read_bytes() == payload
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_download_reuses_matching_file(tmp_path, spec):
    """Check that an existing file with the right MD5 is reused without a request."""
    destination = tmp_path / spec.source.filename
    destination.write_bytes(b"archive")
    md5 = hashlib.md5(b"archive", usedforsecurity=False).hexdigest()
    unreachable = _spec_for_url(spec, (tmp_path / "absent").as_uri(), md5)
    assert download_official(unreachable, tmp_path, progress=False) == destination


def test_download_md5_mismatch_leaves_no_file(tmp_path, spec):
    """Check that a download with the wrong MD5 is rejected and not kept."""
    served = tmp_path / "served.bin"
    served.write_bytes(b"something else")
    local_spec = _spec_for_url(spec, served.as_uri(), "0" * 32)
    with pytest.raises(UserError, match="has MD5 .* --source PATH"):
        download_official(local_spec, tmp_path / "downloads", progress=False)
    assert list((tmp_path / "downloads").iterdir()) == []


def test_download_failure_says_pass_source(tmp_path, spec):
    """Check that a failed request gives one line asking for --source PATH."""
    local_spec = _spec_for_url(spec, (tmp_path / "absent").as_uri(), "0" * 32)
    with pytest.raises(UserError) as raised:
        download_official(local_spec, tmp_path / "downloads", progress=False)
    message = str(raised.value)
    assert message.startswith("failed to download file://")
    assert "--source PATH" in message
    assert "\n" not in message


# ----------------------------------------------------------------------------
# Real data


# Digests of the shared JPEG copy as decoded by Pillow 13.0 with libjpeg-turbo 3.2.0.
# Another JPEG decoder may change pixels, and then these digests, on purpose:
# the store would no longer hold the same dataset.
JPEG_TRAIN_DIGEST = "d79c949e24413e7dd7a425ed375cbca7f17824a4fe0e97e38dac5a2b3ce9413e"
JPEG_TEST_DIGEST = "5715a37fc6d580c676401f74f04d5c9ca65fb52829a0db63d79c12c28c9be85e"


# About 15-20 s on 2 CPU cores: the only test that decodes all 60,000 images.
def test_prepare_shared_jpeg_copy(tmp_path, spec, shared_data):
    """Check counts and per-channel train mean of the shared JPEG copy."""
    summary = prepare_dataset(
        spec, shared_data / JPEG_TARBALL, tmp_path, progress=False
    )
    assert summary["splits"]["train"]["count"] == 50000
    assert summary["splits"]["test"]["count"] == 10000
    assert summary["reference_split"] is True
    assert summary["source"]["format"] == "class-folders"
    with open_split(tmp_path, "cifar10", "train") as reader:
        images = reader.load_all()
        mean = images.reshape(-1, 3).mean(axis=0, dtype=np.float64)
        assert (
            split_digest(
                hashlib.sha256(image.tobytes()).hexdigest() for image in images
            )
            == summary["splits"]["train"]["digest"]
        )
    np.testing.assert_allclose(mean, JPEG_TRAIN_MEAN, atol=MEAN_TOLERANCE)
    assert summary["splits"]["train"]["digest"] == JPEG_TRAIN_DIGEST
    assert summary["splits"]["test"]["digest"] == JPEG_TEST_DIGEST
