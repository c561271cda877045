"""Property-based tests of the spec parser and the store manifest parser.

Whatever a spec file or a manifest contains, loading it either succeeds or
raises a one-line UserError that names the file (and, for a field of the
wrong type, missing, unknown or out of range, that field). Anything else, a
traceback from deeper code, is a bug.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import tempfile
import tomllib
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from synthetic import write_synthetic_cifar10

from benchmark import specs
from benchmark.data.manifest import check_manifest
from benchmark.data.store import (
    read_manifest,
    split_image_hashes,
    store_path,
    verify_store,
)
from benchmark.errors import UserError

LOADERS = {
    "datasets": specs.load_dataset,
    "protocols": specs.load_protocol,
    "baselines": specs.load_baseline,
}
SPEC_CLASSES = {
    "datasets": specs.DatasetSpec,
    "protocols": specs.ProtocolSpec,
    "baselines": specs.BaselineSpec,
}
PACKAGED = [(kind, name) for kind in specs.SPEC_KINDS for name in specs.available(kind)]
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# ----------------------------------------------------------------------------
# TOML writing: inline tables reach any depth, JSON string escapes are valid
# TOML basic-string escapes.


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # Literal non-ASCII: json's surrogate-pair escapes are invalid TOML.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    return value.isoformat()  # dates and times


def write_toml(path: Path, table: dict) -> Path:
    lines = [f"{toml_value(key)} = {toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def spec_table(kind: str, name: str) -> dict:
    return tomllib.loads((specs.spec_directory(kind) / f"{name}.toml").read_text())


text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x7f"),
    max_size=10,
)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    text,
    st.dates(),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)
    ),
    max_leaves=6,
)


def paths_of(table: dict, prefix: tuple = ()) -> list[tuple]:
    """Return the key path of every value in nested tables (lists left whole)."""
    found = []
    for key, value in table.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found.extend(paths_of(value, (*prefix, key)))
    return found


def assert_clean_error(error: UserError, path: Path) -> str:
    message = str(error)
    assert str(path) in message
    assert "\n" not in message
    return message


@SETTINGS
@given(
    case=st.sampled_from(PACKAGED),
    data=st.data(),
    replacement=st.one_of(st.none(), toml_values),
)
def test_mutated_spec_loads_or_names_field(tmp_path, case, data, replacement):
    """Check that replacing or deleting any value at any depth of any packaged
    spec loads, or fails in one line naming the file and a field."""
    kind, name = case
    table = spec_table(kind, name)
    key_path = data.draw(st.sampled_from(paths_of(table)))
    parent = table
    for key in key_path[:-1]:
        parent = parent[key]
    if replacement is None:
        del parent[key_path[-1]]
    else:
        parent[key_path[-1]] = replacement
    path = write_toml(tmp_path / f"{name}.toml", table)
    try:
        LOADERS[kind](str(path))
    except UserError as error:
        message = assert_clean_error(error, path)
        assert "field '" in message or "invalid TOML" in message


@SETTINGS
@given(case=st.sampled_from(PACKAGED), content=st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_loader(tmp_path, case, content):
    """Check that any file content gives a spec or a one-line error naming it."""
    kind, name = case
    path = tmp_path / f"{name}.toml"
    path.write_bytes(content)
    try:
        LOADERS[kind](str(path))
    except UserError as error:
        assert_clean_error(error, path)


def scalar_fields(kind: str) -> list[tuple[str, type, dict]]:
    """Return (name, type, constraints) of each top-level scalar field of a spec."""
    cls = SPEC_CLASSES[kind]
    hints = typing.get_type_hints(cls)
    found = []
    for spec_field in dataclasses.fields(cls):
        kind_of = hints[spec_field.name]
        if spec_field.name != "path" and kind_of in (int, float, str, bool):
            found.append((spec_field.name, kind_of, spec_field.metadata.get("check")))
    return found


def wrong_type_values(kind_of: type):
    """Values that a field of type `kind_of` must reject."""
    strategies = {
        int: st.one_of(st.booleans(), st.floats(), text, st.lists(st.integers())),
        float: st.one_of(st.booleans(), text, st.lists(st.floats(), min_size=1)),
        str: st.one_of(st.booleans(), st.integers(), st.floats(), st.dates()),
        bool: st.one_of(st.integers(), st.floats(), text),
    }
    return strategies[kind_of]


FIELD_CASES = [
    (kind, name, field_name, kind_of)
    for kind, name in PACKAGED
    for field_name, kind_of, _ in scalar_fields(kind)
]


@SETTINGS
@given(case=st.sampled_from(FIELD_CASES), data=st.data())
def test_wrong_type_names_field_and_type(tmp_path, case, data):
    """Check that a value of the wrong type is rejected naming the field and
    the expected type."""
    kind, name, field_name, kind_of = case
    value = data.draw(wrong_type_values(kind_of))
    table = spec_table(kind, name)
    table[field_name] = value
    path = write_toml(tmp_path / f"{name}.toml", table)
    with pytest.raises(UserError) as caught:
        LOADERS[kind](str(path))
    message = assert_clean_error(caught.value, path)
    assert f"field '{field_name}'" in message
    expected = {int: "an integer", float: "a number", str: "a string", bool: "true"}
    # A field with a fixed set of values names the set instead of the type.
    assert f"expected {expected[kind_of]}" in message or "expected one of" in message


@pytest.mark.parametrize("kind, name", PACKAGED)
def test_missing_and_unknown_keys_named(tmp_path, kind, name):
    """Check every required key's absence, and an unknown key, by name."""
    cls = SPEC_CLASSES[kind]
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name != "path"
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    for field_name in required:
        table = spec_table(kind, name)
        del table[field_name]
        path = write_toml(tmp_path / f"{name}.toml", table)
        with pytest.raises(UserError) as caught:
            LOADERS[kind](str(path))
        message = assert_clean_error(caught.value, path)
        assert f"missing field '{field_name}'" in message
    table = spec_table(kind, name)
    table["n_discriminator"] = 5
    path = write_toml(tmp_path / f"{name}.toml", table)
    with pytest.raises(UserError) as caught:
        LOADERS[kind](str(path))
    assert "unknown field 'n_discriminator'" in assert_clean_error(caught.value, path)


RANGE_CASES = [
    (kind, name, field_name, constraints)
    for kind, name in PACKAGED
    for field_name, kind_of, constraints in scalar_fields(kind)
    if constraints and kind_of in (int, float) and ("min" in constraints)
]


@pytest.mark.parametrize(
    "kind, name, field_name, constraints",
    RANGE_CASES,
    ids=[f"{c[1]}-{c[2]}" for c in RANGE_CASES],
)
def test_below_range_names_bound(tmp_path, kind, name, field_name, constraints):
    """Check that a value below a field's minimum names the field and the bound."""
    table = spec_table(kind, name)
    table[field_name] = constraints["min"] - 1
    path = write_toml(tmp_path / f"{name}.toml", table)
    with pytest.raises(UserError) as caught:
        LOADERS[kind](str(path))
    message = assert_clean_error(caught.value, path)
    assert f"field '{field_name}'" in message
    assert f">= {constraints['min']}" in message or "in [" in message


# ----------------------------------------------------------------------------
# Manifest


@pytest.fixture(scope="module")
def pristine_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("manifest-store")
    write_synthetic_cifar10(root, train_count=6, test_count=4)
    return root


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),
        text,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)
    ),
    max_leaves=5,
)

# Fields whose value `benchmark verify` checks against the split files.
PINNED = {"dataset", "format_version", "spec_version", "reference_split"}
PINNED_IN_SPLIT = {"count", "digest", "index_sha256", "file"}


def json_paths(value, prefix: tuple = ()) -> list[tuple]:
    found = []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found.append((*prefix, key))
        found.extend(json_paths(item, (*prefix, key)))
    return found


@SETTINGS
@given(data=st.data(), replacement=st.one_of(st.just("<delete>"), json_values))
def test_mutated_manifest_reads_or_names_file(
    tmp_path, pristine_store, data, replacement
):
    """Check that after any one change to a manifest, every reader of it
    succeeds or fails in one line naming the store, and that a changed value
    of a checked field never passes verification."""
    # tmp_path is shared by all examples, so each gets a fresh copy inside it.
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    shutil.copytree(pristine_store, root, dirs_exist_ok=True)
    manifest_path = store_path(root, "cifar10") / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    key_path = data.draw(st.sampled_from(json_paths(manifest)))
    parent = manifest
    for key in key_path[:-1]:
        parent = parent[key]
    old = copy.deepcopy(parent[key_path[-1]])
    if replacement == "<delete>":
        del parent[key_path[-1]]
    else:
        assume(replacement != old or type(replacement) is not type(old))
        parent[key_path[-1]] = replacement
    manifest_path.write_text(json.dumps(manifest, allow_nan=True))

    spec = specs.load_dataset("cifar10")
    failures = []
    for reader in (
        lambda: read_manifest(store_path(root, "cifar10"), "cifar10"),
        lambda: split_image_hashes(root, "cifar10", "train"),
        lambda: verify_store(root, spec, threads=1),
    ):
        try:
            reader()
        except UserError as error:
            message = str(error)
            assert "\n" not in message
            assert str(store_path(root, "cifar10")) in message
            failures.append(message)
    checked = key_path[0] in PINNED or (
        key_path[0] == "splits"
        and len(key_path) >= 3
        and key_path[2] in PINNED_IN_SPLIT
    )
    if checked or (key_path[0] == "splits" and len(key_path) <= 2):
        assert failures, f"changing {key_path} passed verification"


@SETTINGS
@given(cut=st.integers(min_value=0, max_value=10**6))
def test_truncated_manifest_names_file(tmp_path, pristine_store, cut):
    """Check that a manifest cut short at any byte fails in one line naming it."""
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    shutil.copytree(pristine_store, root, dirs_exist_ok=True)
    manifest_path = store_path(root, "cifar10") / "manifest.json"
    content = manifest_path.read_bytes()
    manifest_path.write_bytes(content[: cut % len(content)])
    with pytest.raises(UserError) as caught:
        read_manifest(store_path(root, "cifar10"), "cifar10")
    assert str(manifest_path) in str(caught.value)
    assert "\n" not in str(caught.value)


STREAMED_MANIFEST = {
    "format_version": 2,
    "dataset": "lsun",
    "spec_version": 1,
    "spec_sha256": "1" * 64,
    "reference_split": False,
    "partial": True,
    "source": {
        "format": "lmdb",
        "path": "/data/bedroom_train_lmdb",
        "keys": 9,
        "content_digest": "2" * 64,
    },
    "skipped": [
        {"key": "k1", "reason": "image file is truncated", "source_sha256": "3" * 64},
        {"key": "k2", "reason": "unreadable", "source_sha256": None},
    ],
    "splits": {
        split: {
            "file": f"{split}.h5",
            "count": 3,
            "expected_count": 3,
            "digest": "4" * 64,
            "index_sha256": "5" * 64,
        }
        for split in ("train", "test")
    },
    "libraries": {"pillow": "12.0"},
    "hash_rules": {},
}


def test_streamed_manifest_layout_passes_check():
    """Check that the layout streaming prepare writes passes the structure check."""
    check_manifest(STREAMED_MANIFEST, "manifest.json", "lsun", "re-run prepare")


@SETTINGS
@given(data=st.data(), replacement=json_values)
def test_streamed_manifest_mutations(data, replacement):
    """Check that a changed field of a streamed store's manifest either passes
    the structure check or is named in a one-line error."""
    manifest = copy.deepcopy(STREAMED_MANIFEST)
    key_path = data.draw(st.sampled_from(json_paths(manifest)))
    parent = manifest
    for key in key_path[:-1]:
        parent = parent[key]
    parent[key_path[-1]] = replacement
    try:
        check_manifest(manifest, "manifest.json", "lsun", "re-run prepare")
    except UserError as error:
        message = str(error)
        assert "\n" not in message
        assert message.startswith("'manifest.json': field ")
