"""Study specs: the packaged panels, Tables 1 and 2, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.errors import UserError
from benchmark.study.spec import (
    available_studies,
    grid_settings,
    load_study,
    penalty_weight_range,
)

FIGURE_LABELS = {
    "1": ["W/O", "BN", "LN", "SN", "GP", "DR", "L2"],
    "2": ["NS-SN", "WGAN-SN", "LS-SN", "NS-GP", "WGAN-GP", "LS-GP"],
    "3": ["SNDCGAN-SN", "SNDCGAN-GP", "ResNet19-SN", "ResNet19-GP"],
    "4": ["SN+GP", "SN+DR", "SN+L2", "LN+GP", "LN+DR", "LN+L2"],
}


def test_every_figure_has_two_dataset_panels():
    """Check one packaged spec per figure and dataset, and the demo spec."""
    names = set(available_studies())
    for figure in FIGURE_LABELS:
        assert {f"figure{figure}-celebahq", f"figure{figure}-lsun"} <= names
    assert "tiny-cifar10" in names


@pytest.mark.parametrize(
    "name", [n for n in available_studies() if n.startswith("fig")]
)
def test_figure_spec_matches_paper(name):
    """Check methods, seeds, steps, Table 1 and Table 2 of every figure panel."""
    spec = load_study(name)
    assert [m.label for m in spec.methods] == FIGURE_LABELS[spec.figure]
    assert spec.seeds == 5
    assert spec.steps == 100_000
    assert spec.batch_size == 64
    assert spec.protocol == "kurach2019"
    assert spec.budget_simulations == 1000
    assert spec.top_fraction == 0.05
    assert spec.grid.lr == (2e-4, 1e-4, 1e-3)
    assert spec.grid.penalty_weight == (1.0, 10.0)
    triples = [(a.beta1, a.beta2, a.n_disc) for a in spec.grid.adam]
    assert triples == [(0.5, 0.9, 5), (0.5, 0.999, 1), (0.5, 0.999, 5), (0.9, 0.999, 5)]
    bayesian = spec.bayesian
    assert (bayesian.rounds, bayesian.settings_per_round) == (12, 10)
    assert (bayesian.lr.low, bayesian.lr.high, bayesian.lr.log) == (1e-5, 1e-2, True)
    assert (bayesian.beta1.low, bayesian.beta1.high) == (0.0, 1.0)
    assert not bayesian.beta1.log
    assert not bayesian.beta2.log
    assert bayesian.n_disc == (1, 5)
    for method in spec.methods:
        settings = grid_settings(spec, method)
        weight = penalty_weight_range(spec, method)
        if method.penalty == "none":
            assert len(settings) == 12
            assert weight is None
        else:
            assert len(settings) == 24
            assert len({s.key() for s in settings}) == 24
            expected = (1e-4, 10.0) if method.penalty == "l2" else (0.1, 100.0)
            assert (weight.low, weight.high) == expected


def test_figure3_compares_architectures():
    """Check Figure 3's methods name SNDCGAN and ResNet19."""
    spec = load_study("figure3-lsun")
    assert [spec.architecture_of(m) for m in spec.methods] == [
        "sndcgan",
        "sndcgan",
        "resnet19",
        "resnet19",
    ]


def write_spec(tmp_path: Path, *replacements: tuple[str, str], name="bad") -> Path:
    """Write a copy of the demo spec with text replacements."""
    text = Path(load_study("tiny-cifar10").path).read_text()
    text = text.replace('name = "tiny-cifar10"', f'name = "{name}"')
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "case",
    [
        (("seeds = 2", "seeds = 0"), "field 'seeds': expected an integer >= 1, got 0"),
        (("seeds = 2", "seeds = 2\ncolour = 1"), "unknown field 'colour'"),
        (('name = "gp"', 'name = "sn"'), "method name 'sn' appears twice"),
        (('dataset = "cifar10"', 'dataset = "cifar1"'), "did you mean 'cifar10'"),
        (
            ('protocol = "smoke"', 'protocol = "kurach"'),
            "field 'protocol': unknown protocol",
        ),
        (
            (
                "lr = { low = 1e-5, high = 1e-2, log = true }",
                "lr = { low = 1e-2, high = 1e-5, log = true }",
            ),
            "field 'bayesian.lr': expected low < high",
        ),
        (
            ("beta2 = { low = 0.0, high = 1.0 }", "beta2 = { low = 0.0, high = 1.5 }"),
            "field 'bayesian.beta2.high': expected a number <= 1.0",
        ),
        (
            ("penalty_weight_l2 = { low = 1e-4", "penalty_weight_l2 = { low = 0.0"),
            "field 'bayesian.penalty_weight_l2': expected low > 0",
        ),
        (
            ('architecture = "resnet_cifar"', 'architecture = "sndcgan"'),
            ('d_norm = "none"', 'd_norm = "batch"'),
            "field 'methods[1].d_norm': SNDCGAN's D takes 'spectral' or 'none'",
        ),
        (("beta1 = 0.5\n", "beta1 = 1.0\n"), "field 'grid.adam[0].beta1'"),
    ],
)
def test_invalid_spec_fails_in_one_line(tmp_path, case):
    """Check each mistake gives one line naming the file and the field."""
    *replacements, message = case
    path = write_spec(tmp_path, *replacements)
    with pytest.raises(UserError) as raised:
        load_study(path)
    text = str(raised.value)
    assert "\n" not in text
    assert message in text
    assert str(path) in text


def test_protocol_must_cover_dataset(tmp_path):
    """Check a protocol without the study's dataset is rejected."""
    protocol = Path(load_study("tiny-cifar10").load_protocol().path).read_text()
    header = protocol[: protocol.index("[datasets.")]
    (tmp_path / "other.toml").write_text(
        header.replace('name = "smoke"', 'name = "other"')
        + '[datasets.lsun]\nreal_split = "test"\nreal_count = 100\nfake_count = 100\n'
    )
    path = write_spec(tmp_path, ('protocol = "smoke"', 'protocol = "other.toml"'))
    with pytest.raises(UserError, match="has no entry for dataset 'cifar10'"):
        load_study(path)


def test_unknown_study_suggests_close_name():
    """Check a misspelt study name lists the close match."""
    with pytest.raises(UserError, match="did you mean 'figure1-lsun'"):
        load_study("figure1-lsn")


def test_file_name_must_match_name(tmp_path):
    """Check the name field and the file name agree."""
    path = write_spec(tmp_path, name="right")
    path.rename(tmp_path / "wrong.toml")
    with pytest.raises(UserError, match="make them agree"):
        load_study(tmp_path / "wrong.toml")
