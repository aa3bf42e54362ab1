"""TrainOp: a compiled train step that updates only a chosen part of a model.

Zeroing gradients is not enough to keep parameters fixed: momentum, Adam's moments and weight
decay still move entries whose gradient is zero. A TrainOp therefore (1) hands the optimizer
only the variables it may change, (2) zeroes the gradient of entries it may not change, and
(3) after the optimizer's update writes back the previous values of those entries and of their
optimizer slots (momentum, moments, accumulators). Entries outside the op are bit-identical
after any number of steps, with any Keras optimizer, even one shared with other ops.

Sparse layers (``MaskedDense(impl="sparse")``) take part like dense ones: their kernel is the
(nnz,) vector of connection weights and update masks are shaped like it. When ``set_mask``
changes a sparse layer's topology, the op remaps its update masks and its optimizer's slots
(kept connections keep their momentum and moments) in place, without re-tracing.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maskmagic import _compat
from maskmagic.errors import MaskMagicError, SelectorError
from maskmagic.layers import MaskedDense
from maskmagic.layers import csr as sparse
from maskmagic.training import batches, distributed, reach, selectors, zero_steps
from maskmagic.training import hold as holds
from maskmagic.training.objectives import make_loss, make_optimizer
from maskmagic.training.progress import FitProgress, check_verbose
from maskmagic.training.writeback import WriteBack

__all__ = ["TrainOp", "make_loss", "make_optimizer"]


def _labels(items: list) -> str:
    """Selectors as the user wrote them: ``"out[1], h.bias"``."""
    return ", ".join(
        getattr(item, "text", None) or getattr(item, "path", None) or str(item) for item in items
    )


def _is_star(selector: Any) -> bool:
    return isinstance(selector, str) and selector.strip() == "*"


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


class TrainOp:
    """One train step that updates only the selected parameters of ``model``.

    Args:
        model: any built Keras model; selectors address layers with a kernel/bias.
        loss: a Keras loss name or object.
        optimizer: a Keras optimizer name or instance (ops given one instance share it).
        select: a selector string (``"out[1]"``, ``"out.kernel[:, 1]"``), a variable, a list
            of them, or None for every trainable variable.
        freeze: a unit selector (``"out[0]"``) or a list of them: every parameter with a path
            to those units is left out, so they stay bit-identical on every input.
        name: the op's name (shown in summaries).
        hold: a unit selector or a list of them: every selected parameter may move, but each
            step is projected and corrected so these units keep their values on the
            reference inputs, to ``hold_tol`` (see :mod:`maskmagic.training.hold`).
        hold_on: the reference inputs of ``hold`` (an array); None: each step's batch.
        hold_tol: the relative tolerance of ``hold`` (default 1e-6).

    Raises:
        SelectorError: a selector names something the model does not have, or the op is left
            with nothing to train.
    """

    def __init__(
        self,
        model: keras.Model,
        loss: Any = "mse",
        optimizer: Any = "sgd",
        select: Any = None,
        freeze: Any = None,
        name: str | None = None,
        hold: Any = None,
        hold_on: Any = None,
        hold_tol: float = holds.DEFAULT_TOL,
    ) -> None:
        if not model.built:
            raise MaskMagicError(
                f"model {model.name!r} is not built; call it once or build it with an input "
                "shape before making a TrainOp"
            )
        self.model = model
        self.name = name or "train_op"
        self.loss = make_loss(loss)
        self._strategy = distributed.strategy_of(model)  # None unless built in strategy.scope()
        with distributed.scope(self._strategy):
            self.optimizer = make_optimizer(optimizer)
        distributed.check_optimizer(self.optimizer, self._strategy, self.name)
        self.select = _as_list(select)
        self.freeze = _as_list(freeze)
        self.hold_spec = hold
        self.trace_count = 0
        self.xla = False  # whether the last new input signature got the XLA step (hold=)
        self._variables = {v.path: v for v in model.trainable_variables}
        self._selection = self._resolve_selection()
        self._freeze_units: dict[str, np.ndarray] = {}
        for unit_selector in self.freeze:
            for layer, vector in selectors.resolve_units(model, unit_selector).items():
                old = self._freeze_units.get(layer)
                self._freeze_units[layer] = vector if old is None else old | vector
        self._masked_layers = self._find_masked_layers()
        self._sparse_kernels = {
            path: layer
            for path, (layer, kind) in self._masked_layers.items()
            if kind == "kernel" and getattr(layer, "is_sparse", False)
        }
        masks = self._compute_update_masks()
        if not any(m.any() for m in masks.values()):
            raise SelectorError(self._nothing_left_message(bool(masks)))
        # Every selected variable takes part in the step, so that a later mask change that
        # opens or closes paths only changes the update masks, never the traced step.
        self._step_variables = [self._variables[p] for p in masks]
        with distributed.scope(self._strategy):  # mirrored like the weights under a strategy
            self._mask_vars = {
                path: tf.Variable(
                    masks[path],
                    trainable=False,
                    name=f"update_mask_{i}",
                    shape=[None] if path in self._sparse_kernels else None,
                )
                for i, path in enumerate(masks)
                if not self._is_static_full(path)
            }
            self._versions = self._mask_versions()
            self._ensure_optimizer_built()
            self._check_restorable()
            self._sparse_slots = {
                path: _compat.optimizer_slots(self.optimizer, layer.kernel, any_length=True)
                for path, layer in self._sparse_kernels.items()
                if path in masks
            }
            for path, slots in self._sparse_slots.items():
                sparse.track_slots(self._sparse_kernels[path], slots)  # resizable, mirrored
            self._slot_starts = {  # what a new connection's slots start from
                path: _compat.fresh_slot_values(self.optimizer, self._sparse_kernels[path].kernel)
                for path in self._sparse_slots
            }
        self.hold = holds.attach(self, hold, hold_on, hold_tol)  # None without hold=
        self._write_backs = (
            {
                path: WriteBack(mask, masks[path], *self._exclusion_facts(path, masks[path]))
                for path, mask in self._mask_vars.items()
            }
            if self._strategy is None
            else {}
        )
        self._writing_back = tf.Variable(self._any_write_back(), trainable=False)
        # the optimizer's step count when the slots were last checked, or after this op's own
        # last step since (see writeback.VALUES)
        self._checked_at = tf.Variable(
            self._optimizer_steps(),
            dtype=_compat.optimizer_step_counter(self.optimizer).dtype,
            trainable=False,
        )
        self._step = self._make_step()
        self._compiled: dict[tuple, Any] = {}  # input signature -> the step's concrete function

    # ------------------------------------------------------------------ selection
    def _resolve_selection(self, strict: bool = True) -> selectors.Selection:
        if not self.select or (len(self.select) == 1 and _is_star(self.select[0])):
            return {
                path: np.ones(tuple(v.shape), dtype=bool) for path, v in self._variables.items()
            }
        chosen = selectors.merge(
            [selectors.resolve(self.model, s, strict=strict) for s in self.select]
        )
        return {p: m for p, m in chosen.items() if p in self._variables}

    def _find_masked_layers(self) -> dict[str, tuple[Any, str]]:
        """{variable path: (layer, "kernel" | "bias")} for variables behind a mask."""
        found = {}
        for layer in selectors.parameter_layers(self.model).values():
            if hasattr(layer, "get_mask"):
                # the stored variable: with LoRA ``kernel`` is the merged tensor
                kernel = (
                    _compat.dense_kernel(layer) if isinstance(layer, MaskedDense) else layer.kernel
                )
                found[kernel.path] = (layer, "kernel")
                if getattr(layer, "bias", None) is not None:
                    found[layer.bias.path] = (layer, "bias")
        return found

    def _is_static_full(self, path: str) -> bool:
        return (
            not self._freeze_units
            and path not in self._masked_layers
            and bool(self._selection[path].all())
        )

    def _mask_versions(self) -> tuple:
        return tuple(layer.mask_version for layer, _ in self._masked_layers.values())

    def _compute_update_masks(self) -> dict[str, np.ndarray]:
        frozen = reach.influencers(self.model, self._freeze_units) if self._freeze_units else {}
        masks = {}
        for path, chosen in self._selection.items():
            allowed = chosen.copy()
            if path in frozen:
                allowed &= ~frozen[path]
            if path in self._masked_layers:
                layer, kind = self._masked_layers[path]
                allowed &= reach.connected_entries(layer, kind)
            masks[path] = allowed
        return masks

    def _any_write_back(self) -> bool:
        return any(back.active for back in self._write_backs.values())

    def _grad_is_zero_outside(self, path: str, allowed: np.ndarray) -> bool:
        """Whether the gradient of ``path`` is already exactly 0 wherever ``allowed`` is False.

        True only for the dense kernel of a :class:`MaskedDense` (its own ``call``, no kernel
        regularizer) when every excluded entry is a masked connection: the layer computes with
        ``where(mask, kernel, 0)``, whose gradient is exactly +0 at masked entries. The step then
        skips zeroing them again; the write-back of values and slots is unchanged.
        """
        found = self._masked_layers.get(path)
        if found is None or found[1] != "kernel":
            return False
        layer = found[0]
        if not isinstance(layer, MaskedDense) or layer.is_sparse:
            return False
        if type(layer).call is not MaskedDense.call or layer.kernel_regularizer is not None:
            return False
        connected = reach.connected_entries(layer, "kernel")
        return not bool((connected & ~allowed).any())

    def _exclusion_facts(self, path: str, allowed: np.ndarray) -> tuple[bool, bool, bool]:
        """(the excluded gradient entries need no zeroing, the update leaves them alone, the
        update leaves their slots alone once their gradient is zeroed).

        No zeroing when the gradient is exactly 0 there already (:meth:`_grad_is_zero_outside`)
        or when the optimizer updates entry by entry (the write-back undoes whatever it does to
        them, and the included entries never see their gradient). No write-back at all when
        the gradient is 0 there and the optimizer provably leaves such entries and their slots
        alone (see :mod:`zero_steps`); only the values written back (``writeback.VALUES``)
        when the slots are +0.0 there under such an optimizer. Checked whenever the masks
        change. None of this with ``hold=``: its projection reads every gradient entry and its
        corrections move weights.
        """
        zero = self._grad_is_zero_outside(path, allowed)
        if self.hold is not None:
            return zero, False, False
        unzeroed = zero or zero_steps.updates_entry_by_entry(self.optimizer)
        variable = self._variables[path]
        unchanged = zero and zero_steps.update_leaves_alone(self.optimizer, variable, ~allowed)
        slots_stay = (
            not unchanged
            and bool(_compat.optimizer_slots(self.optimizer, variable))
            and zero_steps.keeps_zero_gradient_entries(self.optimizer)
            and zero_steps.slots_are_zero(self.optimizer, variable, ~allowed)
        )
        return unzeroed, unchanged, slots_stay

    def _optimizer_steps(self) -> int:
        return int(keras.ops.convert_to_numpy(_compat.optimizer_step_counter(self.optimizer)))

    def _nothing_left_message(self, anything_selected: bool) -> str:
        picked = _labels(self.select) or "every trainable variable"
        if not anything_selected:
            return (
                f"train op {self.name!r}: the selection ({picked}) holds no trainable variable; "
                "expected a selection with at least one trainable weight (a layer with "
                "trainable=False has none)"
            )
        if self.freeze:
            frozen = _labels(self.freeze)
            return (
                f"train op {self.name!r}: freeze={frozen} leaves nothing trainable: every "
                f"parameter selected ({picked}) has a path to the frozen units; expected a "
                "selection with at least one parameter that cannot reach them"
            )
        return (
            f"train op {self.name!r}: the selection ({picked}) contains only masked-out "
            "connections; expected at least one connection whose mask is 1"
        )

    def _refresh_masks(self) -> None:
        """Recomputes the update masks after a layer mask changed (no re-trace)."""
        versions = self._mask_versions()
        if versions == self._versions:
            return
        for path, slots in self._sparse_slots.items():
            sparse.sync_slots(self._sparse_kernels[path], slots, self._slot_starts[path])
        if self._sparse_kernels:  # sparse selections are shaped like the connection list
            self._selection = self._resolve_selection(strict=False)
        masks = self._compute_update_masks()
        for path, variable in self._mask_vars.items():
            variable.assign(masks[path])
            if path in self._write_backs:
                facts = self._exclusion_facts(path, masks[path])
                self._write_backs[path].update(masks[path], *facts)
        if self._write_backs:
            self._writing_back.assign(self._any_write_back())
            self._checked_at.assign(self._optimizer_steps())
        if self.hold is not None:
            self.hold.masks_changed()
        self._versions = versions

    # ------------------------------------------------------------------ step
    def _ensure_optimizer_built(self) -> None:
        optimizer = self.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
            return
        known = {id(v) for v in _compat.optimizer_tracks(optimizer)}
        missing = [v.path for v in self._step_variables if id(v) not in known]
        if missing:
            raise MaskMagicError(
                f"train op {self.name!r}: the optimizer instance was built for other variables "
                f"and does not track {', '.join(missing)}; expected an optimizer that is new or "
                "was built with this model's trainable variables"
            )

    def _check_restorable(self) -> None:
        """Refuses an optimizer whose state for the guarded variables cannot be written back.

        Entries outside the op stay exact because their values and their optimizer slots are
        restored after each update; state that is not one slot entry per variable entry
        (Adafactor's factored moments) would be silently changed for them.
        """
        for path in self._mask_vars:
            variable = self._variables[path]
            problems = _compat.optimizer_unrestorable(
                self.optimizer, variable, any_length=path in self._sparse_kernels
            )
            if problems:
                raise MaskMagicError(
                    f"train op {self.name!r}: optimizer {type(self.optimizer).__name__} keeps "
                    f"state for {path} that cannot be restored entry by entry "
                    f"({'; '.join(problems)}), so the entries this op must leave unchanged "
                    "would not keep their optimizer state exactly; expected an optimizer with "
                    "per-entry state such as sgd, adam, adamw, rmsprop, adagrad or lion (or an "
                    "op that may change every entry of the variables it selects)"
                )

    def _held_state(self) -> list:
        """Non-trainable float state a step would change (BatchNorm moving statistics).

        With ``freeze``, a forward pass in training mode must not move the frozen units
        through such state either, so the step writes it back. Masks, sparse indices and
        random-seed states are left alone (the step never writes masks; seeds must advance).
        """
        if not self._freeze_units:
            return []
        masked = {id(v) for layer, _ in self._masked_layers.values() for v in layer.variables}
        return [
            v
            for v in self.model.non_trainable_variables
            if id(v) not in masked and "float" in str(v.dtype)
        ]

    def _make_step(self):
        # A small hold= step is ~1,600 small ops whose dispatch costs more than their math:
        # XLA compiles it into one program (see _concrete_step); needs static shapes, so the
        # full tf.where write-back of the strategy path instead of the indexed one.
        self._xla_step = None
        if self._strategy is not None:  # replicated write-back: see distributed.assign
            return distributed.wrap_step(self._strategy, self._make_where_step(), self)
        if self.hold is not None and self.hold.compiles:
            self._xla_step = self._make_where_step(jit_compile=True)
        return self._make_indexed_step()

    def _guarded(self) -> list:
        """(variable, update-mask variable, optimizer slots) of each variable with exclusions."""
        return [
            (v, self._mask_vars[v.path], _compat.optimizer_slots(self.optimizer, v))
            for v in self._step_variables
            if v.path in self._mask_vars
        ]

    def _others(self) -> list:
        """What a step restores besides its own variables: non-trainable state, the EMA averages
        of unselected weights, and with EMA overwrite those weights themselves."""
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        others = self._held_state()
        if inner.use_ema:  # Keras moves the average of every variable it tracks, chosen or not
            chosen = {id(v) for v in self._step_variables}
            unchosen = [v for v in self.model.trainable_variables if id(v) not in chosen]
            averages = [_compat.ema_average(self.optimizer, v) for v in unchosen]
            others += [a for a in averages if a is not None]
            if inner.ema_overwrite_frequency:
                others += unchosen
        return others

    def _make_where_step(self, jit_compile: bool = False):
        """The step with a full ``tf.where`` write-back: under a tf.distribute strategy, and
        XLA-compiled (``jit_compile``) for a small ``hold=`` step."""
        model, loss_fn, optimizer = self.model, self.loss, self.optimizer
        variables = list(self._step_variables)
        guarded = self._guarded()
        others = self._others()

        @tf.function(reduce_retracing=True, jit_compile=jit_compile)
        def step(x, y):
            saved_others = [tf.identity(v.value) for v in others]  # before the forward pass
            loss, grads = self._loss_and_grads(model, loss_fn, x, y, variables)
            masks = {id(v): m for v, m, _ in guarded}
            grads = [
                tf.where(masks[id(v)], g, tf.zeros_like(g)) if id(v) in masks else g
                for g, v in zip(grads, variables)
            ]
            if self.hold is not None:  # projected before the optimizer sees it
                grads = self.hold.project_gradient(grads, x)
            saved = [
                (tf.identity(v.value), [tf.identity(s.value) for s in slots])
                for v, _, slots in guarded
            ]
            optimizer.apply(grads, variables)
            writes = []  # under tf.distribute, assigned on every replica's copy
            for (variable, mask, slots), (old, old_slots) in zip(guarded, saved):
                writes.append((variable, tf.where(mask, variable.value, old)))
                for slot, old_slot in zip(slots, old_slots):
                    writes.append((slot, tf.where(mask, slot.value, old_slot)))
            writes.extend(zip(others, saved_others))
            distributed.assign(writes)
            if self.hold is not None:  # the update projected, then the held values corrected
                self.hold.restore()
            return loss if self.hold is None else self.hold.with_stats(loss)

        return step

    def _loss_and_grads(self, model, loss_fn, x, y, variables):
        with tf.GradientTape() as tape:
            prediction = model(x, training=True)
            loss = _total_loss(loss_fn, y, prediction)
            loss = distributed.shard_weight(loss_fn, loss, x)
            loss = loss + distributed.regularization(model.losses)
        grads = tape.gradient(loss, variables)
        grads = [
            tf.zeros_like(v.value) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads, variables)
        ]
        return loss, grads

    def _make_indexed_step(self):
        """The single-device step: the write-back touches only the excluded entries.

        Per guarded variable, :class:`_WriteBack` holds the excluded entries (mask False) as
        an index list and a mode chosen when the masks change (no re-trace): ``NONE`` (nothing
        excluded: no work at all), ``GATHER`` (few excluded: gather their values and slots
        before the optimizer's update, scatter them back after, in place) or ``WHERE`` (many
        excluded: a full ``tf.where`` of the variable and of every slot, as before).
        """
        model, loss_fn, optimizer = self.model, self.loss, self.optimizer
        variables = list(self._step_variables)
        guarded = [
            (variable, self._write_backs[variable.path], slots)
            for variable, _, slots in self._guarded()
        ]
        others = self._others()

        @tf.function(reduce_retracing=True)
        def step(x, y):
            self.trace_count += 1
            saved_others = [tf.identity(v.value) for v in others]  # before the forward pass
            loss, grads = self._loss_and_grads(model, loss_fn, x, y, variables)
            if guarded:  # one cond around all write-backs: nothing to run when none is active
                active = self._writing_back
                backs = {id(v): back for v, back, _ in guarded}
                cleared = list(grads)  # the inactive branch: gradients as they are, no copies
                # VALUES trusts the slots only while this op alone has stepped the optimizer
                counter = _compat.optimizer_step_counter(optimizer)
                fresh = tf.equal(counter.value, self._checked_at)
                modes = {id(back): back.step_mode(fresh) for _, back, _ in guarded}

                def prepare():
                    zeroed = [
                        backs[id(v)].zero_excluded(g, modes[id(backs[id(v)])])
                        if id(v) in backs
                        else g
                        for g, v in zip(grads, variables)
                    ]
                    saved = [
                        back.save([variable, *slots], modes[id(back)])
                        for variable, back, slots in guarded
                    ]
                    return zeroed, saved

                def skip():
                    empty = [
                        [tf.zeros([0], v.dtype) for v in [variable, *slots]]
                        for variable, _, slots in guarded
                    ]
                    return cleared, empty

                grads, saved = tf.cond(active, prepare, skip)
            if self.hold is not None:  # projected before the optimizer sees it
                grads = self.hold.project_gradient(grads, x)
            optimizer.apply(grads, variables)
            if guarded:

                def restore():
                    for (variable, back, slots), old in zip(guarded, saved):
                        back.restore([variable, *slots], old, modes[id(back)])
                    return tf.constant(0)

                tf.cond(active, restore, lambda: tf.constant(0))
                self._checked_at.assign(tf.where(fresh, counter.value, self._checked_at))
            distributed.assign(list(zip(others, saved_others)))
            if self.hold is not None:  # the update projected, then the held values corrected
                self.hold.restore()
            return loss if self.hold is None else self.hold.with_stats(loss)

        return step

    def __call__(self, x: Any, y: Any) -> float:
        """Runs one step on ``(x, y)`` and returns the loss (before the update) as a float."""
        self._refresh_masks()
        x, y = distributed.feed(self._strategy, batches.as_tensors(x), batches.as_tensors(y))
        out = self._compiled_for(x, y)(x, y)
        if self.hold is None:
            return float(out)
        values = out.numpy()  # hold=: the loss and the hold's report in one read
        self.hold.after_step(values[1:])
        return float(values[0])

    def _compiled_for(self, x: Any, y: Any) -> Any:
        """The step's concrete function for these input shapes and dtypes (cached).

        Calling it directly skips ``tf.function``'s per-call signature matching, the largest
        fixed cost of a step on a small net (about a third of it).
        """
        if self._strategy is not None:
            return self._step
        key = tuple((tuple(t.shape), t.dtype) for t in tf.nest.flatten((x, y)))
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = self._concrete_step(x, y)
        return found

    def _concrete_step(self, x: Any, y: Any) -> Any:
        """The XLA step of a small ``hold=`` op when XLA can compile it for these inputs (an
        op it refuses, such as ``tf.print`` in a loss, is found here, before anything runs);
        else the graph step."""
        if self._xla_step is not None:
            try:
                self._xla_step.experimental_get_compiler_ir(x, y)(stage="hlo")
            except (ValueError, tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
                # tf2xla refused an op (a tracing error shows again from the graph step)
                self.xla = False
            else:
                self.xla = True
                return self._xla_step.get_concrete_function(x, y)
        return self._step.get_concrete_function(x, y)

    def fit(
        self,
        x: Any,
        y: Any,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = 0,
        verbose: int | bool = 1,
    ) -> list[float]:
        """Runs the op over ``(x, y)`` in mini-batches.

        Args:
            verbose: like Keras: 1 (or True) one progress bar for the whole fit, with the
                epoch and the loss in it; 2 one line per epoch; 0 (or False) nothing.

        Returns:
            The mean loss of each epoch.
        """
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise MaskMagicError(f"{name} must be an integer >= 1; received {value!r}")
        verbose = check_verbose(verbose)
        count = batches.length(x)
        if count == 0:
            raise MaskMagicError("x has no samples; expected at least one sample to train on")
        if batches.length(y) != count:
            raise MaskMagicError(
                f"x and y must have the same number of samples; received {count} and {batches.length(y)}"
            )
        rng = np.random.default_rng(seed)
        history = []
        steps = -(-count // batch_size)
        progress = FitProgress(self.name, epochs, steps, verbose)
        try:
            for epoch in range(epochs):
                order = rng.permutation(count) if shuffle else np.arange(count)
                losses = []
                progress.start_epoch(epoch)
                for start in range(0, count, batch_size):
                    batch = order[start : start + batch_size]
                    losses.append(self(batches.take(x, batch), batches.take(y, batch)))
                    progress.batch(losses[-1])
                history.append(float(np.mean(losses)))
                progress.end_epoch(epoch, history[-1])
        finally:
            progress.close()
        return history

    # ------------------------------------------------------------------ inspection
    def update_mask(self, variable: Any) -> np.ndarray:
        """Numpy bool array of the entries of ``variable`` (or its path) this op may change."""
        path = variable if isinstance(variable, str) else variable.path
        if path not in self._variables:
            raise SelectorError(
                f"{path!r} is not a trainable variable of model {self.model.name!r}; expected "
                f"one of: {', '.join(self._variables)}"
            )
        shape = tuple(self._variables[path].shape)
        if path not in {v.path for v in self._step_variables}:
            return np.zeros(shape, dtype=bool)
        if path in self._mask_vars:
            self._refresh_masks()
            return self._mask_vars[path].numpy().astype(bool)
        return np.ones(shape, dtype=bool)

    @property
    def hold_report(self) -> holds.HoldReport | None:
        """What the last step achieved for ``hold=`` (drift, rank, ...); None without a hold."""
        return None if self.hold is None else self.hold.report()

    @property
    def var_list(self) -> list:
        """The variables this op may change now (at least one entry of each)."""
        return [v for v in self._step_variables if self.update_mask(v).any()]

    def parameter_count(self) -> int:
        """How many parameter entries this op may change now."""
        return int(sum(self.update_mask(v).sum() for v in self.var_list))

    def __repr__(self) -> str:
        picked = _labels(self.select) or "*"
        frozen = f" freeze={_labels(self.freeze)}" if self.freeze else ""
        frozen += f" hold={_labels(_as_list(self.hold_spec))}" if self.hold is not None else ""
        return (
            f"<TrainOp {self.name}: {picked}{frozen}, {self.parameter_count()} parameters, "
            f"{type(self.optimizer).__name__}>"
        )


def _total_loss(loss_fn, y, prediction):
    if isinstance(prediction, (list, tuple)):
        return tf.add_n([loss_fn(t, p) for t, p in zip(y, prediction)])
    if isinstance(prediction, dict):
        return tf.add_n([loss_fn(y[k], p) for k, p in prediction.items()])
    return loss_fn(y, prediction)
