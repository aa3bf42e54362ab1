"""Result files for the benchmarks: ``bench/results/KIND-DATE.json`` with the machine, the date,
the command and the load average around the measurement, so a README figure can name its source.
"""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import machine  # noqa: E402


def save(
    kind: str, script: str, argv: list[str], result: object, load: list, targets: list | None = None
) -> str:
    """Writes one result file (``targets``: met/missed rows, if any) and returns its path."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {
        "kind": kind,
        "machine": machine(),
        "date": stamp,
        "command": " ".join([f"python bench/{script}", *argv]),
        "load": load,
        "result": result,
    }
    if targets is not None:
        record["targets"] = targets
    path = os.path.join(HERE, "results", f"{kind}-{stamp.replace(':', '')}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"saved {os.path.relpath(path)}")
    return path
