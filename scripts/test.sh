#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine (a bare Debian 12 is enough), in clear steps:
#   install  Debian's chromium (browser tests) and g++ (the native sparse kernel); the project
#            virtual environment .venv (created with `python3 -m venv` on first use, reused
#            afterwards; the system Python is never touched) with the package and its dev extra
#   lint     ruff
#   types    mypy over maskmagic/ (config in pyproject.toml)
#   tests    the whole pytest suite on the newest supported TensorFlow (browser tests included)
#   mutants  scripts/mutants.py: each named mutant of the exactness machinery must be killed
#   onednn   the numerical tests again with TF_ENABLE_ONEDNN_OPTS=0
#   stock    the sparse-layer tests again on TensorFlow's stock kernels (MASKMAGIC_SPARSE_KERNEL)
#   oldest   the core tests again on the oldest supported TensorFlow/Keras, in .venv-oldest
#            (versions: scripts/oldest-constraints.txt; installed in the background while the
#            steps above run); MASKMAGIC_SKIP_OLDEST=1 leaves it out
# The test steps run on several processes (pytest-xdist, one test file per process at a time):
# MASKMAGIC_TEST_JOBS sets how many (default: the CPU count, at most 4).
# Usage: bash scripts/test.sh [extra pytest arguments for the "tests" step]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh

# The modules whose tests must pass on every supported TensorFlow.
CORE_TESTS=(tests/test_compat.py tests/test_layers.py tests/test_training.py tests/test_writeback.py tests/test_reach.py tests/test_deploy.py)

echo "== install"
# Debian packages: chromium for the browser tests, g++ for the native sparse kernel's tests.
packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium fonts-dejavu-core fonts-liberation)
command -v g++ >/dev/null 2>&1 || packages+=(g++)
if [ ${#packages[@]} -gt 0 ]; then
  as_root_apt_get update -qq
  as_root_apt_get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
make_venv .venv
"$VENV_PY" -m pip install -q --disable-pip-version-check -e ".[dev]"
VENV_BIN="$PWD/.venv/bin"  # ruff, jupyter and the kernels' python come from .venv
JOBS=${MASKMAGIC_TEST_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$JOBS" -le 4 ] || JOBS=4
PARALLEL=(-n "$JOBS" --dist loadfile)

# The oldest TensorFlow's environment is mostly a download: it installs while the suite runs.
OLDEST_LOG=$(mktemp)
if [ "${MASKMAGIC_SKIP_OLDEST:-}" != 1 ]; then
  (
    make_venv .venv-oldest
    "$VENV_PY" -m pip install -q --disable-pip-version-check -c scripts/oldest-constraints.txt \
      -e . pytest pytest-timeout pytest-xdist hypothesis
  ) >"$OLDEST_LOG" 2>&1 &
  OLDEST_INSTALL=$!
  trap 'kill "$OLDEST_INSTALL" 2>/dev/null || true' EXIT  # a failed step stops the install too
fi

echo "== lint"
"$VENV_BIN/ruff" check maskmagic tests bench examples
"$VENV_BIN/ruff" format --check maskmagic tests bench

echo "== types"
"$VENV_PY" -m mypy  # [tool.mypy] in pyproject.toml: files = maskmagic/

echo "== tests"
# MASKMAGIC_REQUIRE_UI=1: the real-browser tests must run here, not skip.
# --durations: the slowest tests are listed, to keep the CI time in view.
PATH="$VENV_BIN:$PATH" MASKMAGIC_REQUIRE_UI=1 "$VENV_PY" -m pytest -q -p no:cacheprovider \
  --durations=25 "${PARALLEL[@]}" "$@"

echo "== mutants: every mutant of the exactness machinery must be killed"
"$VENV_PY" scripts/mutants.py --jobs "$JOBS"

echo "== numerical tests with oneDNN off (the suite above ran with TensorFlow's default)"
# (test_training and test_zero_steps assert only bit-equalities that hold by construction,
# so they are not repeated here.)
TF_ENABLE_ONEDNN_OPTS=0 "$VENV_PY" -m pytest -q -p no:cacheprovider "${PARALLEL[@]}" tests/test_grads.py \
  tests/test_inspector.py tests/test_deploy.py tests/test_dense_compat.py \
  tests/test_optimizers_exact.py tests/test_sparse.py

echo "== sparse-layer tests on TensorFlow's stock kernels (the suite above ran the native one)"
MASKMAGIC_SPARSE_KERNEL=stock "$VENV_PY" -m pytest -q -p no:cacheprovider tests/test_sparse.py

echo "== oldest: core tests on the oldest supported TensorFlow"
if [ "${MASKMAGIC_SKIP_OLDEST:-}" = 1 ]; then
  echo "skipped (MASKMAGIC_SKIP_OLDEST=1)"
else
  if ! wait "$OLDEST_INSTALL"; then
    cat "$OLDEST_LOG"
    die "installing the oldest supported TensorFlow into .venv-oldest failed (log above)"
  fi
  cat "$OLDEST_LOG"
  OLDEST_PY=.venv-oldest/bin/python
  "$OLDEST_PY" -c 'import maskmagic, keras, tensorflow as tf; print("TensorFlow", tf.__version__, "Keras", keras.__version__)'
  "$OLDEST_PY" -m pytest -q -p no:cacheprovider "${PARALLEL[@]}" "${CORE_TESTS[@]}"
fi

echo "== all steps passed. Start JupyterLab from the project environment: .venv/bin/jupyter lab"
