"""Deterministic fault injection for tests of interruption and resumption.

Code that writes results calls `reach(point)` at a few named points. When the
environment variable `BENCHMARK_FAULT` names that point, the process stops
itself there, so a test can kill a run at an exact place (during a checkpoint
write, during an evaluation) without timing guesses. Unset, `reach` does
nothing but read one environment variable.

Format: `ACTION:POINT` or `ACTION:POINT@N`, where the fault fires the N-th
time (1-based, default 1) this process reaches POINT. Actions:

* `kill`: SIGKILL to itself, like `kill -9` or an out-of-memory kill: no
  handler, no cleanup, no flush.
* `stop`: SIGSTOP to itself, so a test can act while the process is frozen
  at the point (for example start a second run into the same folder), then
  continue or kill it.

Points (`POINTS`):

* `checkpoint-write`: a checkpoint's bytes and digest file are written, and
  the checkpoint is not yet renamed to its final name.
* `evaluation`: an evaluation's metrics are computed and not yet appended to
  evals.jsonl.
* `record-write`: a seed's record.json is about to be written.
* `step`: a training step's update is done, and its log line and checkpoint
  are not yet written.
"""

from __future__ import annotations

import os
import signal

from benchmark.errors import UserError

FAULT_VARIABLE = "BENCHMARK_FAULT"
POINTS = ("checkpoint-write", "evaluation", "record-write", "step")
ACTIONS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}

_reached: dict[str, int] = {}


def parse_fault(text: str) -> tuple[str, str, int]:
    """Parse `ACTION:POINT[@N]` into (action, point, N).

    Raises:
        UserError: the text does not follow the format, or names an unknown
            action or point.
    """
    action, _, target = text.partition(":")
    point, _, count_text = target.partition("@")
    expected = (
        f"expected ACTION:POINT[@N] with ACTION in {', '.join(ACTIONS)} and POINT "
        f"in {', '.join(POINTS)}"
    )
    if action not in ACTIONS or point not in POINTS:
        raise UserError(f"invalid ${FAULT_VARIABLE} {text!r}: {expected}")
    if not count_text:
        return action, point, 1
    if not count_text.isdigit() or int(count_text) < 1:
        raise UserError(
            f"invalid ${FAULT_VARIABLE} {text!r}: N must be a positive integer"
        )
    return action, point, int(count_text)


def reach(point: str) -> None:
    """Mark that this process reached `point`; fire the configured fault if due."""
    text = os.environ.get(FAULT_VARIABLE)
    if not text:
        return
    action, target, count = parse_fault(text)
    if target != point:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] == count:
        os.kill(os.getpid(), ACTIONS[action])
