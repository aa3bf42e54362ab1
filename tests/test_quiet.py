"""TensorFlow's start-up banners are dropped from stderr; every other line still shows."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from maskmagic import _quiet

ROOT = Path(__file__).resolve().parents[1]

# What TensorFlow 2.21 (absl format) and 2.19 (TensorFlow's own format) print at start-up on a
# CPU machine, copied from real runs.
BANNER_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796098899.439014   11587 port.cc:153] oneDNN custom operations are on. You may"
    " see slightly different numerical results due to floating-point round-off errors.",
    "I0000 00:00:1796098899.439338   11587 cudart_stub.cc:31] Could not find cuda drivers on your"
    " machine, GPU will not be used.",
    "I0000 00:00:1796098899.853782   11587 cpu_feature_guard.cc:227] This TensorFlow binary is"
    " optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI FMA, in other operations,"
    " rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796098908.630824   11587 cuda_platform.cc:52] failed call to cuInit: INTERNAL:"
    " CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "2026-12-01 04:27:32.964165: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not"
    " find cuda drivers on your machine, GPU will not be used.",
    "2026-12-01 04:27:33.068011: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:467]"
    " Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one"
    " has already been registered",
    "E0000 00:00:1796099253.229872   16931 cuda_dnn.cc:8579] Unable to register cuDNN factory:"
    " Attempting to register factory for plugin cuDNN when one has already been registered",
    "W0000 00:00:1796099253.444536   16931 computation_placer.cc:177] computation placer already"
    " registered. Please check linkage and avoid linking the same target more than once.",
]

# Lines that must show: real errors, including TensorFlow's own, and other programs' output.
OTHER_LINES = [
    "E0000 00:00:1796098908.630824   11587 cuda_platform.cc:52] failed call to cuInit:"
    " CUDA_ERROR_OUT_OF_MEMORY: out of memory",
    "2026-12-01 04:27:33.068011: E tensorflow/core/framework/op_kernel.cc:1830] OP_REQUIRES"
    " failed at matmul_op.cc:1: INVALID_ARGUMENT: Matrix size-incompatible",
    "Traceback (most recent call last):",
    "oneDNN custom operations are on.",  # without the log prefix: not TensorFlow's banner
    "",
]


def test_banners_are_dropped_and_other_lines_kept_in_order():
    """Catches a filter that drops too much (a deny-list, a loose pattern) or too little."""
    text = "".join(f"{line}\n" for pair in zip(BANNER_LINES, OTHER_LINES * 2) for line in pair)
    assert _quiet.unknown_lines(text) == "".join(f"{line}\n" for line in (OTHER_LINES * 2)[:10])
    assert all(_quiet.is_banner(line) for line in BANNER_LINES)
    assert not any(_quiet.is_banner(line) for line in OTHER_LINES)
    assert _quiet.unknown_lines("no newline at the end") == "no newline at the end"


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environment.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )


def test_captured_stderr_writes_back_what_is_not_a_banner():
    """The fd-level capture: a C library's write to fd 2 inside the block; unknown lines come
    back on stderr after it (a lost line would hide a real error)."""
    lines = "\n".join(BANNER_LINES[:3] + ["real problem"] + BANNER_LINES[3:] + ["the end"])
    run = _python(
        f"""
        import os, sys
        from maskmagic._quiet import captured_stderr
        with captured_stderr():
            os.write(2, {lines!r}.encode() + b"\\n")
            print("from python", file=sys.stderr)
        print("after", file=sys.stderr)
        """
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == "real problem\nthe end\nfrom python\nafter\n"


@pytest.mark.slow
def test_first_tensorflow_import_after_maskmagic_is_quiet():
    """The import hook: `import maskmagic` then the user's own `import tensorflow` and first op.
    The control run without maskmagic shows that this TensorFlow prints banners at all."""
    code = """
        import os{}
        import tensorflow as tf
        tf.constant(1.0) + 1
        tf.config.list_physical_devices()
        os.write(2, b"still here\\n")
        print(type(tf.__spec__.loader).__name__)
        """
    control = _python(code.format(""))
    assert any(_quiet.is_banner(line) for line in control.stderr.splitlines()), control.stderr
    quiet = _python(code.format(", maskmagic"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "still here\n"
    assert quiet.stdout.strip() != "_QuietLoader"  # TensorFlow keeps its own loader
    loud = _python(code.format(", maskmagic"), TF_CPP_MIN_LOG_LEVEL="0")
    assert any(_quiet.is_banner(line) for line in loud.stderr.splitlines())
