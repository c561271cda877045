"""Run `benchmark run baseline` for several baselines in one process.

Used by test_determinism.py to train every baseline in separate processes
without paying Python's and torch's start-up once per baseline.

Usage: python determinism_worker.py JOB.json, where JOB.json contains
{"runs": [[argument, ...], ...]}. The worker exits with the first non-zero
status.
"""

from __future__ import annotations

import json
import sys

from benchmark.cli import main

if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        job = json.load(handle)
    for arguments in job["runs"]:
        status = main(arguments)
        if status != 0:
            sys.exit(status)
