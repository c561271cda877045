"""Study specs: one figure panel of the paper as data.

A study spec (`studies/*.toml`; the wheel ships them under
`benchmark/specs/studies/`) names the slice of the design space that one
panel of Figures 1-4 compares: the dataset, the evaluation protocol, the
methods (loss, D normalisation, penalty, architecture), the seeds per
setting and the training length. It also holds the hyperparameter settings
every method is trained with: the fixed Table 1 grid, then Bayesian
optimisation over the Table 2 ranges.

A setting is one choice of (lr, beta1, beta2, n_disc, lambda); a trial is one
setting trained with one seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.errors import UserError, unknown_name
from benchmark.specs import (
    ARCHITECTURES,
    D_NORMALIZATIONS,
    LOSSES,
    NAME_PATTERN,
    PENALTIES,
    ProtocolSpec,
    _build,
    _check,
    load_dataset,
    load_protocol,
)

# Adam is undefined at beta = 1 (its bias correction divides by 1 - beta^t),
# and torch.optim.Adam rejects it, so a range that ends at 1 is searched up to
# this value.
MAX_BETA = 1.0 - 1e-6


@dataclass(frozen=True)
class MethodSpec:
    """One compared method: a loss, a D normalisation and a penalty.

    `name` is the folder and database key; `label` is the legend entry of
    the paper's figure. An empty `architecture` means the study's default.
    """

    name: str = field(metadata=_check(pattern=NAME_PATTERN))
    label: str
    loss: str = field(metadata=_check(choices=LOSSES))
    d_norm: str = field(metadata=_check(choices=D_NORMALIZATIONS))
    penalty: str = field(metadata=_check(choices=PENALTIES))
    architecture: str = field(default="", metadata=_check(choices=("", *ARCHITECTURES)))


@dataclass(frozen=True)
class AdamSetting:
    """One (beta1, beta2, n_disc) triple of the grid."""

    beta1: float = field(metadata=_check(min=0.0, max_exclusive=1.0))
    beta2: float = field(metadata=_check(min=0.0, max_exclusive=1.0))
    n_disc: int = field(metadata=_check(min=1))


@dataclass(frozen=True)
class GridSpec:
    """The fixed settings (Table 1): the Cartesian product of these lists.

    `penalty_weight` (lambda) applies only to methods with a penalty; a
    method without one gets the product of `lr` and `adam` alone.
    """

    lr: tuple[float, ...] = field(metadata=_check(min_exclusive=0.0))
    penalty_weight: tuple[float, ...] = field(metadata=_check(min_exclusive=0.0))
    adam: tuple[AdamSetting, ...]


@dataclass(frozen=True)
class RangeSpec:
    """A continuous search range, uniform or log-uniform."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class BayesianSpec:
    """Sequential Bayesian optimisation over the Table 2 ranges.

    Each of `rounds` rounds proposes `settings_per_round` settings per
    method from the median-over-seeds FIDs of all earlier settings.
    `penalty_weight_l2` replaces `penalty_weight` for the L2 penalty.
    """

    rounds: int = field(metadata=_check(min=0))
    settings_per_round: int = field(metadata=_check(min=1))
    lr: RangeSpec
    beta1: RangeSpec
    beta2: RangeSpec
    n_disc: tuple[int, ...] = field(metadata=_check(min=1))
    penalty_weight: RangeSpec
    penalty_weight_l2: RangeSpec


@dataclass(frozen=True)
class StudySpec:
    """A figure panel: dataset, protocol, methods, training and settings."""

    name: str = field(metadata=_check(pattern=NAME_PATTERN))
    version: int = field(metadata=_check(min=1))
    description: str
    # The paper figure this panel belongs to, e.g. "1"; reports of several
    # specs are laid out side by side under this title.
    figure: str
    dataset: str
    # A protocol name, or a TOML path (relative paths start at this file).
    protocol: str
    architecture: str = field(metadata=_check(choices=ARCHITECTURES))
    z_dim: int = field(metadata=_check(min=1))
    batch_size: int = field(metadata=_check(min=2))
    steps: int = field(metadata=_check(min=1))
    checkpoint_every: int = field(metadata=_check(min=1))
    eval_every: int = field(metadata=_check(min=1))
    seeds: int = field(metadata=_check(min=1))
    # Seeds the optimiser's proposals and the budget simulations.
    seed: int = field(metadata=_check(min=0, max=2**31 - 1))
    methods: tuple[MethodSpec, ...]
    grid: GridSpec
    bayesian: BayesianSpec
    budget_simulations: int = field(default=1000, metadata=_check(min=1))
    top_fraction: float = field(
        default=0.05, metadata=_check(min_exclusive=0.0, max=1.0)
    )
    path: str = ""

    def method(self, name: str) -> MethodSpec:
        """Return the method called `name`."""
        for method in self.methods:
            if method.name == name:
                return method
        raise unknown_name("method", name, [m.name for m in self.methods])

    def architecture_of(self, method: MethodSpec) -> str:
        """Return the method's architecture, or the study's default."""
        return method.architecture or self.architecture

    def load_protocol(self) -> ProtocolSpec:
        """Load the protocol, resolving a relative path against this file."""
        text = self.protocol
        if text.endswith(".toml") or os.sep in text:
            path = Path(text)
            if not path.is_absolute() and self.path:
                path = Path(self.path).parent / path
            return load_protocol(str(path))
        return load_protocol(text)


@dataclass(frozen=True)
class Setting:
    """One hyperparameter setting; `penalty_weight` is 0 without a penalty."""

    lr: float
    beta1: float
    beta2: float
    n_disc: int
    penalty_weight: float

    def key(self) -> str:
        """Return a short stable id: the first 12 hex digits of SHA-256 of the values."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def grid_settings(spec: StudySpec, method: MethodSpec) -> list[Setting]:
    """Return the grid settings of one method, in a fixed order.

    Without a penalty, lambda does nothing, so the grid has no lambda axis
    (12 settings from Table 1 instead of 24).
    """
    weights = spec.grid.penalty_weight if method.penalty != "none" else (0.0,)
    return [
        Setting(lr, adam.beta1, adam.beta2, adam.n_disc, weight)
        for lr, weight, adam in itertools.product(spec.grid.lr, weights, spec.grid.adam)
    ]


def penalty_weight_range(spec: StudySpec, method: MethodSpec) -> RangeSpec | None:
    """Return the lambda range of a method, or None without a penalty."""
    if method.penalty == "none":
        return None
    if method.penalty == "l2":
        return spec.bayesian.penalty_weight_l2
    return spec.bayesian.penalty_weight


# ----------------------------------------------------------------------------
# Loading


def studies_directory() -> Path:
    """Return the folder of packaged study specs.

    An installed wheel holds them in `benchmark/specs/studies/`; an editable
    install reads the top-level `studies/` folder of the repository.
    """
    packaged = Path(__file__).resolve().parents[1] / "specs" / "studies"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "studies"


def available_studies() -> list[str]:
    """List the names of the packaged study specs."""
    return sorted(path.stem for path in studies_directory().glob("*.toml"))


def load_study(name_or_path: str | os.PathLike) -> StudySpec:
    """Load and validate a study spec by packaged name or by TOML path."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        path = Path(text)
        if not path.is_file():
            raise UserError(f"study spec file not found: {text!r}")
    else:
        path = studies_directory() / f"{text}.toml"
        if not path.is_file():
            raise unknown_name("study", text, available_studies())
    source = str(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{source}: invalid TOML: {error}") from error
    spec = _build(StudySpec, table, source)
    if spec.name != path.stem:
        raise UserError(
            f"{source}: field 'name' is {spec.name!r} but the file is named "
            f"{path.name!r}; make them agree"
        )
    spec = dataclasses.replace(spec, path=source)
    check_study(spec)
    return spec


def _check_range(source: str, where: str, value: RangeSpec, lowest: float) -> None:
    if not (math.isfinite(value.low) and math.isfinite(value.high)):
        raise UserError(f"{source}: field {where!r}: expected finite bounds")
    if not value.low < value.high:
        raise UserError(
            f"{source}: field {where!r}: expected low < high, got "
            f"[{value.low}, {value.high}]"
        )
    if value.low < lowest or (value.log and value.low <= 0.0):
        bound = "> 0" if value.log or lowest > 0 else f">= {lowest}"
        raise UserError(
            f"{source}: field {where!r}: expected low {bound}, got {value.low}"
        )


def check_study(spec: StudySpec) -> None:
    """Reject values that are valid alone but contradict each other or the specs."""
    source = spec.path
    names = [method.name for method in spec.methods]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(
            f"{source}: field 'methods': method name {duplicates[0]!r} appears "
            "twice; give each method its own name"
        )
    for index, method in enumerate(spec.methods):
        where = f"methods[{index}]"
        architecture = spec.architecture_of(method)
        if architecture == "sndcgan" and method.d_norm in ("batch", "layer"):
            raise UserError(
                f"{source}: field '{where}.d_norm': SNDCGAN's D takes 'spectral' "
                f"or 'none' in compare_gan v2, got {method.d_norm!r}"
            )
    bayesian = spec.bayesian
    _check_range(source, "bayesian.lr", bayesian.lr, 0.0)
    _check_range(source, "bayesian.penalty_weight", bayesian.penalty_weight, 0.0)
    _check_range(source, "bayesian.penalty_weight_l2", bayesian.penalty_weight_l2, 0.0)
    for name in ("beta1", "beta2"):
        value = getattr(bayesian, name)
        _check_range(source, f"bayesian.{name}", value, 0.0)
        if value.high > 1.0:
            raise UserError(
                f"{source}: field 'bayesian.{name}.high': expected a number <= 1.0, "
                f"got {value.high}"
            )
    if len(set(bayesian.n_disc)) != len(bayesian.n_disc):
        raise UserError(
            f"{source}: field 'bayesian.n_disc': expected distinct values, got "
            f"{list(bayesian.n_disc)}"
        )
    try:
        load_dataset(spec.dataset)
    except UserError as error:
        raise UserError(f"{source}: field 'dataset': {error}") from None
    try:
        protocol = spec.load_protocol()
    except UserError as error:
        raise UserError(f"{source}: field 'protocol': {error}") from None
    if spec.dataset not in protocol.datasets:
        raise UserError(
            f"{source}: field 'protocol': protocol {protocol.name!r} has no entry "
            f"for dataset {spec.dataset!r}; it covers "
            f"{', '.join(sorted(protocol.datasets))}"
        )
