"""2-D convolution (cross-correlation, as in PyTorch), built on im2col and GEMM.

conv2d: x (N, C, H, W), weight (OC, C, kh, kw), bias (OC,) -> (N, OC, OH, OW), with
OH = (H + 2 padding - dilation (kh - 1) - 1) // stride + 1 (likewise OW).

Backward has the two paths of minitensor's fused ops: the backend's conv2d_backward kernel, or, with
create_graph, the same convolution written as unfold (im2col, a differentiable op) + matmul, whose
gradient is itself differentiable.
"""
from .. import backend
from ..autograd import grad_mode
from ..autograd.function import Function
from ..tensor import Tensor
from ._util import check_same_dtype


class Conv2d(Function):
    """y = W * x + b (cross-correlation);  dx = col2im(Wᵀ g), dW = g colsᵀ, db = sum of g."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation)
        b = bias._data if bias is not None else None
        return backend.kernels.conv2d(x._data, weight._data, b, stride, padding, dilation)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        nx, nw, nb = ctx.needs_input_grad[:3]
        stride, padding, dilation = ctx.geometry
        if grad_mode.is_grad_enabled():
            dx, dw, db = _conv2d_backward_composite(g, x, weight, stride, padding, dilation)
        else:
            dx, dw, db = (Tensor._wrap(a) if a is not None else None for a in backend.kernels.conv2d_backward(
                g._data, x._data, weight._data, stride, padding, dilation, nx, nw, nb))
        return (dx if nx else None, dw if nw else None, db if nb else None, None, None, None)


class Unfold(Function):
    """cols = im2col(x): (N, C, H, W) -> (N, C*kh*kw, L);  the gradient is col2im(g) (its adjoint)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation):
        ctx.args = (x.shape, kernel, stride, padding, dilation)
        return backend.kernels.im2col(x._data, kernel[0], kernel[1], stride, padding, dilation).copy()

    @staticmethod
    def backward(ctx, g):
        x_shape, kernel, stride, padding, dilation = ctx.args
        return Fold.apply(g, x_shape, kernel, stride, padding, dilation), None, None, None, None


class Fold(Function):
    """x = col2im(cols): the adjoint of Unfold;  the gradient is im2col(g)."""

    @staticmethod
    def forward(ctx, cols, x_shape, kernel, stride, padding, dilation):
        ctx.args = (kernel, stride, padding, dilation)
        return backend.kernels.col2im(cols._data, x_shape, kernel[0], kernel[1], stride, padding, dilation)

    @staticmethod
    def backward(ctx, g):
        kernel, stride, padding, dilation = ctx.args
        return Unfold.apply(g, kernel, stride, padding, dilation), None, None, None, None, None


def _conv2d_backward_composite(g, x, weight, stride, padding, dilation):
    n, oc = g.shape[0], weight.shape[0]
    kernel = tuple(weight.shape[2:])
    cols = Unfold.apply(x, kernel, stride, padding, dilation)           # (N, CKK, L)
    g2 = g.reshape(n, oc, g.shape[2] * g.shape[3])                      # (N, OC, L) (L spelled out: N may be 0)
    w2 = weight.reshape(oc, -1)                                         # (OC, CKK)
    dw = (g2 @ cols.mT).sum(dim=0).reshape(weight.shape)
    dx = Fold.apply(w2.mT @ g2, tuple(x.shape), kernel, stride, padding, dilation)
    db = g.sum(dim=(0, 2, 3))
    return dx, dw, db


def _pair(v, name):
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"conv2d: {name} must be an int or a pair, got {v}")
    return v


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Like torch.nn.functional.conv2d (groups=1): input (N, C, H, W) or (C, H, W)."""
    if groups != 1:
        raise ValueError(f"conv2d: only groups=1 is supported, got groups={groups}")
    if input.ndim == 3:
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation).squeeze(0)
    if input.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d: expected input (N, C, H, W) and weight (OC, C, kh, kw), got shapes "
                         f"{tuple(input.shape)} and {tuple(weight.shape)}")
    if input.shape[1] != weight.shape[1]:
        raise ValueError(f"conv2d: input has {input.shape[1]} channels but weight expects {weight.shape[1]} "
                         f"(input {tuple(input.shape)}, weight {tuple(weight.shape)})")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv2d: bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)")
    check_same_dtype("conv2d", input=input, weight=weight, bias=bias)
    if input.dtype.kind != "f":
        raise TypeError(f"conv2d: expected floating point tensors, got {input.dtype}")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    kh, kw = weight.shape[2], weight.shape[3]
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError("conv2d: padding='same' needs stride 1")
            total = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
            if total[0] % 2 or total[1] % 2:
                raise ValueError("conv2d: padding='same' with an even kernel extent is not supported")
            padding = (total[0] // 2, total[1] // 2)
        else:
            raise ValueError(f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    padding = _pair(padding, "padding")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"conv2d: stride and dilation must be >= 1 and padding >= 0, got stride {stride}, "
                         f"padding {padding}, dilation {dilation}")
    oh = backend.kernels.conv_out_size(input.shape[2], kh, stride[0], padding[0], dilation[0])
    ow = backend.kernels.conv_out_size(input.shape[3], kw, stride[1], padding[1], dilation[1])
    if oh <= 0 or ow <= 0:
        raise ValueError(f"conv2d: the kernel ({kh}, {kw}) with dilation {dilation} does not fit the padded input "
                         f"{tuple(input.shape[2:])} (padding {padding})")
    return Conv2d.apply(input, weight, bias, stride, padding, dilation)
