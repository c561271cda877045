"""Reference FIDs per protocol, with tolerances and the reasons for them.

`references/<protocol>.toml` lists the numbers that `benchmark check` compares
results with. They live beside the protocol file, not inside it, so adding a
reference does not change the protocol file or its hash. Two kinds exist:

* Published FIDs of the named baselines come from the baseline specs'
  `[[published]]` entries. The references file only adds, per dataset, the
  tolerance around them (`[published_tolerance.<dataset>]`): max(`minimum`,
  `relative` x published FID).
* Measured FIDs (`[[measured]]`) were produced with this harness: real-vs-real
  floors (`kind = "split"`: FID of `count` images of `split` against the
  protocol's reference set) and golden training runs (`kind = "run"`: the
  median over seeds of the best FID of a short run, the baseline with some
  settings overridden). Each names the split digests of the
  store it was measured on and the extractor files it holds for.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import benchmark.specs
from benchmark.errors import UserError
from benchmark.specs import NAME_PATTERN, SHA256_PATTERN, _build, _check

REFERENCE_KINDS = ("split", "run")


@dataclass(frozen=True)
class PublishedTolerance:
    """Tolerance around published FIDs on one dataset, and why it is that wide."""

    relative: float = field(metadata=_check(min=0.0))
    minimum: float = field(metadata=_check(min=0.0))
    reason: str

    def for_fid(self, fid: float) -> float:
        """Return the absolute tolerance around a published `fid`."""
        return max(self.minimum, self.relative * fid)


@dataclass(frozen=True)
class MeasuredReference:
    """A FID measured with this harness, to be reproduced within `tolerance`.

    For `kind = "split"`, `split` and `count` name the sample. For
    `kind = "run"`, `baseline`, `overrides` and `seeds` name the training
    run: the baseline with exactly these command-line overrides.
    """

    name: str = field(metadata=_check(pattern=NAME_PATTERN))
    kind: str = field(metadata=_check(choices=REFERENCE_KINDS))
    dataset: str
    fid: float = field(metadata=_check(min=0.0))
    tolerance: float = field(metadata=_check(min=0.0))
    reason: str
    source: str
    # Split digests of the store the FID was measured on, by split name.
    split_digests: dict[str, str] = field(metadata=_check(pattern=SHA256_PATTERN))
    extractor_sha256: tuple[str, ...] = field(metadata=_check(pattern=SHA256_PATTERN))
    split: str = ""
    count: int = field(default=0, metadata=_check(min=0))
    baseline: str = ""
    overrides: dict[str, int] = field(default_factory=dict, metadata=_check(min=1))
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class ReferenceSet:
    """Every reference FID of one protocol version."""

    protocol: str = field(metadata=_check(pattern=NAME_PATTERN))
    protocol_version: int = field(metadata=_check(min=1))
    published_tolerance: dict[str, PublishedTolerance] = field(default_factory=dict)
    measured: tuple[MeasuredReference, ...] = ()
    path: str = ""


def _check_measured(reference: MeasuredReference, source: str) -> None:
    """Reject a measured reference whose fields do not fit its kind."""
    where = f"{source}: reference {reference.name!r}"
    if reference.kind == "split" and (not reference.split or reference.count < 2):
        raise UserError(
            f"{where}: kind 'split' needs 'split' and a 'count' of at least 2"
        )
    if reference.kind == "run" and (
        not reference.baseline or not reference.overrides or not reference.seeds
    ):
        raise UserError(
            f"{where}: kind 'run' needs 'baseline', 'overrides' and 'seeds'; a "
            "run of the unmodified baseline is held against its published FIDs"
        )


def references_directory() -> Path:
    """Return the folder of packaged references files.

    An installed wheel contains them in `benchmark/specs/references/`; an
    editable install reads the top-level `references/` of the repository.
    """
    packaged = Path(benchmark.specs.__file__).parent / "references"
    if packaged.is_dir():
        return packaged
    return Path(benchmark.specs.__file__).resolve().parents[2] / "references"


def references_path(protocol: str) -> Path:
    """Return the packaged references file of a protocol (it may not exist)."""
    return references_directory() / f"{protocol}.toml"


def load_references(
    protocol: str, path: str | os.PathLike | None = None
) -> ReferenceSet:
    """Load the references of a protocol, or an empty set when it has none.

    Args:
        protocol: Protocol name; the file must name the same protocol.
        path: File to read instead of the packaged `references/<protocol>.toml`.

    Raises:
        UserError: If the file is invalid or names another protocol.
    """
    file = Path(path) if path is not None else references_path(protocol)
    if path is None and not file.is_file():
        return ReferenceSet(protocol=protocol, protocol_version=1, path="")
    if not file.is_file():
        raise UserError(f"references file not found: {str(file)!r}")
    source = str(file)
    try:
        table = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{source}: invalid TOML: {error}") from error
    references = _build(ReferenceSet, table, source)
    if references.protocol != protocol:
        raise UserError(
            f"{source}: field 'protocol' is {references.protocol!r}, expected "
            f"{protocol!r}; each references file belongs to one protocol"
        )
    names = [reference.name for reference in references.measured]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(
            f"{source}: reference name {duplicates[0]!r} appears twice; "
            "give each [[measured]] entry its own name"
        )
    for reference in references.measured:
        _check_measured(reference, source)
    return ReferenceSet(**{**references.__dict__, "path": source})
