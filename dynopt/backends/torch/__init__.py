"""The torch backend: dynopt programs as batched tensor operations (CPU or CUDA)."""
