#!/bin/sh
# The runs behind the README tables, in priority order; each writes its own result file in
# bench/results/ after every group, so any prefix of this script is a valid, partial record.
# On 2 shared cores the whole script takes a few hours; the committed files hold what fitted.
set -e
cd "$(dirname "$0")/.."
python bench/scale.py --save
python bench/run.py --sizes 4096 --batches 128 --optimizers adam sgd --ops all --rounds 3
python bench/run.py --sizes 4096 --batches 128 --optimizers adam --ops unit freeze fit --densities 1 0.5 --rounds 3
python bench/run.py --sizes 1024 --batches 128 32 --optimizers adam --ops all --densities 1 0.5 0.01 0.001 --rounds 5
python bench/tiny.py
python bench/run.py --sizes 8192 --batches 128 --optimizers adam --ops all --densities 1 0.01 --rounds 3
python bench/run.py  # the full grid: every size, batch, optimizer, op and density
