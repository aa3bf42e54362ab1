"""Side-by-side timing for the profile scripts: medians of functions called in alternating rounds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(
    fns: dict[str, Callable[[], object]], rounds: int, calls: int, warmup: int = 2
) -> dict[str, float]:
    """Median ms of each function: ``rounds`` rounds of ``calls`` calls each, the functions in
    turn and every other round in reverse order (a shared machine's noise hits all alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            for _ in range(calls):
                start = time.perf_counter()
                fns[name]()
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}
