"""Spec files (datasets, protocols, baselines) loaded into frozen dataclasses.

Specs are TOML files in the top-level `datasets/`, `protocols/` and
`baselines/` folders; the wheel ships them under `benchmark/specs/`. Each file
is validated against the dataclass that describes it: unknown keys, missing
keys, wrong types and out-of-range values are rejected with one line naming the
file, the field and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmark.errors import UserError, unknown_name

SPEC_KINDS = ("datasets", "protocols", "baselines")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
MD5_PATTERN = re.compile(r"^[0-9a-f]{32}$")
# Checksums a spec leaves empty where none has been published.
OPTIONAL_SHA256_PATTERN = re.compile(r"^([0-9a-f]{64})?$")
OPTIONAL_MD5_PATTERN = re.compile(r"^([0-9a-f]{32})?$")

# Pinned image pipelines, implemented in benchmark.data.imageops.
PREPROCESSING = ("none", "tf_resize_with_crop_or_pad", "box_downsample")
SPLIT_RULES = ("sha256_rank",)

ARCHITECTURES = ("resnet_cifar", "resnet19", "sndcgan")
LOSSES = ("ns", "mm", "wgan", "ls", "hinge")
D_NORMALIZATIONS = ("none", "batch", "layer", "spectral")
PENALTIES = ("none", "gp", "dragan", "l2")


def _check(**constraints: Any) -> dict[str, Any]:
    """Return dataclass field metadata holding validation constraints."""
    return {"check": constraints}


# ----------------------------------------------------------------------------
# Dataset specs


@dataclass(frozen=True)
class SourceSpec:
    """Where the official release of a dataset comes from and how to check it.

    `md5`, `sha256` and `size` describe the downloadable file `filename`;
    empty or 0 where no checksum has been published. `checksum_origin` names
    who published them. `images` is the number of images (source keys) in the
    complete release, or 0 when it is the sum of the split counts. `download` tells
    whether `benchmark prepare` may fetch `url` itself.
    """

    url: str
    filename: str
    md5: str = field(default="", metadata=_check(pattern=OPTIONAL_MD5_PATTERN))
    sha256: str = field(default="", metadata=_check(pattern=OPTIONAL_SHA256_PATTERN))
    size: int = field(default=0, metadata=_check(min=0))
    checksum_origin: str = ""
    images: int = field(default=0, metadata=_check(min=0))
    download: bool = True
    member_md5: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitRuleSpec:
    """A split chosen by ranking source keys on SHA-256(salt + key).

    The `count` smallest-ranked keys whose image decodes form split `split`
    (count from the dataset's `splits`); every other decodable key goes to the
    dataset's other split.
    """

    kind: str = field(metadata=_check(choices=SPLIT_RULES))
    salt: str
    split: str


@dataclass(frozen=True)
class DatasetSpec:
    """A prepared dataset: image shape, exact split counts and source.

    Without a `split_rule` the source defines the splits (CIFAR-10's official
    train/test). With one, `splits` gives the counts of the complete release.
    The ranked split always has its count, while the other split has fewer
    images when the release contains undecodable ones. `expected_digests`
    holds the split digests measured on the complete release, by split name.
    """

    name: str = field(metadata=_check(pattern=NAME_PATTERN))
    version: int = field(metadata=_check(min=1))
    description: str
    resolution: int = field(metadata=_check(min=1))
    channels: int = field(metadata=_check(choices=(1, 3)))
    splits: dict[str, int]
    source: SourceSpec
    preprocessing: str = field(metadata=_check(choices=PREPROCESSING))
    split_rule: SplitRuleSpec | None = None
    expected_digests: dict[str, str] = field(
        default_factory=dict, metadata=_check(pattern=SHA256_PATTERN)
    )
    path: str = ""


# ----------------------------------------------------------------------------
# Protocol specs


@dataclass(frozen=True)
class ExtractorRequirement:
    """The feature network a protocol accepts, pinned by file hashes."""

    name: str
    sha256: tuple[str, ...] = field(metadata=_check(pattern=SHA256_PATTERN))


@dataclass(frozen=True)
class ProtocolDataset:
    """Sample counts and reference split of one dataset under a protocol."""

    real_split: str
    real_count: int = field(metadata=_check(min=2))
    fake_count: int = field(metadata=_check(min=2))


@dataclass(frozen=True)
class ProtocolSpec:
    """Everything that moves a reported metric: counts, split, network, resize."""

    name: str = field(metadata=_check(pattern=NAME_PATTERN))
    version: int = field(metadata=_check(min=1))
    description: str
    extractor: ExtractorRequirement
    resize: str = field(metadata=_check(choices=("tf1_bilinear",)))
    # The TF Inception network takes 299x299 input only.
    image_size: int = field(metadata=_check(choices=(299,)))
    inception_batch: int = field(metadata=_check(min=1))
    # NumPy's legacy RandomState takes seeds in [0, 2**32 - 1].
    fake_seed: int = field(metadata=_check(min=0, max=2**32 - 1))
    quantize_fakes: bool
    kid_block_size: int = field(metadata=_check(min=2))
    is_splits: int = field(metadata=_check(min=1))
    datasets: dict[str, ProtocolDataset]
    path: str = ""

    def for_dataset(self, dataset: str) -> ProtocolDataset:
        """Return the counts for `dataset`, or raise a one-line error."""
        try:
            return self.datasets[dataset]
        except KeyError:
            raise UserError(
                f"protocol {self.name!r} has no entry for dataset {dataset!r}; "
                f"it covers {', '.join(sorted(self.datasets))}"
            ) from None


# ----------------------------------------------------------------------------
# Baseline specs


@dataclass(frozen=True)
class OptimizerSpec:
    """Adam settings as compare_gan used them (same for G and D)."""

    name: str = field(metadata=_check(choices=("adam",)))
    lr: float = field(metadata=_check(min_exclusive=0.0))
    # At 1.0 Adam's bias correction 1 - beta^t is zero and the update divides by it.
    beta1: float = field(metadata=_check(min=0.0, max_exclusive=1.0))
    beta2: float = field(metadata=_check(min=0.0, max_exclusive=1.0))


@dataclass(frozen=True)
class PublishedResult:
    """A number published for a baseline and where it comes from."""

    fid: float = field(metadata=_check(min=0.0))
    source: str
    protocol: str


@dataclass(frozen=True)
class BaselineSpec:
    """A named model configuration: architecture, loss, normalisation, training."""

    name: str = field(metadata=_check(pattern=NAME_PATTERN))
    version: int = field(metadata=_check(min=1))
    description: str
    dataset: str
    architecture: str = field(metadata=_check(choices=ARCHITECTURES))
    loss: str = field(metadata=_check(choices=LOSSES))
    d_norm: str = field(metadata=_check(choices=D_NORMALIZATIONS))
    penalty: str = field(metadata=_check(choices=PENALTIES))
    penalty_weight: float = field(metadata=_check(min=0.0))
    z_dim: int = field(metadata=_check(min=1))
    batch_size: int = field(metadata=_check(min=2))
    steps: int = field(metadata=_check(min=1))
    n_disc: int = field(metadata=_check(min=1))
    checkpoint_every: int = field(metadata=_check(min=1))
    eval_every: int = field(metadata=_check(min=1))
    optimizer: OptimizerSpec
    # Every published result of this exact configuration (several released
    # models share one configuration and differ only by training run).
    published: tuple[PublishedResult, ...] = ()
    path: str = ""

    def check(self) -> None:
        """Reject combinations that compare_gan v2 could not train."""
        if self.architecture == "sndcgan" and self.d_norm in ("batch", "layer"):
            raise UserError(
                f"{self.path}: field 'd_norm': SNDCGAN's D takes 'spectral' or "
                f"'none' in compare_gan v2, got {self.d_norm!r}"
            )
        if self.penalty == "none" and self.penalty_weight != 0.0:
            raise UserError(
                f"{self.path}: field 'penalty_weight': expected 0.0 without a "
                f"penalty, got {self.penalty_weight!r}"
            )
        if self.penalty != "none" and self.penalty_weight <= 0.0:
            raise UserError(
                f"{self.path}: field 'penalty_weight': expected a number > 0.0 "
                f"with penalty {self.penalty!r}, got {self.penalty_weight!r}"
            )


SpecT = TypeVar("SpecT")


# ----------------------------------------------------------------------------
# Validation


def _describe(constraints: dict[str, Any], kind: str) -> str:
    if "choices" in constraints:
        text = f"one of {', '.join(repr(c) for c in constraints['choices'])}"
    else:
        lower = constraints.get("min", constraints.get("min_exclusive"))
        upper = constraints.get("max", constraints.get("max_exclusive"))
        if lower is not None and upper is not None:
            opening = "[" if "min" in constraints else "("
            closing = "]" if "max" in constraints else ")"
            text = f"{kind} in {opening}{lower}, {upper}{closing}"
        elif lower is not None:
            text = f"{kind} {'>=' if 'min' in constraints else '>'} {lower}"
        elif upper is not None:
            text = f"{kind} {'<=' if 'max' in constraints else '<'} {upper}"
        else:
            text = kind
    if "pattern" in constraints:
        text += f" matching {constraints['pattern'].pattern}"
    return text


def _fail(source: str, where: str, expected: str, value: Any) -> UserError:
    return UserError(f"{source}: field {where!r}: expected {expected}, got {value!r}")


def _check_scalar(value: Any, kind: type, constraints: dict, source: str, where: str):
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
    }
    expected = _describe(constraints, names[kind])
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise _fail(source, where, expected, value)
    if "choices" in constraints and value not in constraints["choices"]:
        raise _fail(source, where, expected, value)
    if "min" in constraints and value < constraints["min"]:
        raise _fail(source, where, expected, value)
    if "min_exclusive" in constraints and value <= constraints["min_exclusive"]:
        raise _fail(source, where, expected, value)
    if "max" in constraints and value > constraints["max"]:
        raise _fail(source, where, expected, value)
    if "max_exclusive" in constraints and value >= constraints["max_exclusive"]:
        raise _fail(source, where, expected, value)
    if "pattern" in constraints and not constraints["pattern"].match(value):
        raise _fail(source, where, expected, value)
    return value


def _convert(value: Any, annotation: Any, constraints: dict, source: str, where: str):
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        # Only `X | None` is used: None is written by leaving the table out.
        inner = next(a for a in arguments if a is not type(None))
        return _convert(value, inner, constraints, source, where)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise _fail(source, where, "a table", value)
        return _build(annotation, value, source, where + ".")
    if origin is tuple:
        if not isinstance(value, list) or not value:
            raise _fail(source, where, "a non-empty list", value)
        return tuple(
            _convert(item, arguments[0], constraints, source, f"{where}[{index}]")
            for index, item in enumerate(value)
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(source, where, "a table", value)
        return {
            key: _convert(item, arguments[1], constraints, source, f"{where}.{key}")
            for key, item in value.items()
        }
    return _check_scalar(value, annotation, constraints, source, where)


def _build(
    cls: type[SpecT], table: dict[str, Any], source: str, prefix: str = ""
) -> SpecT:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise UserError(
            f"{source}: unknown field {prefix + unknown[0]!r}; "
            f"allowed fields are {', '.join(prefix + name for name in fields)}"
        )
    values = {}
    for name, spec_field in fields.items():
        where = prefix + name
        if name not in table:
            has_default = (
                spec_field.default is not dataclasses.MISSING
                or spec_field.default_factory is not dataclasses.MISSING
            )
            if not has_default:
                raise UserError(f"{source}: missing field {where!r}")
            continue
        constraints = spec_field.metadata.get("check", {})
        values[name] = _convert(table[name], hints[name], constraints, source, where)
    return cls(**values)


# ----------------------------------------------------------------------------
# Lookup


def spec_directory(kind: str) -> Path:
    """Return the folder of packaged specs of one kind.

    An installed wheel holds them in `benchmark/specs/<kind>/`; an editable
    install reads the top-level folders of the repository.
    """
    if kind not in SPEC_KINDS:
        raise ValueError(f"unknown spec kind {kind!r}")
    packaged = Path(__file__).parent / kind
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / kind


def available(kind: str) -> list[str]:
    """List the names of the packaged specs of one kind."""
    return sorted(path.stem for path in spec_directory(kind).glob("*.toml"))


def _load(kind: str, cls: type[SpecT], name_or_path: str | os.PathLike) -> SpecT:
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        path = Path(text)
        if not path.is_file():
            raise UserError(f"spec file not found: {text!r}")
    else:
        path = spec_directory(kind) / f"{text}.toml"
        if not path.is_file():
            raise unknown_name(kind.rstrip("s"), text, available(kind))
    source = str(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{source}: invalid TOML: {error}") from error
    spec = _build(cls, table, source)
    if spec.name != path.stem:
        raise UserError(
            f"{source}: field 'name' is {spec.name!r} but the file is named "
            f"{path.name!r}; make them agree"
        )
    return dataclasses.replace(spec, path=source)


def load_dataset(name_or_path: str | os.PathLike) -> DatasetSpec:
    """Load a dataset spec by packaged name or by path to a TOML file."""
    spec = _load("datasets", DatasetSpec, name_or_path)
    _check_dataset_fields(spec)
    return spec


def _check_dataset_fields(spec: DatasetSpec) -> None:
    """Reject dataset fields that are valid alone but contradict each other."""
    names = ", ".join(spec.splits)
    rule = spec.split_rule
    if rule is not None:
        if len(spec.splits) != 2 or rule.split not in spec.splits:
            raise UserError(
                f"{spec.path}: field 'split_rule.split': expected one of two "
                f"splits listed in 'splits' (found {names}), got {rule.split!r}"
            )
        total = sum(spec.splits.values())
        if spec.source.images and spec.source.images != total:
            raise UserError(
                f"{spec.path}: field 'source.images' is {spec.source.images} but "
                f"the split counts add up to {total}; make them agree"
            )
    for split in spec.expected_digests:
        if split not in spec.splits:
            raise UserError(
                f"{spec.path}: field 'expected_digests.{split}': expected a split "
                f"listed in 'splits' ({names})"
            )


def load_protocol(name_or_path: str | os.PathLike) -> ProtocolSpec:
    """Load a protocol spec by packaged name or by path to a TOML file."""
    return _load("protocols", ProtocolSpec, name_or_path)


def load_baseline(name_or_path: str | os.PathLike) -> BaselineSpec:
    """Load a baseline spec by packaged name or by path to a TOML file."""
    spec = _load("baselines", BaselineSpec, name_or_path)
    spec.check()
    return spec


def as_dict(spec: Any) -> dict[str, Any]:
    """Return a spec as nested dicts (tuples stay tuples; JSON writes them as lists)."""
    return dataclasses.asdict(spec)


# Protocol fields that cannot move a number: where the file is, its text, and
# the Inception batch, which changes no bit of the features
# (tests/test_determinism.py, tests/metrics/test_real_features.py).
PROTOCOL_FIELDS_WITHOUT_EFFECT = ("path", "description", "inception_batch")


def protocol_settings(protocol: dict[str, Any]) -> dict[str, Any]:
    """Return the settings of a recorded protocol spec that can move numbers."""
    return {
        key: value
        for key, value in protocol.items()
        if key not in PROTOCOL_FIELDS_WITHOUT_EFFECT
    }


def protocol_settings_changed(
    first: dict[str, Any], second: dict[str, Any]
) -> list[str]:
    """Return the sorted names of the settings that differ between two protocols."""
    settings_a, settings_b = protocol_settings(first), protocol_settings(second)
    keys = set(settings_a) | set(settings_b)
    return sorted(key for key in keys if settings_a.get(key) != settings_b.get(key))
