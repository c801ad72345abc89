# cython: language_level=3
# The Cython twin of the autograd engine: the very same source as engine.py, compiled.
# One source means the two engines cannot drift apart; tests still check they agree.
include "engine.py"
include "_engine_source.pxi"  # SOURCE_SHA256 of the engine.py compiled here (written by setup.py)
