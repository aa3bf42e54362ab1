"""tf.distribute support for :class:`~maskmagic.training.TrainOp`.

Tested with MirroredStrategy and MultiWorkerMirroredStrategy on CPU devices; written against the
strategy API that TPUStrategy and multi-GPU MirroredStrategy share, but not run on them here.

A model built under ``strategy.scope()`` has distributed (mirrored) variables. A TrainOp on such a
model finds the strategy from the variables and then:

* creates its optimizer (when given a name), its update-mask variables and the optimizer's slots
  under that strategy's scope, so they are mirrored like the weights;
* runs its step with ``strategy.run`` inside one ``tf.function``: ``op(x, y)`` takes the *global*
  batch, every replica takes its contiguous slice (replica ``r`` of ``R`` gets rows
  ``r*n//R .. (r+1)*n//R``; under MultiWorkerMirroredStrategy every worker passes the same global
  batch, as in an SPMD program) and the loss is the global one, summed over replicas;
* scales each replica's loss so that the summed gradient is that of the single-device loss on the
  whole batch (Keras already divides a mean loss by the number of replicas; a shard of another
  size gets the weight ``R * n_r / n``, and regularization losses get ``1 / R``, as in Keras'
  own ``fit``);
* writes back the frozen entries and optimizer slots through ``merge_call`` and
  ``strategy.extended.update``, on every replica's copy, from values read on that replica: the
  entries outside the op stay bit-identical on every device.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import tensorflow as tf

from maskmagic.errors import MaskMagicError

__all__ = ["assign", "check_optimizer", "feed", "regularization", "scope", "shard_weight",
           "strategy_of", "wrap_step"]  # fmt: skip

_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


def _tf_variable(variable: Any) -> Any:
    """The tf.Variable (a DistributedVariable under a strategy) behind a Keras variable."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def strategy_of(model: keras.Model) -> tf.distribute.Strategy | None:
    """The strategy whose scope created ``model``'s variables, or None for a plain model.

    Raises:
        MaskMagicError: the model's variables are plain but a strategy scope is active now (the
            model was built outside the scope the TrainOp is made in), or the scopes differ.
    """
    found = None
    for variable in model.variables:
        value = _tf_variable(variable)
        if isinstance(value, tf.distribute.DistributedValues):
            found = value.distribute_strategy
            break
    current = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    if current is not None and found is not current:
        built = f"under {type(found).__name__}.scope()" if found else "outside any strategy scope"
        raise MaskMagicError(
            f"the TrainOp is made under {type(current).__name__}.scope() but model "
            f"{model.name!r} was built {built}; expected the model to be built (and the TrainOp "
            "made) under the same strategy.scope()"
        )
    return found


def scope(strategy: tf.distribute.Strategy | None) -> contextlib.AbstractContextManager:
    """``strategy.scope()``, or a no-op for a plain model."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def check_optimizer(optimizer: Any, strategy: tf.distribute.Strategy | None, name: str) -> None:
    """Refuses an optimizer instance created under another strategy than the model's."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    own = getattr(inner, "_distribution_strategy", None)
    if own is None:
        return
    if strategy is not None and own is not strategy:
        raise MaskMagicError(
            f"train op {name!r}: the optimizer was created outside the model's "
            f"{type(strategy).__name__}.scope() (it belongs to {type(own).__name__}); expected "
            "an optimizer created under the same strategy.scope(), or an optimizer name"
        )
    if strategy is None and own.num_replicas_in_sync > 1:
        raise MaskMagicError(
            f"train op {name!r}: the optimizer was created under {type(own).__name__}.scope() "
            f"but the model's variables are not distributed; expected both built under the "
            "same strategy.scope(), or neither"
        )


def _replicated() -> bool:
    """True inside ``strategy.run`` of a real (non-default) strategy."""
    return tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context()


def assign(writes: list[tuple[Any, Any]]) -> None:
    """Assigns each ``(variable, value)``; inside ``strategy.run``, on every replica's copy.

    ``value`` is read on each replica; ``merge_call`` regroups the values per replica and
    ``extended.update`` writes each device's copy with the value read on that device.
    """
    if not writes:
        return
    if not _replicated():
        for variable, value in writes:
            variable.assign(value)
        return
    variables = [_tf_variable(v) for v, _ in writes]

    def merged(strategy, values):
        for variable, value in zip(variables, values):
            strategy.extended.update(variable, _write, args=(value,), group=False)

    tf.distribute.get_replica_context().merge_call(merged, args=([v for _, v in writes],))


def _write(variable: Any, value: Any) -> Any:
    return variable.assign(value)


def regularization(losses: list) -> Any:
    """``sum(model.losses)``, divided by the number of replicas inside ``strategy.run``."""
    total = sum(losses)
    if losses and _replicated():  # as keras.src.losses.loss.scale_loss_for_distribution does
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        total = total * tf.cast(1.0 / replicas, total.dtype)
    return total


def shard_weight(loss_fn: Any, loss: Any, x: Any) -> Any:
    """Rescales one replica's mean loss when the shards of the batch differ in size.

    Keras divides a mean loss by the number of replicas ``R``; with shards of ``n_r`` of ``n``
    samples the exact share of replica ``r`` is ``n_r / n``, so the loss is multiplied by
    ``R * n_r / n`` (exactly 1.0 when the shards are equal, 0 for an empty shard).
    """
    if not _replicated() or getattr(loss_fn, "reduction", None) not in _MEAN_REDUCTIONS:
        return loss
    context = tf.distribute.get_replica_context()
    local = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
    weight = tf.math.divide_no_nan(context.num_replicas_in_sync * local, total)
    if loss.shape.rank:  # Keras leaves the loss of an empty slice unreduced, shape (0,)
        loss = tf.reduce_sum(loss)
    return loss * tf.cast(weight, loss.dtype)


def wrap_step(strategy: tf.distribute.Strategy | None, step: Any, op: Any) -> Any:
    """The op's step; under a strategy, ``strategy.run`` of it inside one ``tf.function``.

    Args:
        strategy: the model's strategy or None.
        step: the single-replica step, a ``tf.function`` of ``(x, y)`` returning the loss.
        op: the TrainOp, whose ``trace_count`` counts the traces of the distributed step.
    """
    if strategy is None:
        return step
    replica_step = step.python_function

    @tf.function(reduce_retracing=True)
    def distributed_step(x, y):
        op.trace_count += 1
        losses = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return distributed_step


def _count(data: Any) -> int:
    first = tf.nest.flatten(data)[0]
    return int(first.shape[0])


def feed(strategy: tf.distribute.Strategy | None, x: Any, y: Any) -> tuple[Any, Any]:
    """Splits a global batch ``(x, y)`` of tensors into one contiguous slice per replica.

    A batch smaller than the number of replicas leaves some replicas an empty slice; their loss
    share is 0 (see :func:`shard_weight`), so the step still equals the single-device one.
    """
    if strategy is None:
        return x, y
    replicas = strategy.num_replicas_in_sync
    count = _count(x)
    bounds = [r * count // replicas for r in range(replicas + 1)]

    def shard(context):
        r = context.replica_id_in_sync_group
        lo, hi = bounds[r], bounds[r + 1]
        return tf.nest.map_structure(lambda t: t[lo:hi], (x, y))

    x, y = strategy.experimental_distribute_values_from_function(shard)
    return x, y
