"""Bit casts between float64 and uint64 that LLVM can vectorize (no-ops at the machine level)."""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic

__all__ = ["f64_as_u64", "u64_as_f64"]


@intrinsic
def f64_as_u64(typingctx: Any, x: Any) -> Any:
    """Reinterpret the bits of a float64 as a uint64."""
    sig = types.uint64(types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def u64_as_f64(typingctx: Any, x: Any) -> Any:
    """Reinterpret the bits of a uint64 as a float64."""
    sig = types.float64(types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen
