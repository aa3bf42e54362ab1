"""Mutation check of the exactness machinery: each named mutant must be killed by the fast tests.

Each mutant replaces one exact piece of source text in a temporary copy of the package (the tree
is never edited) and runs the few tests that guard that piece. A mutant that survives, or whose
text is no longer found in the source (a refactor moved it: update the mutant), fails the run.

Usage: ``python scripts/mutants.py [--only NAME ...] [--list]`` (from the repository root).
Exit status 0 only if the unmutated tests pass and every mutant is killed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("maskmagic", "tests", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    """One source change and the tests that must fail with it."""

    name: str
    path: str  # relative to the repository root
    find: str  # exact text, found exactly once in the file
    replace: str
    tests: tuple[str, ...]


EDGE = "tests/test_edge_guarantees.py::"
OPT = "tests/test_optimizers_exact.py::test_frozen_outputs_and_their_slots_stay_bit_identical"
ORACLE = "tests/test_reach_oracle.py::"
ZERO = "tests/test_zero_steps.py::"

MUTANTS = (
    Mutant(
        "EMA averages of unselected weights left to move",
        "maskmagic/training/ops.py",
        "            others += [a for a in averages if a is not None]",
        "            others += []",
        (EDGE + "test_ema_averages_of_unselected_weights_stay_exact",),
    ),
    Mutant(
        "write-back skipped although a kernel constraint rewrites the whole kernel",
        "maskmagic/training/zero_steps.py",
        'if not keeps_zero_gradient_entries(optimizer) or getattr(variable, "constraint", None):',
        "if not keeps_zero_gradient_entries(optimizer):",
        (EDGE + "test_kernel_constraint_never_moves_masked_weights",),
    ),
    Mutant(
        "new sparse connections' slots start from zero, not the optimizer's initial state",
        "maskmagic/training/ops.py",
        "sparse.sync_slots(self._sparse_kernels[path], slots, self._slot_starts[path])",
        "sparse.sync_slots(self._sparse_kernels[path], slots)",
        (EDGE + "test_a_new_sparse_connection_starts_from_the_optimizers_initial_state",),
    ),
    Mutant(
        "conv set_weights writes its masks unchecked",
        "maskmagic/layers/conv.py",
        '        self._check_stored_masks(self.weights, weights, "set_weights")',
        "        pass",
        (EDGE + "test_conv_set_weights_checks_its_masks",),
    ),
    Mutant(
        "native kernel drops the batch tail of the values gradient",
        "maskmagic/layers/native_src/sparse_ops.cc",
        "for (; j < n; ++j) total += a[j] * b[j];",
        "for (; j < n; ++j) total += 0;",
        ("tests/test_sparse_native.py::test_native_matches_stock_path_and_dense_reference",),
    ),
    Mutant(
        "native forward writes only 8 rows of each batch tile",
        "maskmagic/layers/native_src/sparse_ops.cc",
        "TransposeRows<T>(acc.data, kTile, units, bt, y + b0 * units, units);",
        "TransposeRows<T>(acc.data, kTile, units, std::min<int64_t>(bt, 8), y + b0 * units, units);",
        ("tests/test_sparse_native.py::test_native_matches_stock_path_and_dense_reference",),
    ),
    Mutant(
        "native input gradient repeats its first vector across the tile",
        "maskmagic/layers/native_src/sparse_ops.cc",
        "V::Store(out.data + r * kTile + i * V::kLanes, acc[i]);",
        "V::Store(out.data + r * kTile + i * V::kLanes, acc[0]);",
        ("tests/test_sparse_native.py::test_native_matches_stock_path_and_dense_reference",),
    ),
    Mutant(
        "native mask select keeps the sign of a masked entry",
        "maskmagic/layers/native_src/mask_ops.cc",
        "y[i] = x[i] & (U(0) - U(mask[i] != 0));",
        "y[i] = x[i] & (mask[i] != 0 ? ~U(0) : U(U(1) << (8 * sizeof(U) - 1)));",
        ("tests/test_mask_select.py::test_native_select_has_the_bits_of_tf_where",),
    ),
    Mutant(
        "native mask select's all-ones check reads half the mask",
        "maskmagic/layers/native_src/mask_ops.cc",
        "std::memchr(mask_p, 0, n) == nullptr",
        "std::memchr(mask_p, 0, n / 2) == nullptr",
        ("tests/test_mask_select.py::test_native_select_of_full_and_empty_masks",),
    ),
    Mutant(
        "the native select's gradient is not masked",
        "maskmagic/layers/mask_select.py",
        "return library.maskmagic_mask_select(upstream, mask)",
        "return upstream",
        (
            "tests/test_mask_select.py::test_masked_dense_on_the_native_select_matches_tf_where_bit_for_bit",
        ),
    ),
    Mutant(
        "native block summary drops the sign of a pooled value",
        "maskmagic/layers/native_src/summary_ops.cc",
        "return static_cast<int32_t>((bits & 0x7FFFFFFEu) | (bits >> 31));",
        "return static_cast<int32_t>(bits & 0x7FFFFFFEu);",
        (
            "tests/test_inspector_native_summary.py::test_native_summary_has_the_bits_of_the_xla_summary",
        ),
    ),
    Mutant(
        "native block summary pools the gradient as the would-be gradient",
        "maskmagic/layers/native_src/summary_ops.cc",
        "wb_max[c] = std::max(wb_max[c], Key(w[c]));",
        "wb_max[c] = std::max(wb_max[c], Key(g[c]));",
        (
            "tests/test_inspector_native_summary.py::test_native_summary_has_the_bits_of_the_xla_summary",
        ),
    ),
    Mutant(
        "native block summary drops the last column of each block",
        "maskmagic/layers/native_src/summary_ops.cc",
        "c1 = std::min(n_cols, c0 + bw_);",
        "c1 = std::min(n_cols, c0 + bw_ - 1);",
        (
            "tests/test_inspector_native_summary.py::test_native_summary_has_the_bits_of_the_xla_summary",
        ),
    ),
    Mutant(
        "top connections ranked by float |g| (TensorFlow's top_k skips NaN)",
        "maskmagic/widgets/inspector/probes.py",
        "return tf.bitwise.bitwise_and(tf.bitcast(tf.cast(values, tf.float32), tf.int32), 0x7FFFFFFF)",
        "return tf.abs(values)",
        (
            "tests/test_inspector_native_summary.py::test_top_connections_put_nan_first_on_both_paths",
        ),
    ),
    Mutant(
        "a large dense layer's summary stays on XLA",
        "maskmagic/widgets/inspector/probes.py",
        "        return native.kernel_ops()\n",
        "        return None\n",
        (
            "tests/test_inspector_native_summary.py::test_large_dense_layer_is_summarised_natively_without_xla",
        ),
    ),
    Mutant(
        "VALUES write-back trusts the slots after another op's steps",
        "maskmagic/training/ops.py",
        "fresh = tf.equal(counter.value, self._checked_at)",
        "fresh = tf.constant(True)",
        (
            "tests/test_writeback.py::"
            "test_values_mode_falls_back_once_another_op_steps_the_optimizer",
        ),
    ),
    Mutant(
        "VALUES write-back leaves the excluded gradient unzeroed",
        "maskmagic/training/writeback.py",
        "            tf.equal(mode, VALUES),\n",
        "            tf.constant(False),\n",
        ("tests/test_writeback.py::test_values_mode_matches_the_full_write_back_bit_for_bit",),
    ),
    Mutant(
        "VALUES write-back restores no values",
        "maskmagic/training/writeback.py",
        "[nothing, scatter, where(variables), where(variables[:1])]",
        "[nothing, scatter, where(variables), nothing]",
        ("tests/test_writeback.py::test_values_mode_matches_the_full_write_back_bit_for_bit",),
    ),
    Mutant(
        "no slot restore",
        "maskmagic/training/ops.py",
        "back.restore([variable, *slots], old, modes[id(back)])",
        "back.restore([variable], old[:1], modes[id(back)])",
        (f"{OPT}[adam]",),
    ),
    Mutant(
        "no value write-back",
        "maskmagic/training/ops.py",
        "back.restore([variable, *slots], old, modes[id(back)])",
        "back.restore(slots, old[1:], modes[id(back)])",
        (f"{OPT}[momentum]",),
    ),
    Mutant(
        "write-back skipped for sparse layers",
        "maskmagic/training/ops.py",
        "            if v.path in self._mask_vars\n        ]",
        "            if v.path in self._mask_vars and v.path not in self._sparse_kernels\n        ]",
        (
            "tests/test_sparse.py::"
            "test_question1_freeze_is_bit_identical_with_a_sparse_hidden_layer",
        ),
    ),
    Mutant(
        "BatchNorm statistics not held",
        "maskmagic/training/ops.py",
        "distributed.assign(list(zip(others, saved_others)))",
        "distributed.assign([])",
        (
            "tests/test_training.py::"
            "test_freeze_holds_batchnorm_statistics_so_frozen_output_stays_identical",
        ),
    ),
    Mutant(
        "update masks not refreshed after set_mask",
        "maskmagic/training/ops.py",
        "if versions == self._versions:",
        "if True:",
        ("tests/test_training.py::test_traced_once_across_steps_and_mask_changes",),
    ),
    Mutant(
        "unrestorable optimizer accepted",
        "maskmagic/training/ops.py",
        "            if problems:\n",
        "            if False:\n",
        (
            "tests/test_optimizers_exact.py::test_adafactor_factored_moments_are_refused_with_freeze",
        ),
    ),
    Mutant(
        "slot discovery misses private slot lists",
        "maskmagic/_compat.py",
        'if attr == "_trainable_variables" or not isinstance(value, list):',
        'if attr.startswith("_") or not isinstance(value, list):',
        (f"{OPT}[adam]",),
    ),
    Mutant(
        "mask captured at trace time",
        "maskmagic/layers/dense.py",
        "        return mask_select.masked(kernel, self.kernel_mask.value)\n",
        '        with __import__("tensorflow").init_scope():  # read once, when traced\n'
        "            mask = ops.convert_to_tensor(self.kernel_mask.numpy())\n"
        "        return mask_select.masked(kernel, mask)\n",
        (
            "tests/test_layers.py::test_set_mask_reaches_a_compiled_forward_pass",
            "tests/test_layers.py::test_set_mask_reaches_the_next_train_step_loss",
        ),
    ),
    Mutant(
        "every activation per unit",
        "maskmagic/training/reach.py",
        "return activation is None or activation in PER_UNIT_ACTIVATIONS",
        "return True",
        (
            "tests/test_reach.py::test_softmax_mixes_every_unit_of_its_layer",
            f"{ORACLE}test_glu_mixes_its_units",
        ),
    ),
    Mutant(
        "bias left out of freeze",
        "maskmagic/training/reach.py",
        '    if kind in ("dense", "conv"):\n'
        "        _freeze(frozen, layer.kernel, kernel_units(layer, out_units))\n"
        "        if layer.bias is not None:\n"
        "            _freeze(frozen, layer.bias, out_units)",
        '    if kind in ("dense", "conv"):\n'
        "        _freeze(frozen, layer.kernel, kernel_units(layer, out_units))\n"
        "        if layer.bias is not None:\n"
        "            pass",
        ("tests/test_reach.py",),
    ),
    Mutant(
        "off-by-one in unit slicing (Concatenate)",
        "maskmagic/training/reach.py",
        "out_units[start : start + width]",
        "out_units[start + 1 : start + 1 + width]",
        ("tests/test_reach.py::test_freeze_through_concatenate_splits_units",),
    ),
    Mutant(
        "masks ignored on the way back (wrong units)",
        "maskmagic/training/reach.py",
        "units[None, :]).any(axis=1)",
        "units[None, ::-1]).any(axis=1)",
        ("tests/test_reach.py",),
    ),
    Mutant(
        "Flatten mapped by position instead of unit",
        "maskmagic/training/reach.py",
        "units[hit % units.size] = True",
        "units[hit // units.size % units.size] = True",
        (f"{ORACLE}test_flatten_maps_units_through_the_flat_index",),
    ),
    Mutant(
        "subclasses of allowed layers trusted",
        "maskmagic/training/reach.py",
        "    kind = type(layer)\n",
        "    kind = next((k for k in PER_UNIT_LAYERS if isinstance(layer, k)), type(layer))\n",
        (f"{ORACLE}test_a_subclass_of_dense_is_not_trusted",),
    ),
    Mutant(
        "extra Dense variables (LoRA) ignored",
        "maskmagic/training/reach.py",
        "if any(id(v) not in own for v in layer.trainable_variables):  # LoRA",
        "if False:  # LoRA",
        (f"{ORACLE}test_dense_with_lora_mixes_its_units",),
    ),
    Mutant(
        "parameters of mixing layers not frozen",
        "maskmagic/training/reach.py",
        "        _freeze(frozen, variable, True)\n    for tensor in inputs:",
        "        pass\n    for tensor in inputs:",
        (f"{ORACLE}test_layer_normalization_mixes_units_and_freezes_its_parameters",),
    ),
    Mutant(
        "masked kernel entries used",
        "maskmagic/layers/mask_select.py",
        "lambda: ops.where(mask, kernel, zero)",
        "lambda: kernel",
        ("tests/test_layers.py", "tests/test_grads.py"),
    ),
    Mutant(
        "maskmagic bugs reported as cell errors",
        "maskmagic/builder.py",
        "    except foreign as exc:",
        "    except Exception as exc:",
        ("tests/test_build_fuzz.py::test_a_fault_inside_maskmagic_escapes_as_itself",),
    ),
    Mutant(
        "write-back skipped under SGD momentum",
        "maskmagic/training/zero_steps.py",
        "optimizer.momentum != 0",
        "optimizer.momentum < 0",
        (f"{ZERO}test_other_optimizers_keep_the_write_back[momentum]",),
    ),
    Mutant(
        "write-back skipped under weight decay",
        "maskmagic/training/zero_steps.py",
        '"weight_decay", None) is not None',
        '"weight_decay", None) is None and False',
        (f"{ZERO}test_other_optimizers_keep_the_write_back[zero_weight_decay]",),
    ),
    Mutant(
        "write-back skipped with momentum left at newly masked entries",
        "maskmagic/training/zero_steps.py",
        "    return slots_are_zero(optimizer, variable, entries)",
        "    return True",
        (f"{ZERO}test_entries_masked_after_training_keep_their_momentum_written_back",),
    ),
    Mutant(
        "write-back skipped over a subnormal masked weight",
        "maskmagic/training/zero_steps.py",
        "_has_subnormal(values[entries])",
        "False",
        (f"{ZERO}test_a_subnormal_masked_weight_keeps_the_write_back",),
    ),
    Mutant(
        "excluded gradients left in a clipnorm optimizer's norm",
        "maskmagic/training/zero_steps.py",
        'if getattr(optimizer, "clipnorm", None) or ',
        "if ",
        (
            f"{ZERO}test_excluded_gradients_go_unzeroed_only_where_no_other_entry_sees_them"
            "[clipnorm-None-out[0]]",
        ),
    ),
)


def _copy_tree(destination: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, destination / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(source, destination / name)


def _pytest(workdir: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    """Runs the tests in the copy; returns pytest's exit status and its summary line(s)."""
    env = {**os.environ, "PYTHONPATH": str(workdir), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", *tests]
    run = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    lines = (run.stdout + run.stderr).strip().splitlines()
    failed = [line for line in lines if line.startswith("FAILED ")]
    return run.returncode, " | ".join([*failed[:1], *lines[-1:]])


def _apply(workdir: Path, mutant: Mutant) -> bool:
    """Applies the mutant in the copy; False unless its text is in the source exactly once."""
    path = workdir / mutant.path
    text = path.read_text()
    if text.count(mutant.find) != 1:
        return False
    path.write_text(text.replace(mutant.find, mutant.replace))
    return True


def _judge(base: Path, tmp: Path, mutant: Mutant) -> tuple[str, str, float, str]:
    """Applies one mutant to its own copy of the tree and runs its tests: (name, status, s, last)."""
    work = tmp / ("work-" + "".join(c if c.isalnum() else "-" for c in mutant.name))
    shutil.copytree(base, work)
    start = time.monotonic()
    try:
        if not _apply(work, mutant):
            return (mutant.name, "PATTERN GONE", 0.0, f"not once in {mutant.path}")
        code, last = _pytest(work, mutant.tests)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    status = "killed" if code == 1 else "killed (error)" if code == 2 else "SURVIVED"
    return (
        mutant.name,
        status,
        time.monotonic() - start,
        last,
    )  # 1: a test failed; 2: import broke


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="names (substrings) to run")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="mutants judged at once (default: CPUs)",
    )
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if args.only is None or any(o in m.name for o in args.only)]
    if args.list:
        for m in mutants:
            print(f"{m.name:45} {m.path}  ->  {' '.join(m.tests)}")
        return 0
    rows: list[tuple[str, str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="maskmagic-mutants-") as tmp:
        base = Path(tmp) / "base"
        _copy_tree(base)
        everything = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        start = time.monotonic()
        code, last = _pytest(base, everything)
        if code != 0:
            print(f"the unmutated tests fail ({last}); fix them before judging mutants")
            return 2
        seconds = time.monotonic() - start
        print(f"unmutated: {len(everything)} test targets pass ({seconds:.0f} s)", flush=True)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for row in pool.map(lambda m: _judge(base, Path(tmp), m), mutants):
                rows.append(row)
                print(f"{row[0]}: {row[1]} ({row[2]:.0f} s)", flush=True)
        failed = any(r[1] not in ("killed", "killed (error)") for r in rows)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'mutant':{width}}  {'result':14}  {'time':>6}  last line of pytest")
    for name, status, seconds, last in rows:
        print(f"{name:{width}}  {status:14}  {seconds:5.0f}s  {last}")
    survived = [r[0] for r in rows if r[1] not in ("killed", "killed (error)")]
    print(f"\n{len(rows) - len(survived)} of {len(rows)} mutants killed")
    if survived:
        print("not killed: " + "; ".join(survived))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
