"""maskmagic's native kernels: TensorFlow custom ops compiled on first use.

``MaskedDense(impl="sparse")`` runs on ``native_src/sparse_ops.cc``, the dense
implementation masks a large kernel (see :mod:`maskmagic.layers.mask_select`) with
``native_src/mask_ops.cc``, and the gradient inspector summarises a large layer's gradient with
``native_src/summary_ops.cc`` (all shipped with the package) when it can: the first layer that
needs them compiles them into one library with the installed TensorFlow's ``tf.sysconfig``
flags and ``-O3`` (``-mavx2 -mfma`` where the CPU has them) into a per-user cache,
``~/.cache/maskmagic/kernels/<key>/`` (``$MASKMAGIC_CACHE_DIR`` or ``$XDG_CACHE_HOME`` move it),
keyed by the source, the TensorFlow version and flags, the compiler and the CPU, so a binary
only ever runs on the kind of machine that built it. ``python -m maskmagic.build_kernels``
builds it ahead of time. A file lock keeps concurrent processes from building twice.

``$MASKMAGIC_SPARSE_KERNEL`` picks the path: ``auto`` (default: native, or TensorFlow's stock
ops (CSR kernels, ``tf.where``) with one warning when no compiler is present or the build
fails, and stock when a GPU is visible, where the stock ops run on the GPU), ``native`` (an
error if they cannot be built) or ``stock``. Inside an XLA-compiled function the stock ops run
(XLA cannot compile a custom op). ``$MASKMAGIC_CXX`` (else ``$CXX``, else ``g++``) names the
compiler.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tensorflow as tf

from maskmagic import _compat
from maskmagic.errors import MaskMagicError

__all__ = [
    "SOURCES",
    "NativeKernelWarning",
    "build",
    "cache_key",
    "kernel_dir",
    "kernel_ops",
    "mode",
    "reset",
    "stock_only",
]

SOURCES = tuple(
    Path(__file__).with_name("native_src") / name
    for name in ("sparse_ops.cc", "mask_ops.cc", "summary_ops.cc")
)
MODES = ("auto", "native", "stock")
FLAGS = ["-O3", "-shared", "-fPIC", "-w"]
LIBRARY = "maskmagic_ops.so"

_loaded: dict[str, Any] = {}  # "ops": the loaded module or None (build failed), "error": str
_stock_only: list[bool] = []  # non-empty inside stock_only()


class NativeKernelWarning(UserWarning):
    """The native kernels could not be built or loaded; TensorFlow's stock ops run instead."""


def mode() -> str:
    """The kernel path from ``$MASKMAGIC_SPARSE_KERNEL``: auto, native or stock."""
    value = os.environ.get("MASKMAGIC_SPARSE_KERNEL", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise MaskMagicError(
            f"MASKMAGIC_SPARSE_KERNEL must be one of {', '.join(MODES)}; received {value!r}"
        )
    return value


def compiler() -> list[str]:
    """The compiler command: ``$MASKMAGIC_CXX``, else ``$CXX``, else ``g++``."""
    return shlex.split(os.environ.get("MASKMAGIC_CXX") or os.environ.get("CXX") or "g++")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor()


def cpu_flags() -> list[str]:
    """``-mavx2 -mfma`` on an x86-64 CPU that has both (read from ``/proc/cpuinfo``), else none.

    Not ``-march=native``: TensorFlow's Eigen headers do not compile with every extension it
    turns on (AVX512-FP16), and AVX2 lanes are what the kernel's loops use.
    """
    words = set(_cpu().split())
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= words else []


def cache_key(source: bytes | None = None) -> str:
    """The cache key of a build: hash of the sources, TensorFlow, flags, compiler and CPU."""
    parts = [
        source if source is not None else b"".join(path.read_bytes() for path in SOURCES),
        tf.__version__.encode(),
        repr(
            (tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags(), FLAGS, cpu_flags())
        ).encode(),
        repr(compiler()).encode(),
        (platform.machine() + sys.implementation.cache_tag + _cpu()).encode(),
    ]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:20]


def kernel_dir() -> Path:
    """Where the kernel for this machine is cached."""
    root = os.environ.get("MASKMAGIC_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(xdg) / "maskmagic"
    return base / "kernels" / cache_key()


def build(force: bool = False) -> Path:
    """Compiles the kernel into :func:`kernel_dir` unless it is there; returns the library path.

    Raises:
        RuntimeError: the compiler is missing or the compilation failed (its output is kept
            in ``build.log`` next to the library).
    """
    directory = kernel_dir()
    library = directory / LIBRARY
    if library.exists() and not force:
        return library
    directory.mkdir(parents=True, exist_ok=True)
    with _lock(directory / "build.lock"):
        if library.exists() and not force:  # built by another process meanwhile
            return library
        print(
            f"maskmagic: compiling the native kernels (once per machine) into {directory}",
            file=sys.stderr,
            flush=True,
        )
        fd, partial = tempfile.mkstemp(suffix=".so", dir=directory)
        os.close(fd)
        command = [
            *compiler(),
            *FLAGS,
            *cpu_flags(),
            *map(str, SOURCES),
            "-o",
            partial,
            *tf.sysconfig.get_compile_flags(),
            *tf.sysconfig.get_link_flags(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as error:
            os.unlink(partial)
            raise RuntimeError(f"could not run {command[0]!r}: {error}") from error
        (directory / "build.log").write_text(shlex.join(command) + "\n" + done.stderr)
        if done.returncode != 0:
            os.unlink(partial)
            tail = done.stderr.strip().splitlines()[-3:]
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): " + " / ".join(tail))
        os.replace(partial, library)
    return library


class _lock:
    """An exclusive advisory lock on a file (a no-op where ``fcntl`` does not exist)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.file = open(self.path, "w")
        try:
            import fcntl

            fcntl.flock(self.file, fcntl.LOCK_EX)
        except ImportError:
            pass

    def __exit__(self, *exc: object) -> None:
        self.file.close()  # closing releases the lock


def _load() -> Any:
    if "ops" not in _loaded:
        try:
            _loaded["ops"] = tf.load_op_library(str(build()))
        # no compiler or a failed build (RuntimeError), an unwritable cache (OSError), an
        # unloadable library (OpError); anything else is a bug in this module and shows
        except (RuntimeError, OSError, tf.errors.OpError) as error:
            _loaded["ops"], _loaded["error"] = None, f"{type(error).__name__}: {error}"
            if mode() == "auto":
                warnings.warn(
                    "maskmagic: the native kernels are unavailable, impl='sparse', large "
                    "masks and the inspector's summary of large layers use TensorFlow's "
                    f"slower stock ops ({_loaded['error']})",
                    NativeKernelWarning,
                    stacklevel=4,
                )
    return _loaded["ops"]


@contextlib.contextmanager
def stock_only() -> Iterator[None]:
    """Functions traced inside use the stock kernels (a SavedModel must not need our op)."""
    _stock_only.append(True)
    try:
        yield
    finally:
        _stock_only.pop()


def kernel_ops() -> Any:
    """The loaded native ops module, or None for the stock path (see the module docs).

    Raises:
        MaskMagicError: ``MASKMAGIC_SPARSE_KERNEL=native`` and the kernel cannot be built.
    """
    chosen = mode()
    if (
        chosen == "stock"
        or _stock_only
        or _compat.in_xla_context()  # XLA cannot compile a custom op
        or (chosen == "auto" and tf.config.list_logical_devices("GPU"))
    ):
        return None
    ops = _load()
    if ops is None and chosen == "native":
        raise MaskMagicError(
            "MASKMAGIC_SPARSE_KERNEL=native, but the native kernels could not be built: "
            f"{_loaded['error']}; expected a working C++ compiler (set MASKMAGIC_CXX), or "
            "MASKMAGIC_SPARSE_KERNEL=auto to fall back to the stock kernels"
        )
    return ops


def reset() -> None:
    """Forgets a failed build, so the next layer tries again (a loaded library stays)."""
    if _loaded.get("ops") is None:
        _loaded.clear()
