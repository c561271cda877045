"""The `benchmark study` subcommands: list, run, report."""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmark.errors import UserError

DEFAULT_OUT = Path("runs") / "studies"


def _study_dir(args: argparse.Namespace, name: str) -> Path:
    return (args.out if args.out is not None else DEFAULT_OUT) / name


def command_study_list(args: argparse.Namespace) -> int:
    from benchmark.cli import _emit, _format_table
    from benchmark.study.runner import planned_trials
    from benchmark.study.spec import available_studies, load_study

    rows = []
    for name in available_studies():
        spec = load_study(name)
        rows.append(
            {
                "name": name,
                "figure": spec.figure,
                "dataset": spec.dataset,
                "protocol": spec.protocol,
                "methods": [method.label for method in spec.methods],
                "steps": spec.steps,
                "trials": planned_trials(spec),
            }
        )
    _emit(args, rows, _format_table(rows))
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so that Ray is shut down on the way out."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def command_study_run(args: argparse.Namespace) -> int:
    from benchmark.cli import _cache, _emit, _root
    from benchmark.study.executors import InProcessExecutor, ray_executor
    from benchmark.study.runner import run_study
    from benchmark.study.spec import load_study

    spec = load_study(args.spec)
    if args.executor == "inprocess" and args.address is not None:
        raise UserError("--address needs --executor ray")
    if args.executor == "ray" and args.device is not None:
        raise UserError(
            "--device applies to --executor inprocess; Ray gives each trial a GPU "
            "when the cluster has GPUs, else runs it on the CPU"
        )
    for flag, value in (
        ("--workers", args.workers),
        ("--cpus-per-trial", args.cpus_per_trial),
    ):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")

    if args.executor == "ray":

        def factory():
            return ray_executor(args.address, args.workers, args.cpus_per_trial)

    else:

        @contextlib.contextmanager
        def factory():
            yield InProcessExecutor(args.device)

    with _terminate_as_interrupt():
        summary = run_study(
            spec,
            _study_dir(args, spec.name),
            args.storage,
            factory,
            _root(args),
            _cache(args),
            args.extractor,
            allow_download=not args.no_download,
            progress=not args.no_progress,
            threads=args.cpus_per_trial,
        )
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary["trials"].items()))
    _emit(
        args,
        summary,
        f"study {spec.name}: {sum(summary['trials'].values())} of "
        f"{summary['planned_trials']} trials stored ({counts}); database "
        f"{summary['storage']}\nnext: benchmark study report {args.spec}"
        + (f" --out {args.out}" if args.out is not None else ""),
    )
    return 0


def command_study_report(args: argparse.Namespace) -> int:
    from benchmark.cli import _emit
    from benchmark.study.report import write_report
    from benchmark.study.runner import default_storage_url
    from benchmark.study.spec import load_study

    study_specs = [load_study(name) for name in args.specs]
    names = [spec.name for spec in study_specs]
    if len(set(names)) != len(names):
        raise UserError(
            f"a study is named twice in {', '.join(names)}; name each study once"
        )
    entries = []
    for spec in study_specs:
        folder = _study_dir(args, spec.name)
        if args.storage is None and not (folder / "study.db").is_file():
            raise UserError(
                f"no study database at {str(folder / 'study.db')!r}; run "
                f"`benchmark study run {spec.name}` first or pass --out/--storage"
            )
        entries.append((spec, args.storage or default_storage_url(folder)))
    if args.report is not None:
        report_dir = args.report
    elif len(study_specs) == 1:
        report_dir = _study_dir(args, names[0]) / "report"
    else:
        report_dir = (args.out if args.out is not None else DEFAULT_OUT) / (
            "report-" + "+".join(names)
        )
    written = write_report(entries, report_dir)
    _emit(
        args,
        written,
        f"wrote {written['summary']}, {written['trials_csv']} and "
        + ", ".join(written["figures"]),
    )
    return 0


def add_study_parser(
    commands: Any,
    add_root: Callable[[argparse.ArgumentParser], None],
    add_evaluation_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `benchmark study list|run|report` to the command parser."""
    study = commands.add_parser(
        "study",
        help="grid + Bayesian optimisation studies and the paper's figures",
    )
    kinds = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")

    listing = kinds.add_parser(
        "list",
        help="list the packaged study specs (one per figure panel)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  benchmark study list\n  benchmark study list --json",
    )
    listing.add_argument(
        "--json", action="store_true", help="print only JSON to stdout"
    )
    listing.set_defaults(handler=command_study_list)

    out_help = (
        f"parent folder of study folders; the study lives in OUT/<study> "
        f"(default: {DEFAULT_OUT})"
    )
    storage_help = (
        "SQLAlchemy database URL, e.g. postgresql+psycopg://user@host/db for a "
        "study shared by several machines (default: sqlite file OUT/<study>/study.db)"
    )
    run = kinds.add_parser(
        "run",
        help="train and evaluate every trial of a study; resumes where it stopped",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  benchmark study run tiny-cifar10 --root data --workers 2\n"
        "  benchmark study run figure1-lsun --address auto --root /shared/data\n"
        "  benchmark study run tiny-cifar10 --executor inprocess --device cpu\n"
        "Run the same command again after an interruption: finished trials are "
        "kept, unfinished ones start again from their last checkpoint.",
    )
    run.add_argument(
        "spec", help="study spec name (see `benchmark study list`) or TOML path"
    )
    run.add_argument("--out", type=Path, default=None, help=out_help)
    run.add_argument("--storage", default=None, metavar="URL", help=storage_help)
    run.add_argument(
        "--executor",
        choices=("ray", "inprocess"),
        default="ray",
        help="ray: trials as Ray tasks (default); inprocess: one after another "
        "in this process",
    )
    run.add_argument(
        "--address",
        default=None,
        help="an existing Ray cluster (e.g. auto, or ray://head:10001); without "
        "it a local Ray starts and stops with the command",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="CPUs of the local Ray, so at most N trials run at once (default: "
        "all CPUs); ignored with --address",
    )
    run.add_argument(
        "--cpus-per-trial",
        type=int,
        default=1,
        metavar="N",
        help="torch threads of each trial, and the CPUs a Ray trial asks for "
        "(default 1); CPU results depend on it, so keep it when resuming. A Ray "
        "trial also asks for one GPU when the cluster has GPUs",
    )
    add_root(run)
    add_evaluation_options(run)
    run.set_defaults(handler=command_study_run)

    report = kinds.add_parser(
        "report",
        help="write the summary, a CSV of all trials and the figure of studies",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  benchmark study report tiny-cifar10\n"
        "  benchmark study report figure1-celebahq figure1-lsun --report "
        "reports/figure1\n"
        "Several specs become the columns of one figure, as in the paper.",
    )
    report.add_argument(
        "specs", nargs="+", metavar="SPEC", help="study spec names or TOML paths"
    )
    report.add_argument("--out", type=Path, default=None, help=out_help)
    report.add_argument("--storage", default=None, metavar="URL", help=storage_help)
    report.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: OUT/<study>/report, or OUT/report-<a>+<b> "
        "for several studies)",
    )
    report.add_argument("--json", action="store_true", help="print only JSON to stdout")
    report.set_defaults(handler=command_study_report)
