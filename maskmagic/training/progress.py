"""What ``TrainOp.fit`` shows while it runs, like Keras' ``verbose``.

* ``verbose=1`` (or True): one progress bar for the whole fit, over every batch of every epoch,
  with the epoch and the epoch's running mean loss in it; it is updated in place (a tqdm bar:
  a widget in notebooks, one carriage-returned line in terminals), never one bar per epoch.
* ``verbose=2``: one printed line per epoch (epoch, mean loss, seconds).
* ``verbose=0`` (or False): nothing.
"""

from __future__ import annotations

import numbers
import sys
import time
from typing import Any

from maskmagic.errors import MaskMagicError

__all__ = ["FitProgress", "check_verbose"]


def check_verbose(verbose: Any) -> int:
    """``verbose`` as 0, 1 or 2 (bools allowed); anything else is a MaskMagicError."""
    if isinstance(verbose, bool):
        return int(verbose)
    if isinstance(verbose, numbers.Integral) and int(verbose) in (0, 1, 2):
        return int(verbose)
    raise MaskMagicError(
        f"verbose must be 0 (silent), 1 (one progress bar) or 2 (one line per epoch); "
        f"received {verbose!r}"
    )


class FitProgress:
    """Reports the batches and epochs of one fit.

    Args:
        name: the train op's name, shown first.
        epochs: how many epochs the fit runs.
        steps: batches per epoch.
        verbose: 0, 1 or 2 (see the module docstring).
    """

    def __init__(self, name: str, epochs: int, steps: int, verbose: int) -> None:
        self.name = name
        self.epochs = epochs
        self.verbose = verbose
        self._bar: Any = None
        self._losses: list[float] = []
        self._started = time.perf_counter()
        if verbose == 1:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=epochs * steps, desc=self._label(0), unit="batch")

    def _label(self, epoch: int) -> str:
        return f"{self.name} epoch {epoch + 1}/{self.epochs}"

    def start_epoch(self, epoch: int) -> None:
        """Called before the first batch of ``epoch`` (0-based)."""
        self._losses = []
        self._started = time.perf_counter()
        if self._bar is not None and epoch:
            self._bar.set_description(self._label(epoch), refresh=False)

    def batch(self, loss: float) -> None:
        """Called after each batch with its loss."""
        self._losses.append(loss)
        if self._bar is not None:
            mean = sum(self._losses) / len(self._losses)
            self._bar.set_postfix(loss=f"{mean:.4g}", refresh=False)
            self._bar.update(1)

    def end_epoch(self, epoch: int, mean_loss: float) -> None:
        """Called after the last batch of ``epoch`` with the epoch's mean loss."""
        if self.verbose == 2:
            seconds = time.perf_counter() - self._started
            print(
                f"{self._label(epoch)} - loss: {mean_loss:.4g} - {seconds:.2f} s",
                file=sys.stdout,
                flush=True,
            )

    def close(self) -> None:
        """Ends the display (the bar stays, showing the last epoch and loss)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
