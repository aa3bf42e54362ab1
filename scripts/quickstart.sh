#!/usr/bin/env bash
# Installs maskmagic and executes the quickstart notebook with a real kernel; the executed
# notebook and an HTML copy land in build/. Usage: bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check -e ".[dev]"
mkdir -p build
jupyter nbconvert --to notebook --execute examples/quickstart.ipynb --output-dir build --output quickstart
jupyter nbconvert --to html build/quickstart.ipynb --output-dir build
echo "Executed: build/quickstart.ipynb and build/quickstart.html (open it in a browser or JupyterLab)"
