"""Progress bars on stderr, the same everywhere in the harness."""

from __future__ import annotations

import sys

from tqdm import tqdm

# On a terminal the bar redraws often. Into a log file or CI output it
# redraws once a minute, so long jobs still show their rate and ETA without
# flooding the log.
INTERACTIVE_INTERVAL_S = 0.1
LOG_INTERVAL_S = 60.0


def progress_bar(
    total: int | None,
    desc: str,
    unit: str,
    enabled: bool = True,
    initial: int = 0,
    unit_scale: bool = False,
) -> tqdm:
    """Return a tqdm bar on stderr; `enabled=False` returns a silent one."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        unit_scale=unit_scale,
        disable=not enabled,
        mininterval=INTERACTIVE_INTERVAL_S if interactive else LOG_INTERVAL_S,
        # tqdm's monitor thread would otherwise force a redraw every 10 s.
        maxinterval=10.0 if interactive else LOG_INTERVAL_S,
        dynamic_ncols=interactive,
        file=sys.stderr,
    )
