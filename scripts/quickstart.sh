#!/usr/bin/env bash
# Installs maskmagic into the project virtual environment .venv (created with `python3 -m venv`
# on first use, reused afterwards; the system Python is never touched) and executes the
# quickstart notebook with a real kernel: the executed notebook and an HTML copy land in build/.
# Usage: bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh

make_venv .venv
echo "== installing maskmagic and its dev tools into .venv"
"$VENV_PY" -m pip install -q --disable-pip-version-check -e ".[dev]"

echo "== executing examples/quickstart.ipynb"
mkdir -p build
.venv/bin/jupyter nbconvert --to notebook --execute examples/quickstart.ipynb --output-dir build --output quickstart
.venv/bin/jupyter nbconvert --to html build/quickstart.ipynb --output-dir build

cat <<DONE

Executed: build/quickstart.ipynb and build/quickstart.html (open the HTML file in a browser).
Start JupyterLab from the project environment:
    .venv/bin/jupyter lab            (or: source .venv/bin/activate && jupyter lab)
Jupyter Notebook 7 works too:     .venv/bin/jupyter notebook
DONE
