#!/usr/bin/env bash
# Runs the whole test suite (lint, unit, notebook and real-browser tests) on a fresh machine:
# installs what it needs first (Debian's chromium for the browser tests, the package with its
# dev extra). Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fonts-liberation >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fonts-liberation >/dev/null
  fi
fi
python -m pip install -q --disable-pip-version-check -e ".[dev]"

echo "== lint"
ruff check maskmagic tests bench examples
ruff format --check maskmagic tests bench
echo "== tests"
export MASKMAGIC_REQUIRE_UI=1  # the real-browser tests must run here, not skip
python -m pytest -q -p no:cacheprovider "$@"
