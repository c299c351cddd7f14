"""What a job's work will cost, said once its first unit (an epoch, a grid point) is timed, and a
line per finished unit where no progress bar shows: a researcher knows within seconds how long it
will take, and gets cheaper options when that is more than an hour."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from landscape_exp.format import duration
from landscape_exp.job.context import RunContext

LONG = 3600.0  # seconds past which the estimate comes with cheaper options


def announce_cost(what: str, unit: str, seconds_per_unit: float, remaining: int, cheaper: Callable[[], str]) -> None:
    """``<what>: about T for N <unit>s (t per <unit>)``, with cheaper options past an hour."""
    total = seconds_per_unit * remaining
    if remaining <= 0 or total < 10:
        return
    print(f"{what}: about {duration(total)} for {remaining:,} {unit}s ({duration(seconds_per_unit)} per {unit}, measured)")
    if total > LONG:
        print(f"warning: {what} will take about {duration(total)}; cheaper: {cheaper()}")


def unit_done(what: str, unit: str, detail: str, seconds: float, left: int, first: bool, cheaper: Callable[[], str]) -> None:
    """A line for a finished unit of work where no progress bar shows (a log file, a batch job):
    ``<what>: <detail> (<time>; N <unit>s left)``, and after the first, the cost of the rest."""
    print(f"{what}: {detail} ({duration(seconds)}; {left} {unit}{'' if left == 1 else 's'} left)")
    if first:
        announce_cost(what, unit, seconds, left, cheaper)


def training_cheaper(ctx: RunContext) -> str:
    return ("fewer epochs (optim.epochs=N), a larger batch (optim.batch_size), a GPU (device=cuda), "
            "or an existing checkpoint (checkpoint=<file>)")


def timed_points(points: Iterator[tuple[int, dict[str, float]]], remaining: int, cheaper: Callable[[], str],
                 what: str = "surface", settle: int = 4, slow: float = 30.0) -> Iterator[tuple[int, dict[str, float]]]:
    """Pass ``points`` through; once ``settle`` points are done (or two seconds have passed) say
    what the rest will cost, at the rate after the first point (which carries the warm-up). A
    first point slower than ``slow`` seconds (a Hessian at each point of a large model) is the
    rate itself: its warm-up is small beside it, and waiting for a second one would leave the
    researcher without a word for as long again."""
    t0 = time.perf_counter()
    t1 = None
    for i, item in enumerate(points):
        yield item
        now = time.perf_counter()
        if i == 0:
            t1 = now
            if now - t0 > slow:
                announce_cost(what, "point", now - t0, remaining - 1, cheaper)
                t1 = None
        if t1 is not None and (i + 1 == min(settle, remaining) or now - t0 > 2.0):
            rate = (now - t1) / i if i > 0 else now - t0
            announce_cost(what, "point", rate, remaining - i - 1, cheaper)
            t1 = None
