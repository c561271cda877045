"""LSUN bedroom sources: the official LMDB release, or a folder of image files.

* `lsun-lmdb`: the folder `bedroom_train_lmdb` (with `data.mdb`) from the
  official `bedroom_train_lmdb.zip`, or its `data.mdb` itself. Keys are the
  LMDB keys (image ids), values are encoded images (JPEG in the 2015
  release; WebP values decode the same way).
* `image-folder`: image files under a folder; the key is the path relative to
  the folder without its suffix. An export that nests files in subfolders
  therefore gets other keys than the LMDB, and so another split.

Every image is decoded to RGB and cut to 128x128 by TensorFlow's central
crop-or-pad, as compare_gan v2 did (`benchmark.data.imageops`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from benchmark.data.sources import list_image_folder, list_lmdb, lmdb_location
from benchmark.data.streaming import Pipeline
from benchmark.errors import UserError
from benchmark.specs import DatasetSpec

logger = logging.getLogger(__name__)

PREPROCESSING = "tf_resize_with_crop_or_pad"
ACCEPTED = (
    "the official bedroom_train_lmdb folder (with data.mdb), its data.mdb file, "
    "or a folder of image files"
)


def plan_source(path: str | Path, spec: DatasetSpec) -> Pipeline:
    """List an LSUN source and return the pipeline that prepares it.

    Raises:
        UserError: the path is missing or not an accepted layout, or the spec
            requests another preprocessing.
    """
    if spec.preprocessing != PREPROCESSING or spec.channels != 3:
        raise UserError(
            f"spec {spec.path or spec.name!r} requests preprocessing "
            f"{spec.preprocessing!r} with {spec.channels} channels; the LSUN "
            f"reader produces {PREPROCESSING!r} RGB only"
        )
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"LSUN source not found: {str(path)!r}; pass {ACCEPTED} with --source"
        )
    if path.suffix == ".zip":
        raise UserError(
            f"{str(path)!r} is the zip archive; unzip it and pass the "
            "bedroom_train_lmdb folder with --source"
        )
    if lmdb_location(path) is not None:
        listing = list_lmdb(path)
        listing.description["format"] = "lsun-lmdb"
    elif path.is_dir():
        listing = list_image_folder(path)
    else:
        raise UserError(f"unrecognised LSUN source {str(path)!r}; expected {ACCEPTED}")
    logger.info("Listed %d keys in %s", len(listing.keys), path)
    size = spec.resolution
    return Pipeline(
        listing=listing,
        transform="decode_crop_or_pad",
        options={"resolution": size},
        description={
            "name": PREPROCESSING,
            "steps": [
                "decode with Pillow to RGB uint8 (first frame; grey repeated to "
                "three channels; alpha dropped; 16-bit grey keeps the high byte)",
                f"tf.image.resize_with_crop_or_pad to {size}x{size}: central crop, "
                "zero padding where smaller, no scaling",
            ],
        },
    )
