"""The numba backend: a cached, parallel, fused interpreter of dynopt programs (CPU, float64)."""
