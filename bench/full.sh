#!/bin/sh
# The runs behind the README tables, in priority order; each writes its own result file in
# bench/results/ after every group, so any prefix of this script is a valid, partial record.
# On 2 shared cores the whole script takes a few hours; the committed files hold what fitted.
# Runs with the project's .venv (made by scripts/quickstart.sh or the test command); set
# PYTHON to use another interpreter.
set -e
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" bench/scale.py --save
"$PY" bench/run.py --sizes 4096 --batches 128 --optimizers adam sgd --ops all --rounds 5 --processes 2 --where
"$PY" bench/run.py --sizes 4096 --densities 0.2 0.05 --batches 128 --optimizers sgd adam --ops all --where
"$PY" bench/profile_sparse.py
"$PY" bench/profile_sparse.py --size 1024
"$PY" bench/sparse_variants.py
"$PY" bench/profile_dense.py
"$PY" bench/run.py --sizes 4096 --batches 128 --optimizers adam sgd --ops unit freeze fit --densities 1 0.5 --rounds 5 --processes 2 --where
"$PY" bench/writeback_modes.py
"$PY" bench/run.py --sizes 1024 --batches 128 32 --optimizers adam sgd --ops all --densities 1 0.5 0.2 0.1 0.05 0.01 0.001 --rounds 7 --where
"$PY" bench/tiny.py
"$PY" bench/bench_inspector.py --save
"$PY" bench/run.py --sizes 8192 --batches 128 --optimizers adam --ops all --densities 1 0.01 --rounds 3
"$PY" bench/run.py --sizes 8192 --batches 128 --optimizers adam sgd --ops all --densities 0.01 0.001 --rounds 3 --no-extras
"$PY" bench/run.py  # the full grid: every size, batch, optimizer, op and density
