"""Running maskmagic's line magics the way a notebook does, for tests of the widgets' magics."""

from __future__ import annotations

from typing import Any

from IPython.core.interactiveshell import InteractiveShell


def line_magic(name: str, line: str, namespace: dict[str, Any]) -> Any:
    """The value of ``%name line`` in an IPython shell whose namespace holds ``namespace``.

    The magic's own exceptions propagate (``run_line_magic`` calls it directly).
    """
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "maskmagic")
        shell.user_ns.update(namespace)
        return shell.run_line_magic(name, line)
    finally:
        InteractiveShell.clear_instance()
