"""The kernels of csrc/ as MindSpore ops: `ops.Custom(func_type="aot")`, each forward with a bprop
made of the matching backward kernel (float32 only).

A Custom op runs under ms.grad in GRAPH mode only with a bprop; the backward ops are made here,
outside the bprop functions, which only call them.
"""
import numpy as np
import mindspore as ms
from mindspore import ops
from mindspore.common import dtype as mstype
from mindspore.ops import signature as sig


def _custom(library: str, name: str, out_shape, out_dtype, bprop=None):
    return ops.Custom(f"{library}:{name}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot",
                      bprop=bprop)


to_float32 = ops.MultitypeFuncGraph("to_float32")  # HyperMap(to_float32, tensors): the kernels' dtype


@to_float32.register("Tensor")
def _to_float32(tensor):
    return ops.cast(tensor, ms.float32)


def in_place_op(library: str, name: str, written, out_shape=lambda *shapes: [1],
                out_dtype=lambda *dtypes: ms.float32) -> ops.Custom:
    """A kernel that overwrites some of its inputs (Parameters: weights, moments, EMA shadows, gradient
    buffers) and returns `out_shape` (by default a dummy [1]); `written` flags each input. It is declared
    as MindSpore's own in-place primitives (ops.Assign, ops.AdamWeightDecay) are, on the instance:
    RW_WRITE in the signature of the inputs it writes (the kernel gets the Parameters' own memory) and
    `side_effect_mem`, which orders it among the graph's other reads and writes of them. The caller must
    use its output (ops.depend): a call whose result nothing uses can be dropped from the graph."""
    op = _custom(library, name, out_shape, out_dtype)
    op.set_signatures(tuple(sig.make_sig(f"x{i}", sig.sig_rw.RW_WRITE if w else sig.sig_rw.RW_READ)
                            for i, w in enumerate(written)))
    op.add_prim_attr("side_effect_mem", True)
    return op


def output_size(n: int, size: int, stride: int, padding: int) -> int:
    """The output length of a window sliding over n values padded by `padding` on each side."""
    return (n + 2 * padding - size) // stride + 1


def window_tensor(size: int, stride: int, padding: int) -> ms.Tensor:
    """A window's geometry as a kernel input: a tensor of shape (size, stride, padding + 1), values unused.
    In its shape, MindSpore's shape inference sees it: PyNative keeps one inference per custom function,
    so a geometry held on the Python side would be the first window's for every later one."""
    return ms.Tensor(np.zeros((size, stride, padding + 1), np.int8))


def layer_norm_op(library: str):
    """(x [.., D], gamma [D], beta [D], eps [1]) -> (y, mean [..], rstd [..])."""
    backward = _custom(library, "LayerNormBackward", lambda dy, x, m, r, g: (x, g, g),
                       lambda dy, x, m, r, g: (x, g, g))

    def bprop(x, gamma, beta, eps, out, dout):
        dx, dgamma, dbeta = backward(dout[0], x, out[1], out[2], gamma)
        return dx, dgamma, dbeta, ops.zeros_like(eps)

    return _custom(library, "LayerNormForward", lambda x, g, b, e: (x, x[:-1], x[:-1]),
                   lambda x, g, b, e: (x, x, x), bprop)


def add_layer_norm_op(library: str):
    """(a, r, gamma, beta, eps) -> (x = a + r, LayerNorm(x), mean, rstd): a residual sum and its norm."""
    backward = _custom(library, "AddLayerNormBackward", lambda dy, dx, x, m, r, g: (x, g, g),
                       lambda dy, dx, x, m, r, g: (x, g, g))

    def bprop(a, r, gamma, beta, eps, out, dout):
        dx, dgamma, dbeta = backward(dout[1], dout[0], out[0], out[2], out[3], gamma)
        return dx, dx, dgamma, dbeta, ops.zeros_like(eps)

    return _custom(library, "AddLayerNormForward", lambda a, r, g, b, e: (a, a, a[:-1], a[:-1]),
                   lambda a, r, g, b, e: (a, a, a, a), bprop)


def gelu_op(library: str):
    """Exact GELU, x -> x Phi(x)."""
    backward = _custom(library, "GeluBackward", lambda x, dy: x, lambda x, dy: x)

    def bprop(x, out, dout):
        return (backward(x, dout),)

    return _custom(library, "GeluForward", lambda x: x, lambda x: x, bprop)


def softmax_op(library: str):
    """(x, scale [1]) -> softmax of scale * x over the last axis."""
    backward = _custom(library, "SoftmaxBackward", lambda y, dy, s: y, lambda y, dy, s: y)

    def bprop(x, scale, out, dout):
        return backward(out, dout, scale), ops.zeros_like(scale)

    return _custom(library, "SoftmaxForward", lambda x, s: x, lambda x, s: x, bprop)


def max_pool_op(library: str):
    """(x [B, C, H, W], window_tensor(size, stride, pad)) -> (y, argmax int32): PyTorch's max pooling
    (padding is -inf)."""
    backward = _custom(library, "MaxPoolBackward", lambda dy, a, x: x, lambda dy, a, x: dy)

    def bprop(x, window, out, dout):
        return backward(dout[0], out[1], x), ops.zeros_like(window)

    def out_shape(x, window):
        rows, cols = (output_size(n, window[0], window[1], window[2] - 1) for n in x[2:])
        return [x[0], x[1], rows, cols], [x[0], x[1], rows, cols]

    return _custom(library, "MaxPoolForward", out_shape, lambda x, window: (x, mstype.int32), bprop)
