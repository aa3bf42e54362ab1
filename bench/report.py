"""Writes the README's benchmark tables from the committed result files in bench/results/.

Every table is generated between marker lines in README.md (``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->``, NAME one of run, tiny, scale); each names the machine, the date, the
command and the load average of the files it shows. For each row the newest result wins.

Usage: ``python bench/report.py`` (rewrites README.md), ``python bench/report.py --print``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(os.path.dirname(HERE), "README.md")
MODELS = [("constant-mask", "hand-written mask"), ("masked-dense", "MaskedDense dense"),
          ("masked-dense-where", "dense on tf.where"), ("masked-sparse", "MaskedDense sparse"), ("masked-auto", "MaskedDense auto"),
          ("beyondml", "BeyondML"), ("gennet", "GenNet LD1D")]  # fmt: skip
OP_NAMES = {"all": "train all", "unit": "`out[1]`", "freeze": "`freeze=out[0]`",
            "fit": "`model.fit`"}  # fmt: skip


def load_results() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(glob.glob(os.path.join(HERE, "results", "*.json"))):
        with open(path) as f:
            found.append((os.path.basename(path), json.load(f)))
    return found


def _source(name: str, record: dict, loads: list) -> str:
    machine = record["machine"]
    low = min(min(a) for a in loads) if loads else None
    high = max(max(a) for a in loads) if loads else None
    load = f", load average {low:.1f}-{high:.1f}" if loads else ""
    return (f"`{name}`: {machine['cpu']} ({machine['cores']} cores), {record['date']}, "
            f"`{record['command']}`{load}")  # fmt: skip


def _pct(d: float) -> str:
    return f"{d * 100:g}%"


def _best_impl(target: dict, row: dict, group: dict) -> dict:
    """The "auto within 10% of the best impl" verdict, judged on the dedicated models.

    ``masked-auto`` runs the same code as ``masked-dense`` or ``masked-sparse``; comparing its
    own timing with theirs would measure noise. The verdict is whether the implementation it
    chose was within 10% of the faster one, per round (median over rounds).
    """
    times = group.get("times", {})
    if target["reference"] != "best" or "masked-sparse" not in times:
        return target
    chosen = times["masked-" + row["impl"]]
    ratios = [
        c / min(a, b) for c, a, b in zip(chosen, times["masked-dense"], times["masked-sparse"])
    ]
    value = statistics.median(ratios)
    return {**target, "ratio": value, "met": value <= target["limit"], "rounds": ratios}


def _rounds(target: dict, row: dict, group: dict) -> list[float]:
    """The per-round ratios behind a target's median (empty when the file has no times)."""
    if "rounds" in target:
        return target["rounds"]
    times = group.get("times", {})
    model, reference = times.get(row["model"]), times.get(target["reference"])
    if not model or not reference:
        return []
    return [m / r for m, r in zip(model, reference)]


def _spread(ratios: list[float]) -> str:
    """The quartiles of the per-round ratios as " (q1-q3)", or "" with fewer than 3 rounds."""
    if len(ratios) < 3:
        return ""
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return f" ({q1:.2f}-{q3:.2f})"


def run_table(results: list[tuple[str, dict]]) -> str:
    rows, sources = {}, {}
    for name, record in results:
        if record.get("kind") != "run":
            continue
        for group in record["groups"]:
            if "rows" not in group:
                continue
            spec = group["spec"]
            key = (spec["n"], spec["batch"], spec["optimizer"], spec["op"], spec["density"])
            rows[key] = (name, group)  # newer files sort later and win
            sources.setdefault(name, (record, []))[1].extend(group["load"])
    if not rows:
        return "_no results yet: run `python bench/run.py --quick`_"
    header = ("| layer | batch | optimizer | op | density | Dense ms | "
              + " | ".join(label for _, label in MODELS) + " | targets |")  # fmt: skip
    lines = [header, "|" + "---|" * (7 + len(MODELS))]
    met = missed = 0
    used = set()
    order = {"all": 0, "unit": 1, "freeze": 2, "fit": 3}
    for key in sorted(rows, key=lambda k: (k[0], -k[1], k[2], order[k[3]], -k[4])):
        name, group = rows[key]
        used.add(name)
        by_model = {r["model"]: r for r in group["rows"]}
        n, batch, optimizer, op, density = key
        cells = []
        for model, _ in MODELS:
            row = by_model.get(model)
            if row is None:
                cells.append("")
                continue
            impl = f" ({row['impl']})" if model == "masked-auto" else ""
            cells.append(f"{row['vs_dense']:.2f}x{impl}")
        verdicts = []
        for row in group["rows"]:
            for t in map(lambda t: _best_impl(t, row, group), row["targets"]):
                ok = t["met"]
                met, missed = met + ok, missed + (not ok)
                short = "dense" if row["model"] == "masked-dense" else "auto"
                spread = _spread(_rounds(t, row, group))
                verdicts.append(f"{short} {t['target']}: {t['ratio']:.2f}x{spread} "
                                + ("met" if ok else "**missed**"))  # fmt: skip
        dense_ms = by_model["dense"]["ms"]
        lines.append(f"| {n}² | {batch} | {optimizer} | {OP_NAMES[op]} | {_pct(density)} | "
                     f"{dense_ms:.1f} | " + " | ".join(cells) + " | " + "; ".join(verdicts) + " |")  # fmt: skip
    notes = [f"Targets met: {met}, missed: {missed}. Ratios are step time over `keras.layers.Dense`"
             " trained by the same kind of op, medians of per-round ratios measured side by side "
             "(a round times every model in one process; `--processes 2` pools the rounds of two "
             "processes that build the models in opposite orders); in brackets after a verdict, the quartiles of those per-round "
             "ratios (half the rounds fall between them)." + _native_select_note([rows[k][1] for k in rows]) + " Sources:"]  # fmt: skip
    notes += [f"- {_source(name, *sources[name])}" for name in sorted(used)]
    return "\n".join(lines + [""] + notes)


def _native_select_note(groups: list[dict]) -> str:
    """How the native mask select compares with tf.where in the groups that timed both."""
    ratios = [
        statistics.median(a / b for a, b in zip(t["masked-dense"], t["masked-dense-where"]))
        for t in (g.get("times", {}) for g in groups)
        if "masked-dense-where" in t
    ]
    if not ratios:
        return ""
    return (f" *dense on tf.where* is MaskedDense(impl=\"dense\") traced without the native "
            f"mask select (`--where`): in the {len(ratios)} rows that time both, a step on the "
            f"native select takes {statistics.median(ratios):.2f}x (median; "
            f"{min(ratios):.2f}x-{max(ratios):.2f}x) of the step on tf.where.")  # fmt: skip


def tiny_table(results: list[tuple[str, dict]]) -> str:
    latest = [(n, r) for n, r in results if r.get("kind") == "tiny"]
    if not latest:
        return "_no results yet: run `python bench/tiny.py`_"
    name, record = latest[-1]
    lines = ["| 3-4-2 net | maskmagic ms | reference | reference ms | ratio | target |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for row in record["rows"]:
        verdict = "met" if row["met"] else "**missed**"
        lines.append(f"| `{row['case']}` | {row['maskmagic_ms']:.3f} | {row['reference']} | "
                     f"{row['reference_ms']:.3f} | {row['ratio']:.2f}x | <= {row['target']}x {verdict} |")  # fmt: skip
    return "\n".join(lines + ["", f"Source: {_source(name, record, record['load'])}"])


def scale_table(results: list[tuple[str, dict]]) -> str:
    latest = [(n, r) for n, r in results if r.get("kind") == "scale"]
    if not latest:
        return "_no results yet: run `python bench/scale.py --save`_"
    name, record = latest[-1]
    r = record["result"]
    lines = [
        f"{r['inputs']:,} x {r['units']:,} layer, {r['nnz']:,} connections, batch {r['batch']}, "
        f"Adam: build {r['build_s']:.1f} s, first step (with tracing) {r['first_step_s']:.2f} s, "
        f"then {r['step_s']:.3f} s a step (median of {r.get('steps', 5)}"
        + (f"; of which TensorFlow copying the numpy batch into a tensor takes about "
           f"{r['batch_to_tensor_s']:.3f} s" if "batch_to_tensor_s" in r else "")
        + f"), save {r['save_s']:.1f} s "
        f"({r['file_mib']:.0f} MiB), load {r['load_s']:.1f} s, identical after loading: "
        f"{r['identical']}, peak RSS {r['peak_rss_mib'] / 1024:.2f} GiB.",
        "",
        "Targets: " + "; ".join(
            f"{t['target']}: {t['value']:.3g} " + ("met" if t["met"] else "**missed**")
            for t in record["targets"]),
        "",
        f"Source: {_source(name, record, record['load'])}",
    ]  # fmt: skip
    return "\n".join(lines)


def render(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(
            f"README.md has no <!-- bench:{name} --> ... <!-- /bench:{name} --> markers"
        )
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print instead of writing README")
    args = parser.parse_args()
    results = load_results()
    tables = {"run": run_table(results), "tiny": tiny_table(results),
              "scale": scale_table(results)}  # fmt: skip
    if args.print:
        for name, body in tables.items():
            print(f"== {name}\n{body}\n")
        return
    with open(README) as f:
        text = f.read()
    for name, body in tables.items():
        text = render(text, name, body)
    with open(README, "w") as f:
        f.write(text)
    print("README.md tables updated")


if __name__ == "__main__":
    main()
