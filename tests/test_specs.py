"""Spec files: every packaged spec loads, and every kind of bad field is named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark import specs
from benchmark.errors import UserError

LOADERS = {
    "datasets": specs.load_dataset,
    "protocols": specs.load_protocol,
    "baselines": specs.load_baseline,
}


@pytest.mark.parametrize(
    "kind, name",
    [(kind, name) for kind in specs.SPEC_KINDS for name in specs.available(kind)],
)
def test_packaged_spec_loads(kind, name):
    """Check that each shipped spec passes validation and keeps its path."""
    spec = LOADERS[kind](name)
    assert spec.name == name
    assert spec.path.endswith(f"{name}.toml")


def test_baselines_name_existing_datasets_and_protocols():
    """Check that baseline specs refer to datasets and protocols that exist."""
    for name in specs.available("baselines"):
        spec = specs.load_baseline(name)
        specs.load_dataset(spec.dataset)
        for published in spec.published:
            protocol = specs.load_protocol(published.protocol)
            assert spec.dataset in protocol.datasets


def baseline_table() -> dict:
    path = specs.spec_directory("baselines") / "resnetcifar-ns-sn.toml"
    return tomllib.loads(path.read_text())


def write_toml(path: Path, table: dict) -> Path:
    def value(item) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, str):
            return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(item, list):
            return "[" + ", ".join(value(x) for x in item) + "]"
        return repr(item)

    lines, tables = [], []
    for key, item in table.items():
        is_table_array = isinstance(item, list) and item and isinstance(item[0], dict)
        if isinstance(item, dict) or is_table_array:
            tables.append((key, item))
        else:
            lines.append(f"{key} = {value(item)}")
    for key, item in tables:
        for entry in item if isinstance(item, list) else [item]:
            lines.append(f"[[{key}]]" if isinstance(item, list) else f"[{key}]")
            lines.extend(f"{inner} = {value(x)}" for inner, x in entry.items())
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(colour="blue"), "unknown field 'colour'"),
        (lambda t: t.pop("n_disc"), "missing field 'n_disc'"),
        (lambda t: t.update(n_disc="five"), "field 'n_disc': expected an integer >= 1"),
        (lambda t: t.update(n_disc=0), "field 'n_disc': expected an integer >= 1"),
        (lambda t: t.update(n_disc=True), "field 'n_disc': expected an integer"),
        (
            lambda t: t["optimizer"].update(lr=-1.0),
            "field 'optimizer.lr': expected a number > 0.0",
        ),
        (lambda t: t["optimizer"].update(beta2=1.5), "field 'optimizer.beta2'"),
        (
            lambda t: t["optimizer"].update(momentum=0.9),
            "unknown field 'optimizer.momentum'",
        ),
        (lambda t: t.update(loss="hinge2"), "field 'loss': expected one of 'ns'"),
        (lambda t: t.update(optimizer=3), "field 'optimizer': expected a table"),
        (
            lambda t: t.update(name="other"),
            "field 'name' is 'other' but the file is named",
        ),
    ],
)
def test_invalid_baseline_field_is_named(tmp_path, change, message):
    """Check one-line errors naming the file, the field and what is expected."""
    table = baseline_table()
    change(table)
    path = write_toml(tmp_path / "resnetcifar-ns-sn.toml", table)
    with pytest.raises(UserError) as caught:
        specs.load_baseline(str(path))
    text = str(caught.value)
    assert message in text
    assert str(path) in text
    assert "\n" not in text


def dataset_table(name: str) -> dict:
    path = specs.spec_directory("datasets") / f"{name}.toml"
    return tomllib.loads(path.read_text())


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda t: t["split_rule"].update(split="val"),
            "field 'split_rule.split': expected one of two splits",
        ),
        (
            lambda t: t["split_rule"].update(kind="random"),
            "field 'split_rule.kind': expected one of 'sha256_rank'",
        ),
        (
            lambda t: t["source"].update(images=5),
            "field 'source.images' is 5 but the split counts add up to 3033042",
        ),
        (
            lambda t: t["expected_digests"].update(test="abc"),
            "field 'expected_digests.test': expected a string matching",
        ),
        (
            lambda t: t["expected_digests"].update(val="0" * 64),
            "field 'expected_digests.val': expected a split listed",
        ),
        (
            lambda t: t.update(preprocessing="bicubic"),
            "field 'preprocessing': expected one of 'none'",
        ),
        (lambda t: t["source"].update(md5="xyz"), "field 'source.md5'"),
        (lambda t: t["source"].update(download="no"), "field 'source.download'"),
    ],
)
def test_invalid_dataset_field_is_named(tmp_path, change, message):
    """Check one-line errors for the split rule, source and digest fields."""
    table = dataset_table("lsun")
    change(table)
    path = write_toml(tmp_path / "lsun.toml", table)
    with pytest.raises(UserError) as caught:
        specs.load_dataset(str(path))
    text = str(caught.value)
    assert message in text
    assert str(path) in text
    assert "\n" not in text


def test_dataset_specs_match_protocol_entries():
    """Check that every dataset a protocol names has a spec, and the reverse."""
    datasets = set(specs.available("datasets"))
    for name in specs.available("protocols"):
        assert set(specs.load_protocol(name).datasets) == datasets


def test_invalid_toml_is_reported(tmp_path):
    """Check that a syntax error names the file."""
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(UserError, match="invalid TOML"):
        specs.load_protocol(str(path))


def test_missing_spec_file_is_reported(tmp_path):
    """Check that a path to a missing file is reported as not found."""
    with pytest.raises(UserError, match="spec file not found"):
        specs.load_dataset(str(tmp_path / "nope.toml"))


def test_protocol_without_dataset_entry_is_reported():
    """Check the error for a dataset the protocol does not cover."""
    protocol = specs.load_protocol("quick")
    with pytest.raises(UserError, match="no entry for dataset 'mnist'"):
        protocol.for_dataset("mnist")


field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=3),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(field=st.sampled_from(sorted(baseline_table())), replacement=field_values)
def test_mutated_baseline_loads_or_fails_cleanly(tmp_path, field, replacement):
    """Check that any single-field change loads or raises a one-line UserError."""
    table = baseline_table()
    if replacement is None:
        table.pop(field)
    else:
        table[field] = replacement
    path = write_toml(tmp_path / "resnetcifar-ns-sn.toml", table)
    try:
        specs.load_baseline(str(path))
    except UserError as error:
        assert str(path) in str(error)
        assert "\n" not in str(error)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda t: t.update(architecture="sndcgan", d_norm="layer"),
            "SNDCGAN's D takes 'spectral' or 'none'",
        ),
        (lambda t: t.update(penalty_weight=1.0), "expected 0.0 without a penalty"),
        (lambda t: t.update(penalty="gp"), "expected a number > 0.0 with penalty 'gp'"),
    ],
)
def test_inconsistent_baseline_is_rejected(tmp_path, change, message):
    """Check combinations compare_gan v2 could not train are named in one line."""
    table = baseline_table()
    change(table)
    path = write_toml(tmp_path / "resnetcifar-ns-sn.toml", table)
    with pytest.raises(UserError, match=message) as caught:
        specs.load_baseline(str(path))
    assert "\n" not in str(caught.value)
