"""Differentiable ops, one Function per op, grouped by family.

Every op follows one convention, so each file reads the same: forward unpacks the inputs' numpy arrays
(`x._data`), computes with numpy or a backend kernel and returns an array; backward is written with Tensor
ops (so it can itself be differentiated), and the class docstring states the local derivative. Shape
bookkeeping for broadcasting lives in _util.unbroadcast and nowhere else.
"""
