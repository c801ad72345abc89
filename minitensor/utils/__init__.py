"""Utilities: printing, graph visualisation (viz.to_dot), checkpoints."""
from . import viz  # noqa: F401
