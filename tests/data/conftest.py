"""Sources in the real formats of LSUN and CelebA-HQ, built from the shared real samples.

Everything is written into pytest's temporary folders; the shared data stays
read-only.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import zlib
from pathlib import Path

import h5py
import lmdb
import numpy as np
import pytest
from PIL import Image

from benchmark.data.imageops import box_downsample

LSUN_SAMPLES = "lsun-bedroom-samples"
CELEBAHQ_SAMPLES = "celebahq-samples"
# Faces copied into the CelebA-HQ folder and HDF5 sources: PNG and JPEG files
# of the shared samples, in name order.
FACE_COUNT = 8


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    """Return `image` encoded in `image_format` by Pillow."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png_rgb16(pixels: np.ndarray) -> bytes:
    """Encode uint16 RGB (H, W, 3) as a 16-bit PNG, which Pillow cannot write."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    height, width, _ = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def lsun_like_key(name: str) -> str:
    """Return a 40-hex key like LSUN's image ids, derived from a name."""
    return hashlib.sha1(name.encode()).hexdigest()


def lsun_photos(shared_data: Path) -> dict[str, Image.Image]:
    """The real bedroom photos as RGB images, by the id in their file name."""
    photos = {}
    for path in sorted((shared_data / LSUN_SAMPLES).iterdir()):
        if path.suffix in (".png", ".jpg"):
            key = path.stem.split("__")[-1]
            photos[key] = Image.open(path).convert("RGB")
    return photos


def lsun_values(shared_data: Path) -> dict[str, tuple[bytes, str | None]]:
    """Encoded LMDB values by key, each with the reason it must be skipped or None.

    The nine real photos as JPEG (quality 75, as LSUN) and WebP, plus edge
    cases made from them: grey, CMYK, 16-bit grey and 16-bit RGB PNG, RGBA,
    palette, images smaller than 128 in one or both sides, a truncated JPEG
    and bytes that are no image.
    """
    photos = lsun_photos(shared_data)
    values: dict[str, tuple[bytes, str | None]] = {}
    for number, (key, photo) in enumerate(photos.items()):
        image_format = "WEBP" if number % 3 == 0 else "JPEG"
        values[key] = (encode(photo, image_format, quality=75), None)
    first = next(iter(photos.values()))
    grey = np.asarray(first.convert("L"), dtype=np.uint16) * 257
    edge_cases = {
        "grey": (encode(first.convert("L"), "JPEG", quality=75), None),
        "cmyk": (encode(first.convert("CMYK"), "JPEG", quality=75), None),
        "grey16": (encode(Image.fromarray(grey), "PNG"), None),
        "rgb16": (png_rgb16(np.asarray(first, dtype=np.uint16) * 257), None),
        "rgba": (encode(first.convert("RGBA"), "PNG"), None),
        "palette": (encode(first.convert("P"), "PNG"), None),
        "tiny": (encode(first.crop((10, 20, 15, 23)), "PNG"), None),
        "narrow": (encode(first.crop((0, 0, 100, 256)), "JPEG", quality=75), None),
        "truncated": (encode(first, "JPEG", quality=75)[:5000], "truncated"),
        "garbage": (b"these bytes are not an image", "not an image format"),
    }
    for name, value in edge_cases.items():
        values[lsun_like_key(name)] = value
    return values


def write_lmdb(folder: Path, values: dict[str, bytes]) -> Path:
    """Write an LMDB environment holding `values` by key (UTF-8)."""
    environment = lmdb.open(str(folder), map_size=1 << 28)
    with environment.begin(write=True) as transaction:
        for key, value in values.items():
            transaction.put(key.encode(), value)
    environment.close()
    return folder


@pytest.fixture(scope="session")
def lsun_source_values(shared_data) -> dict[str, tuple[bytes, str | None]]:
    return lsun_values(shared_data)


@pytest.fixture(scope="session")
def lsun_lmdb(tmp_path_factory, lsun_source_values) -> Path:
    """An LMDB like bedroom_train_lmdb with the real photos and edge cases."""
    folder = tmp_path_factory.mktemp("lsun") / "bedroom_train_lmdb"
    return write_lmdb(folder, {k: v for k, (v, _) in lsun_source_values.items()})


def face_files(shared_data: Path) -> list[Path]:
    """The first FACE_COUNT shared faces, PNG and JPEG mixed, in name order."""
    folder = shared_data / CELEBAHQ_SAMPLES
    pngs = sorted(folder.glob("*.png"))[: FACE_COUNT // 2]
    jpegs = sorted(folder.glob("*.jpg"))[: FACE_COUNT - len(pngs)]
    return pngs + jpegs


@pytest.fixture(scope="session")
def face_folder(tmp_path_factory, shared_data) -> Path:
    """CelebA-HQ images named by index, 00000.png ... as in the 30,000-image release."""
    folder = tmp_path_factory.mktemp("celebahq") / "celeba-hq-1024"
    folder.mkdir()
    for index, path in enumerate(face_files(shared_data)):
        shutil.copyfile(path, folder / f"{index:05d}{path.suffix}")
    return folder


def write_progressive_gan_h5(
    path: Path, images: list[np.ndarray], lowest: int = 4
) -> Path:
    """Write an HDF5 file laid out as ProgressiveGAN's h5tool writes CelebA-HQ.

    Datasets `data1024x1024` down to `data{lowest}x{lowest}`, uint8 NCHW,
    one image per gzip-compressed chunk; each level is the box filter of the
    1024x1024 level.
    """
    count = len(images)
    with h5py.File(path, "w") as handle:
        size = 1024
        while size >= lowest:
            level = handle.create_dataset(
                f"data{size}x{size}",
                shape=(count, 3, size, size),
                dtype=np.uint8,
                chunks=(1, 3, size, size),
                compression="gzip",
                compression_opts=4,
            )
            for index, image in enumerate(images):
                level[index] = box_downsample(image, 1024 // size).transpose(2, 0, 1)
            size //= 2
    return path


@pytest.fixture(scope="session")
def face_pixels(shared_data) -> list[np.ndarray]:
    """The faces of `face_folder` decoded by Pillow, uint8 (1024, 1024, 3)."""
    return [
        np.asarray(Image.open(path).convert("RGB")) for path in face_files(shared_data)
    ]


@pytest.fixture(scope="session")
def face_h5(tmp_path_factory, face_pixels) -> Path:
    """celeba-hq-1024x1024.h5 with the faces of `face_folder`, levels 1024 to 64."""
    path = tmp_path_factory.mktemp("celebahq-h5") / "celeba-hq-1024x1024.h5"
    return write_progressive_gan_h5(path, face_pixels, lowest=64)
