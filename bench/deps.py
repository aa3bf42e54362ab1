"""Installs the comparison layers of bench/run.py into bench/.deps (never into the venv).

BeyondML's ``MaskedDense`` (PyPI ``beyondml``) and GenNet's ``LocallyDirected1D`` (PyPI
``gennet-forked``) are installed with ``pip install --no-deps --target bench/.deps``: their
pinned dependencies (old TensorFlow) are not needed, since bench/run.py loads just the one
layer file of each with Keras 3 as installed.

Usage: ``python bench/deps.py``
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEPS = os.path.join(HERE, ".deps")
PACKAGES = ("beyondml==0.1.7", "gennet-forked==2.0.0.5")
NEEDED = ("beyondml/tflow/layers/MaskedDense.py", "gennet/utils/LocallyDirected1D.py")


def main() -> int:
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", DEPS]
    subprocess.run([*command, *PACKAGES], check=True)
    missing = [path for path in NEEDED if not os.path.exists(os.path.join(DEPS, path))]
    if missing:
        print(f"installed, but bench/run.py needs {', '.join(missing)} in {DEPS}", file=sys.stderr)
        return 1
    print(f"BeyondML and GenNet layers in {DEPS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
