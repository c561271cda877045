"""CelebA-HQ sources, reduced from 1024x1024 to 128x128 as ProgressiveGAN did.

* `progressive-gan-hdf5`: `celeba-hq-1024x1024.h5` as ProgressiveGAN's
  `h5tool.py create_celeba_hq` writes it: datasets `data1024x1024` down to
  `data4x4`, uint8 (N, 3, H, W), row i holding CelebA-HQ image i. When the
  file already contains the 128x128 level, that level is used after a sample of
  rows has matched the box-filtered 1024x1024 level exactly; on any
  difference the 1024x1024 level is used for every image.
* `celebahq-folder`: the 30,000 images at 1024x1024 in one folder, named by
  CelebA-HQ index (`00000.png` ... `29999.png`, or `0.jpg` ... `29999.jpg`
  as in CelebAMask-HQ's JPEG copy, whose pixels differ from the originals).

The key of an image is its CelebA-HQ index written with five digits.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import h5py
import numpy as np

from benchmark.data.imageops import box_downsample
from benchmark.data.sources import SourceListing, walk_files
from benchmark.data.streaming import Pipeline
from benchmark.errors import UserError
from benchmark.specs import DatasetSpec

logger = logging.getLogger(__name__)

PREPROCESSING = "box_downsample"
SOURCE_SIZE = 1024
SOURCE_LEVEL = f"data{SOURCE_SIZE}x{SOURCE_SIZE}"
# Rows of the stored lower level compared with the box-filtered 1024 level.
SAMPLE_ROWS = 16
INDEX_NAME = re.compile(r"^(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)
ACCEPTED = (
    "ProgressiveGAN's celeba-hq-1024x1024.h5, or a folder of the 1024x1024 "
    "images named by CelebA-HQ index (00000.png ... or 0.jpg ...)"
)


def index_key(index: int) -> str:
    """Return the key of CelebA-HQ image `index` (five digits)."""
    return f"{index:05d}"


def plan_source(path: str | Path, spec: DatasetSpec) -> Pipeline:
    """List a CelebA-HQ source and return the pipeline that prepares it.

    Raises:
        UserError: the path is missing or not an accepted layout, it contains
            more images than the release, or the spec requests another
            preprocessing.
    """
    if (
        spec.preprocessing != PREPROCESSING
        or spec.channels != 3
        or SOURCE_SIZE % spec.resolution
    ):
        raise UserError(
            f"spec {spec.path or spec.name!r} requests {spec.preprocessing!r} to "
            f"{spec.resolution}x{spec.resolution}x{spec.channels}; the CelebA-HQ "
            f"reader box-filters {SOURCE_SIZE}x{SOURCE_SIZE} RGB by a power of two"
        )
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"CelebA-HQ source not found: {str(path)!r}; pass {ACCEPTED} with --source"
        )
    if path.is_file() and h5py.is_hdf5(path):
        pipeline = _plan_hdf5(path, spec)
    elif path.is_dir():
        pipeline = _plan_folder(path, spec)
    else:
        raise UserError(
            f"unrecognised CelebA-HQ source {str(path)!r}; expected {ACCEPTED}"
        )
    logger.info("Listed %d images in %s", len(pipeline.listing.keys), path)
    return pipeline


def _description(spec: DatasetSpec, first_step: str, shortcut: str | None = None):
    factor = SOURCE_SIZE // spec.resolution
    description = {
        "name": PREPROCESSING,
        "steps": [
            first_step,
            f"{factor}x box filter as ProgressiveGAN's dataset tool: repeated 2x2 "
            "averages in float32 without rounding between levels, then round half "
            "to even, clip to [0, 255], uint8",
        ],
    }
    if shortcut:
        description["shortcut"] = shortcut
    return description


def _check_count(count: int, spec: DatasetSpec, path: Path) -> None:
    total = spec.source.images or sum(spec.splits.values())
    if count > total:
        raise UserError(
            f"{str(path)!r} contains {count} images, more than the {total} of "
            "CelebA-HQ; check that it is the right dataset"
        )


def _plan_hdf5(path: Path, spec: DatasetSpec) -> Pipeline:
    size = spec.resolution
    lower_level = f"data{size}x{size}"
    with h5py.File(path, "r") as handle:
        if SOURCE_LEVEL not in handle:
            raise UserError(
                f"{str(path)!r} has no dataset {SOURCE_LEVEL!r}; expected "
                "ProgressiveGAN's celeba-hq-1024x1024.h5"
            )
        source = handle[SOURCE_LEVEL]
        if source.dtype != np.uint8 or source.shape[1:] != (
            3,
            SOURCE_SIZE,
            SOURCE_SIZE,
        ):
            raise UserError(
                f"{str(path)!r}: {SOURCE_LEVEL} is {source.dtype} {source.shape}, "
                f"expected uint8 (N, 3, {SOURCE_SIZE}, {SOURCE_SIZE})"
            )
        count = source.shape[0]
        _check_count(count, spec, path)
        level, check = SOURCE_LEVEL, None
        if lower_level in handle and size != SOURCE_SIZE:
            stored = handle[lower_level]
            if stored.dtype == np.uint8 and stored.shape == (count, 3, size, size):
                check = _compare_sample(source, stored, SOURCE_SIZE // size)
                if check["matches"]:
                    level = lower_level
                else:
                    logger.warning(
                        "%s: %s differs from the box-filtered %s at row %d; using "
                        "%s for every image",
                        path,
                        lower_level,
                        SOURCE_LEVEL,
                        check["first_difference"],
                        SOURCE_LEVEL,
                    )
    keys = [index_key(index) for index in range(count)]
    description = {
        "format": "progressive-gan-hdf5",
        "path": str(path.resolve()),
        "size": path.stat().st_size,
        "images": count,
        "level_read": level,
    }
    if check is not None:
        description["stored_level_check"] = check
    listing = SourceListing(
        kind="hdf5",
        path=str(path.resolve()),
        keys=keys,
        refs=list(range(count)),
        options={"dataset": level},
        description=description,
    )
    if level == SOURCE_LEVEL:
        return Pipeline(
            listing,
            "planes_box_downsample",
            {"resolution": size, "source_size": SOURCE_SIZE},
            _description(spec, f"read row i of {SOURCE_LEVEL} (CHW) as HWC"),
        )
    return Pipeline(
        listing,
        "planes",
        {"resolution": size},
        _description(
            spec,
            f"read row i of {SOURCE_LEVEL} (CHW) as HWC",
            shortcut=(
                f"rows read from {level}, which matched the box-filtered "
                f"{SOURCE_LEVEL} on every sampled row"
            ),
        ),
    )


def _compare_sample(source: h5py.Dataset, stored: h5py.Dataset, factor: int) -> dict:
    """Compare evenly spaced rows of a stored level with the box-filtered source."""
    count = source.shape[0]
    rows = sorted({int(row) for row in np.linspace(0, count - 1, SAMPLE_ROWS)})
    for row in rows:
        expected = box_downsample(
            np.ascontiguousarray(source[row].transpose(1, 2, 0)), factor
        )
        found = np.ascontiguousarray(stored[row].transpose(1, 2, 0))
        if not np.array_equal(expected, found):
            return {"rows": rows, "matches": False, "first_difference": row}
    return {"rows": rows, "matches": True}


def _plan_folder(path: Path, spec: DatasetSpec) -> Pipeline:
    files, _ = walk_files(path)
    by_index: dict[int, str] = {}
    ignored = 0
    for name in files:
        if "/" in name:
            ignored += 1
            continue
        match = INDEX_NAME.match(name)
        if match is None:
            if Path(name).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
                raise UserError(
                    f"{str(path)!r} contains {name!r}, which is not named by a "
                    "CelebA-HQ index; expected 00000.png ... 29999.png or 0.jpg "
                    "... 29999.jpg"
                )
            ignored += 1
            continue
        index = int(match.group(1))
        if index in by_index:
            raise UserError(
                f"{str(path)!r} contains both {by_index[index]!r} and {name!r} for "
                f"CelebA-HQ index {index}; remove one of them"
            )
        by_index[index] = name

    if not by_index:
        raise UserError(
            f"no CelebA-HQ images found directly in {str(path)!r}; pass the folder "
            "that contains 00000.png ... (or 0.jpg ...) itself"
        )
    total = spec.source.images or sum(spec.splits.values())
    too_large = [index for index in by_index if index >= total]
    if too_large:
        raise UserError(
            f"{str(path)!r} contains {by_index[min(too_large)]!r}, but CelebA-HQ "
            f"indices run from 0 to {total - 1}"
        )
    if ignored:
        logger.info("Ignored %d other files and subfolder entries in %s", ignored, path)

    indices = sorted(by_index)
    suffixes: dict[str, int] = {}
    for index in indices:
        suffix = Path(by_index[index]).suffix.lower()
        suffixes[suffix] = suffixes.get(suffix, 0) + 1
    listing = SourceListing(
        kind="folder",
        path=str(path.resolve()),
        keys=[index_key(index) for index in indices],
        refs=[by_index[index] for index in indices],
        description={
            "format": "celebahq-folder",
            "path": str(path.resolve()),
            "files": len(indices),
            "suffixes": dict(sorted(suffixes.items())),
            "size": sum((path / by_index[index]).stat().st_size for index in indices),
        },
    )
    return Pipeline(
        listing,
        "decode_box_downsample",
        {"resolution": spec.resolution, "source_size": SOURCE_SIZE},
        _description(
            spec,
            f"decode with Pillow to RGB uint8; an image that is not "
            f"{SOURCE_SIZE}x{SOURCE_SIZE} is skipped",
        ),
    )
