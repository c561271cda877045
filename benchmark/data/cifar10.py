"""Readers that turn a CIFAR-10 source into train and test arrays.

Accepted layouts, detected from the file names a folder or tarball contains:

* `official-archive`: the official `cifar-10-python.tar.gz`, read without
  extracting. Members `cifar-10-batches-py/data_batch_1` to `data_batch_5` and
  `test_batch` are pickled dicts whose b"data" is a uint8 (10000, 3072) array:
  per image the 1024 red values, then green, then blue, each plane 32x32 in
  row-major order. Keys are `train/<global index>` (00000 to 49999, batch 1
  first) and `test/<index>`, in the official order.
* `official-folder`: the extracted `cifar-10-batches-py/` folder (or a folder
  containing it), with the same members, checks and keys.
* `lossless-subset`: a folder or tarball with `labels.csv` (columns split,
  official_index, label, class_name, file) and PNG files. Keys use the official
  index, as for the official archive, so both give the same keys and hashes.
* `class-folders`: `[<top>/]{train,test}/<class>/<file>.{jpg,jpeg,png}` as a
  folder or a tarball, such as a JPEG copy of CIFAR-10. Keys are
  `<split>/<class>/<file name>`, ordered by class index, then by the numeric
  file stem, so the order does not depend on the file system or tar order.

Official members are checked against the spec's MD5s before use. Pickles are
loaded with an unpickler that only builds plain containers and numpy arrays,
so a tampered archive cannot run code.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import os
import pickle
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from benchmark.data.store import SourceData, SplitArrays
from benchmark.errors import UserError
from benchmark.fileio import md5_file, sha256_file
from benchmark.progress import progress_bar
from benchmark.specs import DatasetSpec

logger = logging.getLogger(__name__)

# Label order of the official release (batches.meta).
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SPLITS = ("train", "test")
IMAGE_SIZE = 32
OFFICIAL_FOLDER = "cifar-10-batches-py"
TRAIN_MEMBERS = tuple(f"data_batch_{number}" for number in range(1, 6))
TEST_MEMBER = "test_batch"
IMAGES_PER_MEMBER = 10000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABELS_FILE = "labels.csv"
LABELS_COLUMNS = ("split", "official_index", "label", "class_name", "file")
SPLIT_SIZES = {"train": 50000, "test": 10000}

ACCEPTED_LAYOUTS = (
    "the official cifar-10-python.tar.gz, its extracted cifar-10-batches-py/ "
    "folder, a folder or tarball with labels.csv (split, official_index, label, "
    "class_name, file), or a folder or .tar/.tar.gz of "
    "<top>/{train,test}/<class>/<image>.{jpg,png}"
)

# Globals a CIFAR-10 pickle may name: numpy's array reconstruction helpers
# (module paths of numpy 1.x and 2.x) and the codec Python 3 pickles use for
# bytes. Anything else is rejected before it is called.
_ALLOWED_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals a CIFAR-10 batch needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


# ----------------------------------------------------------------------------
# Source trees: the regular files of a folder or a tarball


class _SourceTree:
    """Regular files of a source folder or tarball, by relative POSIX path.

    Hidden files and folders (a path part starting with '.') are left out.
    """

    def __init__(self, path: Path):
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        self.hidden = 0
        if path.is_dir():
            self.container = "directory"
            self.files = self._walk()
        elif path.is_file():
            if not tarfile.is_tarfile(path):
                raise UserError(
                    f"unrecognised CIFAR-10 source {str(path)!r}: not a folder or a "
                    f"tarball; expected {ACCEPTED_LAYOUTS}"
                )
            self.container = "tarball"
            self.files = self._open_tarball()
        else:
            raise UserError(
                f"CIFAR-10 source not found: {str(path)!r}; pass an existing file "
                "or folder with --source"
            )

    def _walk(self) -> list[str]:
        files = []
        for folder, subfolders, names in os.walk(self.path):
            subfolders.sort()
            relative = Path(folder).relative_to(self.path)
            for name in sorted(names):
                rel = (relative / name).as_posix()
                if _is_hidden(rel):
                    self.hidden += 1
                else:
                    files.append(rel)
        return files

    def _open_tarball(self) -> list[str]:
        try:
            self._tar = tarfile.open(self.path, "r:*")
            members = self._tar.getmembers()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            if self._tar is not None:
                self._tar.close()
            raise UserError(
                f"failed to read the tarball {str(self.path)!r} ({_one_line(error)}); "
                "it is truncated or damaged, fetch it again"
            ) from error
        for member in members:
            if not member.isfile():
                continue
            rel = PurePosixPath(member.name).as_posix().removeprefix("./")
            if _is_hidden(rel):
                self.hidden += 1
            else:
                self._members[rel] = member
        return list(self._members)

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """Yield (name, bytes) for each requested file, in storage order.

        A tarball is read in member order, so a compressed archive is
        decompressed once.
        """
        requested = set(names)
        if self._tar is None:
            for name in sorted(requested):
                try:
                    data = (self.path / name).read_bytes()
                except OSError as error:
                    raise UserError(
                        f"failed to read {str(self.path / name)!r}: "
                        f"{error.strerror or error}"
                    ) from error
                yield name, data
            return
        ordered = sorted(requested, key=lambda name: self._members[name].offset)
        for name in ordered:
            try:
                handle = self._tar.extractfile(self._members[name])
                assert handle is not None  # regular files always have data
                data = handle.read()
            except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
                raise UserError(
                    f"failed to read {name!r} from {str(self.path)!r} "
                    f"({_one_line(error)}); the tarball is truncated or damaged, "
                    "fetch it again"
                ) from error
            yield name, data

    def describe(self) -> dict[str, Any]:
        """Return container, path and size (plus SHA-256 for a tarball)."""
        description: dict[str, Any] = {
            "container": self.container,
            "path": str(self.path.resolve()),
        }
        if self._tar is None:
            description["files"] = len(self.files)
            description["size"] = sum(
                (self.path / name).stat().st_size for name in self.files
            )
        else:
            description["size"] = self.path.stat().st_size
            description["sha256"] = sha256_file(self.path)
        return description


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


@contextlib.contextmanager
def _open_tree(path: Path) -> Iterator[_SourceTree]:
    tree = _SourceTree(path)
    try:
        yield tree
    finally:
        tree.close()


# ----------------------------------------------------------------------------
# Entry point


def read_source(
    path: str | os.PathLike,
    spec: DatasetSpec,
    partial: bool = False,
    progress: bool = True,
) -> SourceData:
    """Read a CIFAR-10 source of any accepted layout into train and test arrays.

    Args:
        path: a tarball or a folder in one of the layouts of this module.
        spec: the CIFAR-10 dataset spec (32x32x3, splits train and test,
            member MD5s of the official archive).
        partial: accept fewer images than the official release. Official
            members with a wrong MD5 are then accepted too, unless they hold a
            full 10,000 images (a damaged or modified official member).
        progress: show a progress bar on stderr while decoding.

    Returns:
        Arrays per split (images uint8 (N, 32, 32, 3) in [0, 255], labels
        int64 (N,) in [0, 9], keys) and a description of the source.

    Raises:
        UserError: the layout is not recognised, a checksum does not match,
            or a file is missing, damaged or not 32x32.
    """
    _check_spec(spec)
    path = Path(path)
    with _open_tree(path) as tree:
        official_prefix = _find_official_prefix(tree.files)
        labels_path = _find_labels_file(tree.files)
        if official_prefix is not None:
            data = _read_official(tree, official_prefix, spec, partial, progress)
        elif labels_path is not None:
            data = _read_lossless_subset(tree, labels_path, progress)
        elif _has_class_images(tree.files):
            data = _read_class_folders(tree, progress)
        else:
            raise UserError(
                f"unrecognised CIFAR-10 source {str(path)!r}: expected "
                f"{ACCEPTED_LAYOUTS}"
            )
    for split, arrays in data.splits.items():
        logger.info("Read %d %s images from %s", len(arrays.keys), split, path)
    return data


def _check_spec(spec: DatasetSpec) -> None:
    if (spec.resolution, spec.channels) != (IMAGE_SIZE, 3):
        raise UserError(
            f"spec {spec.path or spec.name!r} asks for {spec.resolution}x"
            f"{spec.resolution}x{spec.channels} images; the CIFAR-10 reader "
            "produces 32x32x3 only"
        )
    if spec.preprocessing != "none":
        raise UserError(
            f"spec {spec.path or spec.name!r} asks for preprocessing "
            f"{spec.preprocessing!r}; the CIFAR-10 reader supports 'none' only"
        )
    if set(spec.splits) != set(SPLITS):
        raise UserError(
            f"spec {spec.path or spec.name!r} lists splits "
            f"{', '.join(spec.splits)}; CIFAR-10 sources have train and test"
        )


def _decode_image(data: bytes, name: str, source: Path) -> np.ndarray:
    """Decode an image file to uint8 RGB (32, 32, 3), or raise naming the file."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                raise UserError(
                    f"image {name!r} in {str(source)!r} is {image.size[0]}x"
                    f"{image.size[1]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}; "
                    "the source is not CIFAR-10 at its original size"
                )
            rgb = image.convert("RGB")
    except UserError:
        raise
    except (OSError, ValueError, SyntaxError) as error:
        raise UserError(
            f"cannot decode image {name!r} in {str(source)!r} "
            f"({_one_line(error)}); the file is damaged, replace the source"
        ) from error
    return np.asarray(rgb, dtype=np.uint8)


# ----------------------------------------------------------------------------
# Official archive or folder


def _find_official_prefix(files: list[str]) -> str | None:
    names = set(files)
    for prefix in (f"{OFFICIAL_FOLDER}/", ""):
        if any(prefix + member in names for member in (*TRAIN_MEMBERS, TEST_MEMBER)):
            return prefix
    return None


def _read_official(
    tree: _SourceTree,
    prefix: str,
    spec: DatasetSpec,
    partial: bool,
    progress: bool,
) -> SourceData:
    layout = "official-archive" if tree.container == "tarball" else "official-folder"
    logger.info("Reading %s %s", layout, tree.path)
    member_names = (*TRAIN_MEMBERS, TEST_MEMBER)
    present = [name for name in member_names if prefix + name in tree.files]
    missing = [name for name in member_names if name not in present]
    if missing and not partial:
        raise UserError(
            f"{str(tree.path)!r} is missing {', '.join(missing)}; the download "
            "is incomplete, delete it and download again (or pass --partial)"
        )

    members: dict[str, dict[str, Any]] = {}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    bar = progress_bar(
        len(present), f"read {tree.path.name}", "member", enabled=progress
    )
    with bar:
        for full_name, data in tree.read(prefix + name for name in present):
            name = full_name.removeprefix(prefix)
            found_md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
            expected_md5 = spec.source.member_md5.get(name)
            matches = expected_md5 is None or found_md5 == expected_md5
            mismatch = (
                f"{name} in {str(tree.path)!r} has MD5 {found_md5}, expected "
                f"{expected_md5}; the file is damaged or not the official release, "
                "delete it and download again"
            )
            if not matches and not partial:
                raise UserError(mismatch)
            images, labels = _unpickle_batch(data, name, tree.path)
            if not matches and len(labels) == IMAGES_PER_MEMBER:
                # A full-size member with a wrong MD5 is a modified official
                # batch, not a subset, so partial does not excuse it.
                raise UserError(mismatch)
            if not matches:
                logger.warning(
                    "%s has MD5 %s, not the official %s; accepted as a partial source",
                    name,
                    found_md5,
                    expected_md5,
                )
            members[name] = {
                "md5": found_md5,
                "expected_md5": expected_md5,
                "md5_matches": matches,
                "images": len(labels),
            }
            batches[name] = (images, labels)
            bar.update(1)

    source = {"format": layout, "prefix": prefix, **tree.describe()}
    source["members"] = members
    verified = not missing and all(m["md5_matches"] for m in members.values())
    if tree.container == "tarball":
        archive_md5 = md5_file(tree.path)
        source["md5"] = archive_md5
        source["expected_md5"] = spec.source.md5
        source["md5_matches"] = archive_md5 == spec.source.md5
        if archive_md5 != spec.source.md5 and verified:
            # Recompressing the archive changes its bytes but not the members,
            # which were all checked above.
            logger.warning(
                "Archive %s has MD5 %s, not the official %s, but every member "
                "matches its official MD5",
                tree.path,
                archive_md5,
                spec.source.md5,
            )
    source["checksums_verified"] = verified

    splits = {}
    for split, names in (("train", TRAIN_MEMBERS), ("test", (TEST_MEMBER,))):
        image_parts, label_parts, keys = [], [], []
        for number, name in enumerate(names):
            if name not in batches:
                continue
            images, labels = batches[name]
            first = number * IMAGES_PER_MEMBER
            keys.extend(f"{split}/{first + row:05d}" for row in range(len(labels)))
            image_parts.append(images)
            label_parts.append(labels)
        splits[split] = _concatenate(image_parts, label_parts, keys)
    return SourceData(splits=splits, source=source)


def _unpickle_batch(
    data: bytes, name: str, source: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one official batch into uint8 (N, 32, 32, 3) and int64 (N,)."""
    where = f"{name} in {str(source)!r}"

    try:
        batch = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # any failure means a damaged or foreign pickle
        raise UserError(
            f"cannot unpickle {where} ({_one_line(error)}); the file is damaged "
            "or not the official release"
        ) from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise UserError(f"{where} is not a CIFAR-10 batch: no b'data' or b'labels'")

    raw = batch[b"data"]
    plane = IMAGE_SIZE * IMAGE_SIZE
    if (
        not isinstance(raw, np.ndarray)
        or raw.dtype != np.uint8
        or raw.ndim != 2
        or raw.shape[1] != 3 * plane
        or raw.shape[0] > IMAGES_PER_MEMBER
    ):
        description = (
            f"{raw.dtype} {raw.shape}" if isinstance(raw, np.ndarray) else type(raw)
        )
        raise UserError(
            f"{where} has b'data' {description}, expected uint8 (N, 3072) with "
            f"N <= {IMAGES_PER_MEMBER}"
        )

    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if labels.shape != (raw.shape[0],):
        raise UserError(f"{where} has {labels.size} labels for {raw.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise UserError(f"{where} has labels outside 0-{len(CLASS_NAMES) - 1}")

    # Each row is the red plane, then green, then blue, each 32x32 row-major.
    planes = raw.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
    images = np.ascontiguousarray(planes.transpose(0, 2, 3, 1))
    return images, labels


def _concatenate(
    image_parts: list[np.ndarray], label_parts: list[np.ndarray], keys: list[str]
) -> SplitArrays:
    if not image_parts:
        return SplitArrays(
            images=np.empty((0, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
            labels=np.empty((0,), dtype=np.int64),
            keys=[],
        )
    return SplitArrays(
        images=np.concatenate(image_parts),
        labels=np.concatenate(label_parts),
        keys=keys,
    )


# ----------------------------------------------------------------------------
# Lossless subset (labels.csv)


def _find_labels_file(files: list[str]) -> str | None:
    candidates = sorted(
        name
        for name in files
        if PurePosixPath(name).name == LABELS_FILE and name.count("/") <= 1
    )
    if len(candidates) > 1:
        raise UserError(
            f"found several {LABELS_FILE} files ({', '.join(candidates)}); pass "
            "the folder of one of them as --source"
        )
    return candidates[0] if candidates else None


def _read_lossless_subset(
    tree: _SourceTree, labels_name: str, progress: bool
) -> SourceData:
    logger.info("Reading lossless-subset %s", tree.path)
    base = PurePosixPath(labels_name).parent
    where = f"{labels_name} in {str(tree.path)!r}"
    ((_, labels_bytes),) = list(tree.read([labels_name]))
    try:
        text = labels_bytes.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{where} is not UTF-8 text ({error})") from error
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != LABELS_COLUMNS:
        raise UserError(
            f"{where} has columns {reader.fieldnames}, expected "
            f"{', '.join(LABELS_COLUMNS)}"
        )

    rows: dict[str, tuple[str, int, int]] = {}
    seen: set[tuple[str, int]] = set()
    for line, row in enumerate(reader, start=2):
        split, label, index = _parse_labels_row(row, f"{where} line {line}")
        file_name = (base / row["file"]).as_posix()
        if file_name not in tree.files:
            raise UserError(
                f"{where} line {line}: file {row['file']!r} not found in the source"
            )
        if (split, index) in seen:
            raise UserError(
                f"{where} line {line}: {split} index {index} is listed twice"
            )
        seen.add((split, index))
        rows[file_name] = (split, index, label)

    decoded: dict[str, np.ndarray] = {}
    with progress_bar(
        len(rows), f"decode {tree.path.name}", "img", enabled=progress
    ) as bar:
        for file_name, data in tree.read(rows):
            decoded[file_name] = _decode_image(data, file_name, tree.path)
            bar.update(1)

    splits = {}
    for split in SPLITS:
        entries = sorted(
            (index, label, file_name)
            for file_name, (row_split, index, label) in rows.items()
            if row_split == split
        )
        splits[split] = _stack(
            [decoded[file_name] for _, _, file_name in entries],
            [label for _, label, _ in entries],
            [f"{split}/{index:05d}" for index, _, _ in entries],
        )
    source = {"format": "lossless-subset", "labels_file": labels_name}
    source.update(tree.describe())
    return SourceData(splits=splits, source=source)


def _parse_labels_row(row: dict[str, str], where: str) -> tuple[str, int, int]:
    """Return (split, label, official index) of one labels.csv row."""
    split = row["split"]
    if split not in SPLITS:
        raise UserError(f"{where}: split {split!r} is not train or test")
    try:
        label = int(row["label"])
        index = int(row["official_index"])
    except (TypeError, ValueError):
        raise UserError(
            f"{where}: label {row['label']!r} and official_index "
            f"{row['official_index']!r} must be integers"
        ) from None
    if not 0 <= label < len(CLASS_NAMES):
        raise UserError(f"{where}: label {label} is outside 0-{len(CLASS_NAMES) - 1}")
    if row["class_name"] != CLASS_NAMES[label]:
        raise UserError(
            f"{where}: class_name {row['class_name']!r} does not match label "
            f"{label} ({CLASS_NAMES[label]!r})"
        )
    if not 0 <= index < SPLIT_SIZES[split]:
        raise UserError(
            f"{where}: official_index {index} is outside 0-{SPLIT_SIZES[split] - 1}"
        )
    return split, label, index


def _stack(images: list[np.ndarray], labels: list[int], keys: list[str]) -> SplitArrays:
    if not images:
        return _concatenate([], [], [])
    return SplitArrays(
        images=np.stack(images),
        labels=np.asarray(labels, dtype=np.int64),
        keys=keys,
    )


# ----------------------------------------------------------------------------
# Class-named image folders


def _class_image_parts(name: str) -> tuple[str, str, str, str] | None:
    """Split `[<top>/]<split>/<class>/<file>` into (top, split, class, file)."""
    parts = name.split("/")
    if len(parts) < 3 or len(parts) > 4 or parts[-3] not in SPLITS:
        return None
    if not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None
    top = parts[0] if len(parts) == 4 else ""
    return top, parts[-3], parts[-2], parts[-1]


def _has_class_images(files: list[str]) -> bool:
    return any(_class_image_parts(name) is not None for name in files)


def _file_order(class_index: int, file_name: str) -> tuple[int, int, int, str]:
    """Sort key: class index, then numeric stems by value, then other names."""
    stem = PurePosixPath(file_name).stem
    if stem.isdigit():
        return class_index, 0, int(stem), file_name
    return class_index, 1, 0, file_name


def _read_class_folders(tree: _SourceTree, progress: bool) -> SourceData:
    logger.info("Reading class-folders %s", tree.path)
    entries: dict[str, tuple[str, int, str]] = {}
    tops = set()
    for name in tree.files:
        parts = _class_image_parts(name)
        if parts is None:
            _reject_stray_file(name, tree.path)
            continue
        top, split, class_name, file_name = parts
        if class_name not in CLASS_NAMES:
            raise UserError(
                f"unknown class folder {class_name!r} in {str(tree.path)!r} "
                f"(file {name!r}); expected one of {', '.join(CLASS_NAMES)}"
            )
        tops.add(top)
        entries[name] = (split, CLASS_NAMES.index(class_name), file_name)
    if len(tops) > 1:
        raise UserError(
            f"{str(tree.path)!r} contains class folders under several top folders "
            f"({', '.join(sorted(repr(t) for t in tops))}); pass one of them"
        )
    if tree.hidden:
        logger.info("Skipped %d hidden files in %s", tree.hidden, tree.path)

    decoded: dict[str, np.ndarray] = {}
    with progress_bar(
        len(entries), f"decode {tree.path.name}", "img", enabled=progress
    ) as bar:
        for name, data in tree.read(entries):
            decoded[name] = _decode_image(data, name, tree.path)
            bar.update(1)

    splits = {}
    for split in SPLITS:
        ordered = sorted(
            (_file_order(class_index, file_name), name)
            for name, (entry_split, class_index, file_name) in entries.items()
            if entry_split == split
        )
        names = [name for _, name in ordered]
        splits[split] = _stack(
            [decoded[name] for name in names],
            [entries[name][1] for name in names],
            [
                f"{split}/{CLASS_NAMES[entries[name][1]]}/{entries[name][2]}"
                for name in names
            ],
        )
    source = {"format": "class-folders", "top": tops.pop() if tops else ""}
    source.update(tree.describe())
    return SourceData(splits=splits, source=source)


def _reject_stray_file(name: str, source: Path) -> None:
    """Raise for a non-image file inside a split folder; ignore other files."""
    if any(part in SPLITS for part in name.split("/")[:-1]):
        raise UserError(
            f"unexpected file {name!r} in {str(source)!r}: expected only "
            "[<top>/]{train,test}/<class>/<image>.{jpg,jpeg,png} under a split "
            "folder"
        )
