"""What every masked layer does alike: the built check and its (units,) bias mask."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from maskmagic import masks as masklib
from maskmagic.errors import MaskMagicError

__all__ = ["BiasMaskMixin"]


class BiasMaskMixin:
    """``get_bias_mask``, ``set_bias_mask`` and ``effective_bias`` of MaskedDense and
    MaskedConv1D/2D (the bias mask has one entry per unit or filter).

    The host layer provides ``name``, ``built``, ``use_bias``, ``bias``, ``bias_mask`` and
    ``mask_version``, and may refuse a new bias mask in :meth:`_check_new_bias_mask`.
    """

    # What the host layer provides (declared for the type checker; Keras objects are Any).
    name: Any
    built: Any
    use_bias: Any
    bias: Any
    bias_mask: Any
    mask_version: int

    def _check_float_dtype(self) -> None:
        """Refuses a dtype whose variables are not floats (``dtype="int32"``): a masked layer
        trains its weights, and TensorFlow would fail deep inside the first build."""
        dtype = self.dtype_policy.variable_dtype  # type: ignore[attr-defined]
        if not keras.backend.is_float_dtype(dtype):
            raise MaskMagicError(
                f"layer '{self.name}' has dtype {dtype!r}; expected a float dtype or policy "
                "(float32, float64, float16, bfloat16, mixed_float16, mixed_bfloat16)"
            )

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise MaskMagicError(
                f"layer '{self.name}' is not built yet, so it has no {what}; call the model "
                "once or build it with an input shape first"
            )

    def _require_bias(self) -> None:
        self._require_built("bias mask")
        if not self.use_bias:
            raise MaskMagicError(f"layer '{self.name}' has use_bias=False, so no bias mask")

    def _checked_bias_mask(self, bias_mask: Any, units: int) -> Any:
        """A constructor's ``bias_mask`` validated for ``units`` entries (None: every bias on)."""
        if bias_mask is None:
            return None
        if not self.use_bias:
            raise MaskMagicError("bias_mask was given but use_bias=False; drop one of them")
        return masklib.validate(bias_mask, (units,), name="bias_mask")

    def _check_new_bias_mask(self, checked: np.ndarray) -> None:
        """Hook: raise if the layer cannot take ``checked`` now (default: it always can)."""

    def get_bias_mask(self) -> np.ndarray:
        """Returns the bias mask, one entry per unit (filter), as a numpy bool array."""
        self._require_bias()
        return keras.ops.convert_to_numpy(self.bias_mask) != 0

    def set_bias_mask(self, bias_mask: Any) -> None:
        """Replaces the bias mask (validated: one entry per unit (filter), finite, 0/1)."""
        self._require_bias()
        shape = tuple(int(size) for size in self.bias_mask.shape)
        checked = np.asarray(masklib.validate(bias_mask, shape, name="bias_mask"))
        self._check_new_bias_mask(checked)
        self.bias_mask.assign(checked.astype(self.bias_mask.dtype))
        self.mask_version += 1

    def effective_bias(self) -> np.ndarray | None:
        """The bias the network uses: ``bias * bias_mask`` as numpy (None without a bias)."""
        self._require_built("bias")
        if not self.use_bias:
            return None
        return keras.ops.convert_to_numpy(self.bias * self.bias_mask)
