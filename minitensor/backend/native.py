"""The native backend: the same kernels as numpy_ref.py, in C++ (minitensor._C).

Kernels not (yet) written in C++ are taken from the reference explicitly, so both backends always
offer the same names.
"""
import importlib

_C = importlib.import_module("minitensor._C")
from . import numpy_ref

NAME = "native"

matmul = numpy_ref.matmul
erf = numpy_ref.erf
softmax = numpy_ref.softmax
softmax_backward = numpy_ref.softmax_backward
log_softmax = numpy_ref.log_softmax
log_softmax_backward = numpy_ref.log_softmax_backward
layer_norm = numpy_ref.layer_norm
layer_norm_backward = numpy_ref.layer_norm_backward


def info():
    return dict(_C.info())


def set_num_threads(n):
    _C.set_num_threads(n)


def get_num_threads():
    return _C.get_num_threads()

conv_out_size = numpy_ref.conv_out_size
im2col = numpy_ref.im2col
col2im = numpy_ref.col2im
conv2d = numpy_ref.conv2d
conv2d_backward = numpy_ref.conv2d_backward
