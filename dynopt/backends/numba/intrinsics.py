"""LLVM-level helpers for the numba kernels: vectorizable bit casts (no-ops at the machine level),
fused multiply-add, and typed pointers from integer addresses."""

from __future__ import annotations

import os
from typing import Any

from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic

__all__ = ["VECTOR_WIDTH", "address_as_pointer", "exponent_mantissa_f32", "f32_as_u32",
           "f64_as_u64", "fma", "max_masked", "prefer_512_bit_vectors", "prefetch",
           "quarter_turn_f32", "u32_as_f32", "u64_as_f64", "word_plus_one_f32"]


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


#: ``llvm.prefetch``'s name is mangled by its pointer type: ``ptr`` (opaque, LLVM 17 and later,
#: whatever the IR text says) or ``i8*`` (typed pointers, the LLVM 14-16 of older llvmlite).
_PREFETCH = "llvm.prefetch.p0" if binding.llvm_version_info[0] >= 17 else "llvm.prefetch.p0i8"


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
        fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH)
        ptr = builder.inttoptr(args[0], i8p)
        builder.call(fn, [ptr, i32(rw), i32(2), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


#: ``DYNOPT_VECTOR_WIDTH=256`` turns :func:`prefer_512_bit_vectors` off (for CPUs that clock
#: down on 512-bit instructions); read once, at import. Part of the numba cache key
#: (:func:`dynopt.backends.numba.cache.cache_key`), so switching it recompiles.
VECTOR_WIDTH = os.environ.get("DYNOPT_VECTOR_WIDTH", "512").strip() or "512"
if VECTOR_WIDTH not in ("256", "512"):
    raise ValueError(f"DYNOPT_VECTOR_WIDTH must be 256 or 512, got {VECTOR_WIDTH!r}")


@intrinsic
def prefer_512_bit_vectors(typingctx: Any) -> Any:
    """Let LLVM vectorize the calling function with 512-bit registers where the CPU has them.

    Sets the function attribute ``"prefer-vector-width"="512"`` on the function being lowered;
    X86's tuning otherwise prefers 256-bit vectors on AVX-512 CPUs (``prefer-256-bit``). Has no
    effect on other CPUs, nor with ``DYNOPT_VECTOR_WIDTH=256`` (:data:`VECTOR_WIDTH`). Call it
    once at the top of a kernel body that is not inlined.
    """
    sig = types.void()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        attrs = builder.function.attributes
        if VECTOR_WIDTH == "512" and isinstance(attrs, set):  # llvmlite's AttributeSet lists
            set.add(attrs, '"prefer-vector-width"="512"')  # flags only: add the string directly
        return context.get_dummy_value()

    return sig, codegen


def _as_i32(builder: Any, value: Any, ty: Any) -> Any:
    """An unsigned word as i32 (truncating a 64-bit integer that holds a 32-bit word)."""
    return builder.trunc(value, ir.IntType(32)) if ty.bitwidth > 32 else value


@intrinsic
def word_plus_one_f32(typingctx: Any, a: Any) -> Any:
    """float32(a + 1), rounded to nearest, for a 32-bit word ``a`` (2³² for a = 2³² − 1).

    The same value as ``np.float32(np.int64(a) + 1)``, but computed on 32-bit lanes: numba
    types that expression on 64-bit integers, which halves the SIMD width of everything that
    follows in a float32 loop (the float32 Box–Muller transform: 0.58 → 0.40 ns per normal on
    one core). ``a`` is a uint32, or a wider integer holding a 32-bit word (its low 32 bits).
    """
    if not isinstance(a, types.Integer):
        return None
    sig = types.float32(a)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        a1 = builder.add(_as_i32(builder, args[0], signature.args[0]), i32(1))
        wrapped = builder.icmp_unsigned("==", a1, i32(0))
        return builder.select(wrapped, ir.Constant(ir.FloatType(), 2.0**32),
                              builder.uitofp(a1, ir.FloatType()))

    return sig, codegen


@intrinsic
def exponent_mantissa_f32(typingctx: Any, x: Any) -> Any:
    """(e, m) with x = 2ᵉ·m, m ∈ [1, 2), for a positive normal float32 x; e as a float32.

    Bit operations on 32-bit lanes (see :func:`word_plus_one_f32` for why not in Python).
    """
    if x != types.float32:
        return None
    sig = types.UniTuple(types.float32, 2)(types.float32)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        f32 = ir.FloatType()
        bits = builder.bitcast(args[0], i32)
        e = builder.sitofp(builder.sub(builder.lshr(bits, i32(23)), i32(127)), f32)
        m = builder.bitcast(builder.or_(builder.and_(bits, i32(0x007FFFFF)), i32(0x3F800000)), f32)
        return context.make_tuple(builder, signature.return_type, [e, m])

    return sig, codegen


@intrinsic
def quarter_turn_f32(typingctx: Any, k: Any) -> Any:
    """Split a 32-bit word into an angle: (r, swap, neg_c, neg_s).

    r = (k mod 2³⁰)·2⁻³⁰ in float32 is the position within the quadrant q = k >> 30;
    ``swap`` = q odd (cos and sin trade places), ``neg_c`` = q ∈ {1, 2}, ``neg_s`` = q ∈ {2, 3}.
    32-bit lanes (see :func:`word_plus_one_f32`). ``k``: a uint32, or a wider integer holding one.
    """
    if not isinstance(k, types.Integer):
        return None
    sig = types.Tuple((types.float32, types.boolean, types.boolean, types.boolean))(k)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        f32 = ir.FloatType()
        w = _as_i32(builder, args[0], signature.args[0])
        q = builder.lshr(w, i32(30))
        r = builder.fmul(builder.sitofp(builder.and_(w, i32(0x3FFFFFFF)), f32),
                         ir.Constant(f32, 2.0**-30))
        swap = builder.icmp_unsigned("!=", builder.and_(q, i32(1)), i32(0))
        neg_c = builder.icmp_unsigned(
            "!=", builder.and_(builder.xor(q, builder.lshr(q, i32(1))), i32(1)), i32(0))
        neg_s = builder.icmp_unsigned("!=", builder.lshr(q, i32(1)), i32(0))
        return context.make_tuple(builder, signature.return_type, [r, swap, neg_c, neg_s])

    return sig, codegen
