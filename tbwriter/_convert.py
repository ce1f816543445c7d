"""Any array-like (numpy, Python numbers and lists, PyTorch, JAX, npnn) to a numpy array, importing none of them."""

import numpy as np


def as_array(value, arg_name: str, allow_empty: bool = False) -> np.ndarray:
    """Return `value` as a numeric (bool/int/float) np.ndarray; TypeError/ValueError name `arg_name`."""
    if not isinstance(value, np.ndarray):
        # Tensors that track gradients refuse __array__ (PyTorch with requires_grad) or live on a
        # device: detach, move to the CPU, then ask for numpy, without importing their library.
        if hasattr(value, "detach") and callable(value.detach):
            value = value.detach()
        if hasattr(value, "cpu") and callable(value.cpu):
            value = value.cpu()
        if hasattr(value, "numpy") and callable(value.numpy):
            try:
                value = value.numpy()
            except (TypeError, RuntimeError):
                # e.g. torch.bfloat16 has no numpy dtype: widen to float32 first.
                if hasattr(value, "float"):
                    value = value.float().numpy()
                else:
                    raise
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{arg_name} must be a numeric array-like, got {type(value).__name__} ({e})") from None
    if value.dtype.kind not in "biuf":
        raise TypeError(f"{arg_name} must hold real numbers (bool, int or float), got dtype {value.dtype}")
    if value.size == 0 and not allow_empty:
        raise ValueError(f"{arg_name} must not be empty, got shape {value.shape}")
    return value
