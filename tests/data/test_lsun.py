"""LSUN bedroom: an LMDB and image folders built from the real photos, through prepare and verify."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import lsun_like_key, write_lmdb
from PIL import Image

from benchmark.cli import main
from benchmark.data.imageops import resize_with_crop_or_pad
from benchmark.data.prepare import prepare_dataset, verify_dataset
from benchmark.data.splitrule import choose_ranked
from benchmark.data.store import MANIFEST_NAME, open_split, split_image_hashes
from benchmark.errors import UserError
from benchmark.specs import load_dataset

TEST_COUNT = 4


@pytest.fixture(scope="module")
def spec():
    return load_dataset("lsun")


def expected_pixels(value: bytes) -> np.ndarray:
    """Decode a value with Pillow alone and crop it with the oracle-tested op."""
    image = Image.open(io.BytesIO(value))
    if image.mode in ("I;16", "I"):
        grey = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        pixels = np.repeat(grey[..., None], 3, axis=2)
    else:
        pixels = np.asarray(image.convert("RGB"))
    return resize_with_crop_or_pad(pixels, 128, 128)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, lsun_lmdb, spec) -> tuple[Path, dict]:
    """The LMDB prepared in this process with a test split of TEST_COUNT."""
    root = tmp_path_factory.mktemp("lsun-data")
    summary = prepare_dataset(
        spec, lsun_lmdb, root, progress=False, test_count=TEST_COUNT, workers=1
    )
    return root, summary


def test_lmdb_counts_and_skipped(prepared, lsun_source_values):
    """Check split counts, the skipped keys with reasons, and the partial flag."""
    root, summary = prepared
    broken = {key: reason for key, (_, reason) in lsun_source_values.items() if reason}
    decodable = len(lsun_source_values) - len(broken)
    assert summary["splits"]["test"]["count"] == TEST_COUNT
    assert summary["splits"]["train"]["count"] == decodable - TEST_COUNT
    assert summary["skipped"] == len(broken)
    assert summary["reference_split"] is False
    manifest = json.loads((root / "lsun" / MANIFEST_NAME).read_text())
    assert manifest["partial"] is True
    assert manifest["split_rule"]["count"] == TEST_COUNT
    assert manifest["source"]["format"] == "lsun-lmdb"
    assert manifest["source"]["keys"] == len(lsun_source_values)
    skipped = {item["key"]: item["reason"] for item in manifest["skipped"]}
    assert set(skipped) == set(broken)
    for key, reason in broken.items():
        assert reason in skipped[key]
    formats = manifest["source"]["image_formats"]
    assert formats["WEBP"] >= 3
    assert formats["JPEG"] >= 5
    assert formats["PNG"] >= 5


def test_lmdb_split_follows_rank_rule(prepared, lsun_source_values, spec):
    """Check that test holds the first decodable keys by rank, train the rest by key."""
    root, _ = prepared
    broken = {key for key, (_, reason) in lsun_source_values.items() if reason}
    ranked, other = choose_ranked(
        spec.split_rule.salt,
        lsun_source_values,
        TEST_COUNT,
        decodes=lambda key: key not in broken,
    )
    with open_split(root, "lsun", "test") as reader:
        assert reader.keys == ranked
    with open_split(root, "lsun", "train") as reader:
        assert reader.keys == sorted(other)


def test_lmdb_pixels_and_hashes(prepared, lsun_source_values):
    """Check every stored image against Pillow plus the crop, and its stored hashes."""
    root, _ = prepared
    for split in ("train", "test"):
        with open_split(root, "lsun", split) as reader:
            images = reader.load_all()
            assert images.shape[1:] == (128, 128, 3)
            assert reader.labels.tolist() == [0] * len(images)
            source_hashes = reader.source_hashes
            for index, key in enumerate(reader.keys):
                value = lsun_source_values[key][0]
                np.testing.assert_array_equal(images[index], expected_pixels(value))
                assert source_hashes[index] == hashlib.sha256(value).hexdigest()
        assert len(split_image_hashes(root, "lsun", split)) == len(images)


def test_lmdb_tiny_image_padded(prepared, lsun_source_values):
    """Check that the 5x3 image is stored in the centre with zeros around it."""
    root, _ = prepared
    key = lsun_like_key("tiny")
    split = "train"
    with open_split(root, "lsun", "test") as reader:
        if key in reader.keys:
            split = "test"
    with open_split(root, "lsun", split) as reader:
        image = reader.read([reader.keys.index(key)])[0]
    tiny = np.asarray(Image.open(io.BytesIO(lsun_source_values[key][0])).convert("RGB"))
    assert tiny.shape == (3, 5, 3)
    np.testing.assert_array_equal(image[62:65, 61:66], tiny)
    image[62:65, 61:66] = 0
    assert image.max() == 0


def test_store_layout_contiguous(prepared):
    """Check the split file layout: contiguous images, hash columns, attributes."""
    root, summary = prepared
    with h5py.File(root / "lsun" / "train.h5", "r") as handle:
        images = handle["images"]
        assert images.chunks is None
        assert images.dtype == np.uint8
        assert handle["sha256"].dtype == np.dtype("S64")
        assert handle["source_sha256"].shape == images.shape[:1]
        assert handle.attrs["count"] == summary["splits"]["train"]["count"]
        assert handle.attrs["digest"] == summary["splits"]["train"]["digest"]


def test_verify_passes_then_detects_flipped_byte(tmp_path, lsun_lmdb, spec):
    """Check verify on a fresh store, then a one-line error after one pixel changes."""
    prepare_dataset(spec, lsun_lmdb, tmp_path, progress=False, test_count=TEST_COUNT)
    assert verify_dataset(spec, tmp_path, progress=False)["splits"]
    path = tmp_path / "lsun" / "train.h5"
    with h5py.File(path, "r") as handle:
        offset = handle["images"].id.get_offset() + 128 * 128 * 3 + 7
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ 1]))
    with pytest.raises(UserError, match="index 1 key") as raised:
        verify_dataset(spec, tmp_path, progress=False)
    assert "\n" not in str(raised.value)


def test_verify_detects_edited_skipped_list(tmp_path, lsun_lmdb, spec):
    """Check that dropping a skipped key from the manifest breaks the source digest."""
    prepare_dataset(spec, lsun_lmdb, tmp_path, progress=False, test_count=TEST_COUNT)
    manifest_path = tmp_path / "lsun" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["skipped"] = manifest["skipped"][1:]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="source digest"):
        verify_dataset(spec, tmp_path, progress=False)


def test_workers_give_identical_store(tmp_path, lsun_lmdb, spec, prepared):
    """Check that two worker processes write the same bytes as one."""
    root, _ = prepared
    prepare_dataset(
        spec, lsun_lmdb, tmp_path, progress=False, test_count=TEST_COUNT, workers=2
    )
    for name in ("train.h5", "test.h5", MANIFEST_NAME):
        assert (tmp_path / "lsun" / name).read_bytes() == (
            root / "lsun" / name
        ).read_bytes(), name


def test_flat_folder_equals_lmdb(tmp_path, lsun_source_values, spec, prepared):
    """Check that a flat folder with the LMDB's keys as file names gives the same store."""
    _, summary = prepared
    folder = tmp_path / "images"
    folder.mkdir()
    for key, (value, _) in lsun_source_values.items():
        (folder / f"{key}.webp").write_bytes(value)
    (folder / "README.txt").write_text("not an image, ignored")
    result = prepare_dataset(
        spec, folder, tmp_path / "data", progress=False, test_count=TEST_COUNT
    )
    assert result["source"]["format"] == "image-folder"
    assert result["splits"] == summary["splits"]
    assert result["skipped"] == summary["skipped"]


def test_nested_folder_keys(tmp_path, lsun_source_values, spec):
    """Check that a nested folder's keys are relative paths without suffix."""
    folder = tmp_path / "nested"
    for key, (value, reason) in lsun_source_values.items():
        if reason:
            continue
        target = folder / key[:2] / f"{key}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(value)
    prepare_dataset(spec, folder, tmp_path / "data", progress=False, test_count=2)
    with open_split(tmp_path / "data", "lsun", "train") as reader:
        for key in reader.keys:
            prefix, name = key.split("/")
            assert prefix == name[:2]


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        pytest.param(lambda tmp: tmp / "missing", "not found", id="missing"),
        pytest.param(
            lambda tmp: (tmp / "b.zip").write_bytes(b"PK") and tmp / "b.zip",
            "unzip it",
            id="zip",
        ),
        pytest.param(
            lambda tmp: (tmp / "e").mkdir() or tmp / "e", "no image files", id="empty"
        ),
    ],
)
def test_bad_sources_rejected(tmp_path, spec, make_source, message):
    """Check one-line errors for a missing path, the zip, and an empty folder."""
    with pytest.raises(UserError, match=message) as raised:
        prepare_dataset(spec, make_source(tmp_path), tmp_path / "data", progress=False)
    assert "\n" not in str(raised.value)


def test_duplicate_folder_keys_rejected(tmp_path, spec, lsun_source_values):
    """Check that a.jpg and a.png in one folder are rejected."""
    value = next(iter(lsun_source_values.values()))[0]
    for name in ("a.jpg", "a.png", "b.jpg"):
        (tmp_path / name).write_bytes(value)
    with pytest.raises(UserError, match="same key 'a'"):
        prepare_dataset(spec, tmp_path, tmp_path.parent / "d1", progress=False)


def test_short_source_needs_partial_or_test_count(tmp_path, lsun_lmdb, spec):
    """Check that a small source asks for --partial, and too few keys for --test-count."""
    with pytest.raises(UserError, match="--partial"):
        prepare_dataset(spec, lsun_lmdb, tmp_path, progress=False)
    with pytest.raises(UserError, match="too few for a test split of 30588"):
        prepare_dataset(spec, lsun_lmdb, tmp_path, partial=True, progress=False)
    assert not (tmp_path / "lsun").exists()


def test_nothing_decodes_rejected(tmp_path, spec):
    """Check that a source without a single image fails after its first block."""
    source = write_lmdb(
        tmp_path / "junk", {f"{index:04d}": b"junk" for index in range(6)}
    )
    with pytest.raises(UserError, match="none of the first 6 images"):
        prepare_dataset(spec, source, tmp_path / "data", progress=False, test_count=2)
    assert not (tmp_path / "data" / ".lsun.partial").exists()


def test_reference_store_checks_expected_digests(tmp_path, lsun_lmdb, spec, prepared):
    """Check that a complete source is the reference split and meets expected digests."""
    root, summary = prepared
    manifest = json.loads((root / "lsun" / MANIFEST_NAME).read_text())
    keys = manifest["source"]["keys"]
    skipped = len(manifest["skipped"])
    complete = dataclasses.replace(
        spec,
        splits={"train": keys - TEST_COUNT, "test": TEST_COUNT},
        source=dataclasses.replace(spec.source, images=keys),
    )
    result = prepare_dataset(complete, lsun_lmdb, tmp_path, progress=False)
    assert result["reference_split"] is True
    assert result["skipped"] == skipped
    assert result["splits"] == summary["splits"]
    assert result["expected_digests"] == "none in the spec"
    right = dataclasses.replace(
        complete,
        expected_digests={s: e["digest"] for s, e in summary["splits"].items()},
    )
    assert (
        verify_dataset(right, tmp_path, progress=False)["expected_digests"] == "match"
    )
    wrong = dataclasses.replace(complete, expected_digests={"test": "0" * 64})
    with pytest.raises(UserError, match="expects 0000"):
        verify_dataset(wrong, tmp_path, progress=False)


def test_cli_prepare_and_verify(tmp_path, lsun_lmdb, prepared, capsys):
    """Check `benchmark prepare lsun` and `benchmark verify lsun` with --json."""
    root, summary = prepared
    arguments = ["--root", str(tmp_path), "--no-progress", "--json"]
    assert (
        main(
            [
                "prepare",
                "lsun",
                "--source",
                str(lsun_lmdb),
                "--test-count",
                str(TEST_COUNT),
                "--workers",
                "1",
                *arguments,
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["splits"] == summary["splits"]
    assert main(["verify", "lsun", *arguments]) == 0
    assert json.loads(capsys.readouterr().out)["splits"] == summary["splits"]
    # The same request again verifies the store; another count is refused.
    assert main(["prepare", "lsun", "--test-count", str(TEST_COUNT), *arguments]) == 0
    capsys.readouterr()
    assert main(["prepare", "lsun", "--test-count", "5", *arguments]) == 2
    assert "test split of 4 images, not 5" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["prepare", "lsun", "--no-download"], "bedroom_train_lmdb.zip from http"),
        (["prepare", "cifar10", "--test-count", "3", "--source", "x"], "--test-count"),
        (["prepare", "lsun", "--workers", "0", "--source", "x"], "--workers"),
    ],
)
def test_cli_argument_errors(tmp_path, capsys, arguments, message):
    """Check exit status 2 and one line for bad prepare arguments."""
    assert main([*arguments, "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert message in error
