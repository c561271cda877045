"""CelebA-HQ: ProgressiveGAN HDF5 files and index-named folders built from real faces."""

from __future__ import annotations

import json
import logging
import shutil

import h5py
import numpy as np
import pytest
from conftest import FACE_COUNT, encode, write_progressive_gan_h5
from PIL import Image

from benchmark.data.imageops import box_downsample
from benchmark.data.prepare import prepare_dataset
from benchmark.data.splitrule import choose_ranked
from benchmark.data.store import MANIFEST_NAME, open_split
from benchmark.errors import UserError
from benchmark.specs import load_dataset

TEST_COUNT = 3


@pytest.fixture(scope="module")
def spec():
    return load_dataset("celebahq")


@pytest.fixture(scope="module")
def from_folder(tmp_path_factory, face_folder, spec):
    """The index-named folder prepared with a test split of TEST_COUNT."""
    root = tmp_path_factory.mktemp("celebahq-folder")
    summary = prepare_dataset(
        spec, face_folder, root, progress=False, test_count=TEST_COUNT
    )
    return root, summary


def test_folder_split_and_pixels(from_folder, face_pixels, spec):
    """Check keys, the rank split, and each image against the 8x box filter."""
    root, summary = from_folder
    keys = [f"{index:05d}" for index in range(FACE_COUNT)]
    ranked, other = choose_ranked(spec.split_rule.salt, keys, TEST_COUNT)
    assert summary["splits"]["test"]["count"] == TEST_COUNT
    assert summary["splits"]["train"]["count"] == FACE_COUNT - TEST_COUNT
    assert summary["reference_split"] is False
    for split, expected_keys in (("test", ranked), ("train", sorted(other))):
        with open_split(root, "celebahq", split) as reader:
            assert reader.keys == expected_keys
            images = reader.load_all()
        for key, image in zip(expected_keys, images, strict=True):
            np.testing.assert_array_equal(
                image, box_downsample(face_pixels[int(key)], 8)
            )


def test_h5_uses_checked_128_level(tmp_path, face_h5, from_folder, spec):
    """Check that data128x128 is used after its sample check, with the folder's digests."""
    _, folder_summary = from_folder
    summary = prepare_dataset(
        spec, face_h5, tmp_path, progress=False, test_count=TEST_COUNT
    )
    assert summary["splits"] == folder_summary["splits"]
    manifest = json.loads((tmp_path / "celebahq" / MANIFEST_NAME).read_text())
    assert manifest["source"]["format"] == "progressive-gan-hdf5"
    assert manifest["source"]["level_read"] == "data128x128"
    assert manifest["source"]["stored_level_check"]["matches"] is True
    assert manifest["source"]["stored_level_check"]["rows"] == list(range(FACE_COUNT))


def test_h5_with_wrong_128_level_falls_back(
    tmp_path, face_h5, from_folder, spec, caplog
):
    """Check that a 128 level that differs from the box filter is not used."""
    _, folder_summary = from_folder
    altered = tmp_path / "altered.h5"
    shutil.copyfile(face_h5, altered)
    with h5py.File(altered, "r+") as handle:
        handle["data128x128"][FACE_COUNT - 1, 0, 5, 5] ^= 1
    with caplog.at_level(logging.WARNING, logger="benchmark.data.celebahq"):
        summary = prepare_dataset(
            spec, altered, tmp_path / "data", progress=False, test_count=TEST_COUNT
        )
    assert "differs from the box-filtered data1024x1024" in caplog.text
    assert summary["splits"] == folder_summary["splits"]
    manifest = json.loads((tmp_path / "data" / "celebahq" / MANIFEST_NAME).read_text())
    assert manifest["source"]["level_read"] == "data1024x1024"
    assert (
        manifest["source"]["stored_level_check"]["first_difference"] == FACE_COUNT - 1
    )


def test_h5_without_lower_levels(tmp_path, face_pixels, from_folder, spec):
    """Check that an HDF5 file with only data1024x1024 gives the same store."""
    _, folder_summary = from_folder
    path = write_progressive_gan_h5(tmp_path / "only1024.h5", face_pixels, lowest=1024)
    summary = prepare_dataset(
        spec, path, tmp_path / "data", progress=False, test_count=TEST_COUNT
    )
    assert summary["splits"] == folder_summary["splits"]


def test_celebamask_names_equal_padded_names(tmp_path, face_folder, from_folder, spec):
    """Check that 0.jpg ... names (CelebAMask-HQ) give the same keys as 00000.png."""
    _, folder_summary = from_folder
    folder = tmp_path / "CelebA-HQ-img"
    folder.mkdir()
    for path in sorted(face_folder.iterdir()):
        shutil.copyfile(path, folder / f"{int(path.stem)}{path.suffix}")
    summary = prepare_dataset(
        spec, folder, tmp_path / "data", progress=False, test_count=TEST_COUNT
    )
    assert summary["splits"] == folder_summary["splits"]


def test_wrong_size_image_skipped(tmp_path, face_folder, spec):
    """Check that an image that is not 1024x1024 is skipped with its size."""
    folder = tmp_path / "faces"
    shutil.copytree(face_folder, folder)
    first = sorted(folder.iterdir())[0]
    first.unlink()
    small = Image.new("RGB", (512, 512), (10, 20, 30))
    (folder / "00000.png").write_bytes(encode(small, "PNG"))
    summary = prepare_dataset(
        spec, folder, tmp_path / "data", progress=False, test_count=2
    )
    assert summary["skipped"] == 1
    manifest = json.loads((tmp_path / "data" / "celebahq" / MANIFEST_NAME).read_text())
    assert manifest["skipped"][0]["key"] == "00000"
    assert manifest["skipped"][0]["reason"] == "image is 512x512, expected 1024x1024"


@pytest.mark.parametrize(
    ("names", "message"),
    [
        pytest.param(["00001.png", "1.jpg"], "both", id="duplicate-index"),
        pytest.param(["face.png"], "not named by a CelebA-HQ index", id="not-an-index"),
        pytest.param(
            ["30000.png"], "indices run from 0 to 29999", id="index-too-large"
        ),
        pytest.param(["notes.txt"], "no CelebA-HQ images found", id="no-images"),
    ],
)
def test_bad_folders_rejected(tmp_path, spec, names, message):
    """Check one-line errors for folders that are not CelebA-HQ by index."""
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"x")
    with pytest.raises(UserError, match=message) as raised:
        prepare_dataset(spec, folder, tmp_path / "data", progress=False, test_count=1)
    assert "\n" not in str(raised.value)


def test_h5_without_1024_level_rejected(tmp_path, spec):
    """Check that an HDF5 file without data1024x1024 is rejected."""
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["data128x128"] = np.zeros((2, 3, 128, 128), dtype=np.uint8)
    with pytest.raises(UserError, match="no dataset 'data1024x1024'"):
        prepare_dataset(spec, path, tmp_path / "data", progress=False, test_count=1)
