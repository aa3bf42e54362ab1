"""Batches of model inputs and targets: one array, a list of arrays (several inputs) or a dict.

A list whose items are 2-D or more is several inputs; a list of numbers or of 1-D rows is one
array written as nested lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["as_tensors", "length", "take"]


def as_tensors(data: Any) -> Any:
    """Model inputs or targets as tensors (a list of 2-D arrays is several inputs)."""
    return tf.nest.map_structure(
        lambda a: tf.convert_to_tensor(np.asarray(a) if isinstance(a, list) else a),
        _lists_to_tuples(data),
    )


def _lists_to_tuples(data: Any) -> Any:
    if isinstance(data, list) and data and not np.isscalar(data[0]) and np.ndim(data[0]) >= 2:
        return tuple(data)
    if isinstance(data, dict):
        return {k: _lists_to_tuples(v) for k, v in data.items()}
    return data


def _first(data: Any) -> Any:
    if isinstance(data, dict):
        return next(iter(data.values()))
    if isinstance(data, (list, tuple)) and np.ndim(data[0]) >= 2:
        return data[0]
    return data


def length(data: Any) -> int:
    """Number of samples in model inputs or targets."""
    return len(_first(data))


def take(data: Any, index: np.ndarray) -> Any:
    """The samples at ``index`` of model inputs or targets (a mini-batch)."""
    if isinstance(data, dict):
        return {k: np.asarray(v)[index] for k, v in data.items()}
    if isinstance(data, (list, tuple)) and np.ndim(data[0]) >= 2:
        return [np.asarray(v)[index] for v in data]
    return np.asarray(data)[index]
