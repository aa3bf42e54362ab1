"""``python -m maskmagic.build_kernels``: compiles the native kernels ahead of time.

Otherwise the first layer that needs them (a ``MaskedDense(impl="sparse")``, or a dense one with
a large mask) compiles them (see :mod:`maskmagic.layers.native`). ``--force`` rebuilds an existing one.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Builds (and loads, as a check) the native kernels; prints where. Returns 0 or 1."""
    parser = argparse.ArgumentParser(prog="python -m maskmagic.build_kernels")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    import tensorflow as tf

    from maskmagic.layers import native

    try:
        library = native.build(force=args.force)
        tf.load_op_library(str(library))
    except (RuntimeError, OSError, tf.errors.OpError) as error:  # see native._load
        print(f"maskmagic: the native kernels could not be built: {error}", file=sys.stderr)
        return 1
    print(f"maskmagic: native kernels ready at {library}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
