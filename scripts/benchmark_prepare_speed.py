"""Measure `benchmark prepare lsun` throughput and shuffled reads of the store.

A benchmark, not a test: it prints figures for REPRODUCING.md.

1. Builds an LMDB like `bedroom_train_lmdb` with --images JPEG values made
   from the real LSUN sample photos (random crops scaled so the short side is
   256 and the long side 256 to 420, quality 75, like the release's values).
2. Prepares it with `--test-count` and each worker count in --workers, from
   scratch each time, and prints images/s. The stores must be byte-identical.
3. Reads shuffled minibatches of 64 from the train split of the last store
   with `SplitReader.read`, once with the file in the page cache and once
   after dropping it (POSIX_FADV_DONTNEED), and prints images/s. It does the
   same for copies of that file stored in HDF5 chunks of 1 and of 16 images.

    python scripts/benchmark_prepare_speed.py --images 30000 --workers 1 2
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import lmdb
import numpy as np
from PIL import Image

from benchmark.data.prepare import prepare_dataset
from benchmark.data.store import SplitReader
from benchmark.specs import load_dataset

SHARED = Path(os.environ.get("BENCHMARK_SHARED_DATA", "../shared/data"))


def sample_photos() -> list[Image.Image]:
    folder = SHARED / "lsun-bedroom-samples"
    photos = [
        Image.open(path).convert("RGB")
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")
    ]
    if not photos:
        raise SystemExit(
            f"no photos found in {folder}; set BENCHMARK_SHARED_DATA to the shared data folder"
        )
    return photos


def make_value(photo: Image.Image, rng: np.random.Generator) -> bytes:
    """Encode a JPEG like an LSUN value: short side 256, long side 256 to 420."""
    long_side = int(rng.integers(256, 421))
    size = (long_side, 256) if rng.random() < 0.8 else (256, long_side)
    left = int(rng.integers(0, max(1, photo.width // 8)))
    top = int(rng.integers(0, max(1, photo.height // 8)))
    crop = photo.crop((left, top, photo.width - left, photo.height - top))
    buffer = io.BytesIO()
    crop.resize(size, Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=75)
    return buffer.getvalue()


def build_lmdb(folder: Path, images: int) -> int:
    photos = sample_photos()
    rng = np.random.default_rng(0)
    total = 0
    environment = lmdb.open(str(folder), map_size=1 << 36)
    with environment.begin(write=True) as transaction:
        for index in range(images):
            key = hashlib.sha1(str(index).encode()).hexdigest()
            value = make_value(photos[index % len(photos)], rng)
            transaction.put(key.encode(), value)
            total += len(value)
    environment.close()
    return total


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "manifest.json":
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def drop_page_cache(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def shuffled_reads(path: Path, batches: int, drop: bool) -> float:
    if drop:
        drop_page_cache(path)
    else:
        path.read_bytes()
    rng = np.random.default_rng(0)
    with SplitReader(path, "lsun", "train") as reader:
        start = time.perf_counter()
        for _ in range(batches):
            indices = np.sort(rng.choice(reader.count, 64, replace=False))
            reader.read(indices)
        elapsed = time.perf_counter() - start
    return batches * 64 / elapsed


def rechunked_copy(path: Path, target: Path, images_per_chunk: int) -> Path:
    """Copy a split file, storing its `images` in chunks of N images."""
    with h5py.File(path, "r") as source, h5py.File(target, "w") as copy:
        copy.attrs.update(source.attrs)
        for name, dataset in source.items():
            if name == "images":
                chunks = (images_per_chunk, *dataset.shape[1:])
                copy.create_dataset(name, data=dataset[()], chunks=chunks)
            else:
                source.copy(dataset, copy, name)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30000)
    parser.add_argument("--test-count", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()

    spec = load_dataset("lsun")
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        scratch = Path(scratch)
        source = scratch / "bedroom_train_lmdb"
        start = time.perf_counter()
        total = build_lmdb(source, args.images)
        print(
            f"LMDB: {args.images} JPEG values, mean {total / args.images / 1024:.1f} KiB,"
            f" built in {time.perf_counter() - start:.0f} s"
        )
        digests = {}
        root = scratch / "data"
        for workers in args.workers:
            shutil.rmtree(root, ignore_errors=True)
            start = time.perf_counter()
            prepare_dataset(
                spec,
                source,
                root,
                progress=False,
                test_count=args.test_count,
                workers=workers,
            )
            elapsed = time.perf_counter() - start
            digests[workers] = tree_digest(root / "lsun")
            print(
                f"prepare, {workers} worker(s): {elapsed:.1f} s,"
                f" {args.images / elapsed:.0f} images/s (including verification)"
            )
        same = len(set(digests.values())) == 1
        print(f"stores byte-identical across worker counts: {same}")
        train = root / "lsun" / "train.h5"
        layouts = {"contiguous (as prepared)": train}
        for size in (1, 16):
            copy = rechunked_copy(train, root / "lsun" / f"chunks-{size}.h5", size)
            layouts[f"chunks of {size} image(s)"] = copy
        for layout, path in layouts.items():
            warm = shuffled_reads(path, args.batches, drop=False)
            cold = shuffled_reads(path, args.batches, drop=True)
            print(
                f"shuffled reads, {layout}, batch 64, {args.batches} batches:"
                f" {warm:.0f} images/s page cache warm, {cold:.0f} images/s dropped"
            )


if __name__ == "__main__":
    main()
