"""A quiet TensorFlow start-up: its known C++ log banners are dropped, everything else shows.

TensorFlow's C++ runtime writes a few lines straight to the process's stderr (file descriptor
2) while it loads and probes for GPUs, before ``TF_CPP_MIN_LOG_LEVEL`` applies: the absl
warning, the oneDNN and CPU-feature notes, ``cudart_stub`` and, on a machine without a GPU,
``failed call to cuInit``. In a notebook they appear as red text under the first cell that
touches TensorFlow. :func:`captured_stderr` redirects fd 2 to a temporary file while
TensorFlow initialises, then writes back every line that is not one of those banners (an
allow-list: an unknown line, a real error, always shows).

:func:`install` arranges this for the first ``import tensorflow`` of the process, whoever
does it (maskmagic itself or the user's own cell): the import, plus the device probe that
prints the cuInit line, runs inside :func:`captured_stderr`.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

# The prefix of a C++ log line: absl's "I0000 00:00:1796.439 11587 port.cc:153] " or
# TensorFlow's own "2026-12-01 04:27:32.963515: I tensorflow/core/util/port.cc:153] ".
_PREFIX = r"(?:[IWEF]\d{4} [\d:.]+\s+\d+ |\d{4}-\d\d-\d\d [\d:.]+: [IWEF] )[\w./-]+\.cc:\d+\] "

#: Lines TensorFlow (2.19 to 2.21) prints at start-up on a CPU machine; only these are dropped.
BANNERS = tuple(
    re.compile(pattern)
    for pattern in (
        r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
        _PREFIX + r"oneDNN custom operations are on\. ",
        _PREFIX + r"Could not find cuda drivers on your machine, GPU will not be used\.",
        _PREFIX + r"This TensorFlow binary is optimized to use available CPU instructions",
        r"To enable the following instructions: [\w .,]+ in other operations, rebuild "
        r"TensorFlow with the appropriate compiler flags\.",
        _PREFIX + r"failed call to cuInit: .*UNKNOWN ERROR \(303\)",
        _PREFIX + r"failed call to cuInit: .*CUDA_ERROR_NO_DEVICE",
        _PREFIX + r"Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory "
        r"for plugin cu(DNN|FFT|BLAS) when one has already been registered",
        _PREFIX + r"computation placer already registered\. ",
        _PREFIX + r"TF-TRT Warning: Could not find TensorRT",
    )
)


def is_banner(line: str) -> bool:
    """Whether ``line`` (without its newline) is one of TensorFlow's known start-up banners."""
    return any(pattern.match(line) for pattern in BANNERS)


def unknown_lines(text: str) -> str:
    """``text`` without its banner lines (every other line kept, in order)."""
    kept = [line for line in text.splitlines(keepends=True) if not is_banner(line.rstrip("\n"))]
    return "".join(kept)


@contextlib.contextmanager
def captured_stderr() -> Iterator[None]:
    """Sends fd 2 to a temporary file for the block; afterwards writes what is not a banner to
    ``sys.stderr`` (in a notebook: the cell's stderr stream; in a terminal: fd 2 again)."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a closed stderr): nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            rest = unknown_lines(sink.read().decode("utf-8", errors="replace"))
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's own loader, and its device probe, inside :func:`captured_stderr`."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        uninstall()  # the first import only
        # Give the module its real loader back first: nothing outside sees this wrapper.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with captured_stderr():
            self._loader.exec_module(module)
            # The GPU probe (cuInit) runs here rather than under the user's first model; it
            # only lists devices, so memory growth and visible devices can still be set. A
            # failure of the probe is left for TensorFlow to report when devices are used.
            with contextlib.suppress(Exception):
                module.config.list_physical_devices()


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, through the other finders, and wraps its loader."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


_FINDER = _TensorFlowFinder()


def install() -> bool:
    """Makes the process's first ``import tensorflow`` quiet; returns whether it will be.

    False when TensorFlow is already imported (its banners are out already) or when
    ``TF_CPP_MIN_LOG_LEVEL`` is ``0`` (the user asked for every TensorFlow log line).
    """
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return False
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return True


def uninstall() -> None:
    """Removes the import hook (after it fired, or to see TensorFlow's start-up as it is)."""
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_FINDER)
