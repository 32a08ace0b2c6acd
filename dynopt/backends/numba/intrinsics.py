"""LLVM-level helpers for the numba kernels: vectorizable bit casts (no-ops at the machine level),
fused multiply-add, and typed pointers from integer addresses."""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic

__all__ = ["address_as_pointer", "f32_as_u32", "f64_as_u64", "fma", "max_masked", "u32_as_f32",
           "u64_as_f64"]


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


@intrinsic
def fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """a·b + c with one rounding (``llvm.fma``), for float32 or float64 operands of one type.

    torch's CPU kernels compute ``x.add_(y, alpha=s)`` as ``fma(y, s, x)``; kernels that must
    agree with them bit for bit use this.
    """
    if not (isinstance(a, types.Float) and a == b == c):
        return None
    sig = a(a, a, a)
    suffix = "f32" if a == types.float32 else "f64"

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ty = context.get_value_type(signature.return_type)
        fnty = ir.FunctionType(ty, [ty, ty, ty])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.{suffix}")
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def address_as_pointer(typingctx: Any, address: Any, like: Any) -> Any:
    """A typed data pointer from an integer address (e.g. ``tensor.data_ptr()``).

    ``like`` is any array whose dtype gives the pointee type; wrap the result with
    ``numba.carray(ptr, n)``. The caller keeps the memory alive for the duration of the call.
    """
    if not isinstance(address, types.Integer) or not isinstance(like, types.Array):
        return None
    ptr_type = types.CPointer(like.dtype)
    sig = ptr_type(address, like)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(ptr_type))

    return sig, codegen


@intrinsic
def f32_as_u32(typingctx: Any, x: Any) -> Any:
    """Reinterpret the bits of a float32 as a uint32."""
    sig = types.uint32(types.float32)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def u32_as_f32(typingctx: Any, x: Any) -> Any:
    """Reinterpret the bits of a uint32 as a float32."""
    sig = types.float32(types.uint32)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen



@intrinsic
def max_masked(typingctx: Any, top: Any, x: Any, mask: Any) -> Any:
    """max(top, x & mask) as unsigned integers of one width, computed in that width.

    numba types arithmetic on uint32 operands as int64, so the same expression written in
    Python runs on 64-bit lanes; this keeps 32-bit lanes (twice the SIMD width: the float32
    magnitude scan of :mod:`.block_memory` reads 20M elements in 1.6 instead of 2.5-4 ms).
    """
    if not (isinstance(top, types.Integer) and not top.signed and top == x == mask):
        return None
    sig = top(top, x, mask)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        t, v, m = args
        v = builder.and_(v, m)
        return builder.select(builder.icmp_unsigned(">", v, t), v, t)

    return sig, codegen


@intrinsic
def prefetch(typingctx: Any, address: Any, write: Any) -> Any:
    """Hint the CPU to fetch the cache line at integer ``address`` into L2 (``llvm.prefetch``).

    ``write`` (a literal bool) asks for the line in a writable state. A hint only: no effect on
    values, no fault on any address.
    """
    if not isinstance(address, types.Integer) or not isinstance(write, types.BooleanLiteral):
        return None
    rw = 1 if write.literal_value else 0
    sig = types.void(address, write)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        ptr = builder.inttoptr(args[0], i8p)
        builder.call(fn, [ptr, i32(rw), i32(2), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def prefer_512_bit_vectors(typingctx: Any) -> Any:
    """Let LLVM vectorize the calling function with 512-bit registers where the CPU has them.

    Sets the function attribute ``"prefer-vector-width"="512"`` on the function being lowered;
    X86's tuning otherwise prefers 256-bit vectors on AVX-512 CPUs (``prefer-256-bit``). Has no
    effect on other CPUs. Call it once at the top of a kernel body that is not inlined.
    """
    sig = types.void()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return sig, codegen
