"""npnn: reverse-mode autodiff on NumPy with a PyTorch-like API."""
