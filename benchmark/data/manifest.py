"""Structure check of a store's manifest.json.

`benchmark prepare` writes the manifest, and nothing else should change it.
A manifest edited by hand, cut short or copied from another version must
still fail with one line naming the file, the field and what is expected,
not with a traceback from the first code that reads a field. So this module
checks the type and range of every field that the harness reads. Whether the
values agree with the split files is `benchmark verify`'s job.
"""

from __future__ import annotations

import re
from typing import Any

from benchmark.errors import UserError

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    def __init__(self, path: str, hint: str):
        self.path = path
        self.hint = hint

    def fail(self, field: str, expected: str, value: Any) -> UserError:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return UserError(
            f"{self.path!r}: field {field!r}: expected {expected}, got {shown}; "
            f"{self.hint}"
        )

    def table(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, "an object", value)
        return value

    def integer(self, value: Any, field: str, minimum: int = 0) -> int:
        if not _is_integer(value) or value < minimum:
            raise self.fail(field, f"an integer >= {minimum}", value)
        return value

    def boolean(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(field, "true or false", value)
        return value

    def string(self, value: Any, field: str, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            expected = "a string or null" if optional else "a string"
            raise self.fail(field, expected, value)
        return value

    def sha256(self, value: Any, field: str, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not SHA256_HEX.match(value):
            raise self.fail(field, "64 lowercase hex digits (a SHA-256)", value)
        return value


def check_manifest(manifest: Any, path: str, dataset: str, hint: str) -> None:
    """Check the structure of a format-2 manifest.

    Args:
        manifest: the parsed JSON.
        path: the manifest's file name, for messages.
        dataset: the dataset the manifest must describe.
        hint: what to do about a bad manifest, appended to every message.

    Raises:
        UserError: a field that the harness reads is missing or has the wrong
            type or range; the message names the file and the field.
    """
    check = _Checker(path, hint)
    manifest = check.table(manifest, "(top level)")
    if manifest.get("dataset") != dataset:
        raise check.fail("dataset", repr(dataset), manifest.get("dataset"))
    check.integer(manifest.get("spec_version"), "spec_version", minimum=1)
    check.sha256(manifest.get("spec_sha256"), "spec_sha256")
    check.boolean(manifest.get("reference_split"), "reference_split")
    check.boolean(manifest.get("partial"), "partial")

    source = check.table(manifest.get("source"), "source")
    check.string(source.get("format"), "source.format", optional=True)
    check.string(source.get("path"), "source.path", optional=True)
    check.sha256(source.get("sha256"), "source.sha256", optional=True)
    if "keys" in source:
        check.integer(source["keys"], "source.keys")
    if "content_digest" in source:
        check.sha256(source["content_digest"], "source.content_digest")

    skipped = manifest.get("skipped", [])
    if not isinstance(skipped, list):
        raise check.fail("skipped", "a list", skipped)
    for index, item in enumerate(skipped):
        where = f"skipped[{index}]"
        check.table(item, where)
        check.string(item.get("key"), f"{where}.key")
        check.string(item.get("reason"), f"{where}.reason")
        # Empty or null where the source value could not be read at all.
        if item.get("source_sha256") not in (None, ""):
            check.sha256(item["source_sha256"], f"{where}.source_sha256")

    splits = check.table(manifest.get("splits"), "splits")
    if not splits:
        raise check.fail("splits", "at least one split", splits)
    for split, entry in splits.items():
        where = f"splits.{split}"
        check.table(entry, where)
        if entry.get("file") != f"{split}.h5":
            raise check.fail(f"{where}.file", repr(f"{split}.h5"), entry.get("file"))
        check.integer(entry.get("count"), f"{where}.count")
        check.integer(entry.get("expected_count"), f"{where}.expected_count")
        check.sha256(entry.get("digest"), f"{where}.digest")
        check.sha256(entry.get("index_sha256"), f"{where}.index_sha256")
    for name in ("libraries", "hash_rules"):
        check.table(manifest.get(name), name)
