"""The process group and its collectives, over MPI (mpi4py), each with a deadline.

MPI's collectives block without a timeout, so one rank that died or hangs would leave the others waiting
forever. Every collective here is therefore the non-blocking MPI call (Iallreduce, Ibcast, ...) followed by
`_World.wait`, which polls it until a deadline. While a rank waits it also answers questions on a second
communicator (a duplicate of COMM_WORLD, so they never mix with the data): when a rank's deadline passes, it
asks every other rank where it is, names the ranks that did not answer or wait in another collective, tells
the ranks waiting with it, and each of them raises DistributedTimeoutError with that diagnosis. The job is then
aborted (MPI_Abort), so no rank waits forever even if the error is caught.

Tensors are passed to MPI as their own numpy buffer (no copy) when it is contiguous and writable; a strided
view goes through one contiguous copy. Shapes and dtypes are compared across ranks first, with a small
allgather, so a mismatch is a clear error on every rank instead of a hang or garbage.
"""
import datetime
import enum
import hashlib
import os
import pickle
import sys
import threading
import time

import numpy as np

from ..tensor import Tensor

DEFAULT_TIMEOUT = 300.0
TIMEOUT_ENV = "MINITENSOR_DIST_TIMEOUT"
INSTALL_HINT = "pip install minitensor[distributed]"
_QUERY, _REPLY, _NOTICE = 1, 2, 3  # tags on the control communicator
_ANSWER_WINDOW = 2.0  # seconds a timed-out rank waits for the others to say where they are
# seconds between an uncaught error and MPI_Abort: for every rank to print its error after a timeout, and for
# mpiexec to forward what the ranks printed (it forwards output asynchronously and drops what it has not yet
# forwarded when the job is aborted: a crashing rank's traceback, and all the others printed, was lost in 2 of
# 12 runs without a pause, 1 of 20 with half a second)
_ABORT_GRACE = 1.0
_DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]
_META_DIMS = 8  # shapes travel as up to 8 dims (a longer shape folds its tail into the last one)
# The collectives that first compare their arguments across ranks (_agree), by the code they send: MPI matches
# collectives by order only (an allgather on one rank completes against a barrier on another, with garbage), so
# each public collective starts with the same small allgather, which names the collective every rank is in.
_COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "barrier", "broadcast_object_list")


class DistributedError(RuntimeError):
    """A collective that cannot complete: ranks that disagree, died or hang."""


class DistributedTimeoutError(DistributedError):
    """A collective that did not complete before the deadline (init(timeout=...) or MINITENSOR_DIST_TIMEOUT)."""


class ReduceOp(enum.Enum):
    SUM = "sum"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    AVG = "avg"  # SUM, then divided by the world size (floating tensors)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"minitensor.distributed needs mpi4py and an MPI library ({e}); install them with: "
                          f"{INSTALL_HINT}") from None
    return MPI


def is_available():
    """Whether mpi4py (and so an MPI library) can be imported."""
    try:
        _mpi()
    except ImportError:
        return False
    return True


def _seconds(timeout):
    if timeout is None:
        text = os.environ.get(TIMEOUT_ENV)
        if text is None:
            return DEFAULT_TIMEOUT
        try:
            timeout = float(text)
        except ValueError:
            raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if not timeout > 0:
        raise ValueError(f"init: timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


class _World:
    """COMM_WORLD, its control twin, the timeout and the count of collectives issued (the same on every rank)."""

    def __init__(self, MPI, timeout):
        self.MPI, self.comm, self.timeout = MPI, MPI.COMM_WORLD, timeout
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.seq = 0
        self.waiting = None  # (seq, description) while this rank waits in a collective
        self.ctl = None
        self._sends = []  # control messages in flight (kept alive until sent)
        ctl, request = self.comm.Idup()
        self.wait(request, self.next("init (every rank must call init)"))
        self.ctl = ctl

    def next(self, what):
        """(number, description) of the next collective: the numbers match across ranks that call the same ones."""
        self.seq += 1
        return self.seq, f"{what} #{self.seq}"

    def wait(self, request, what):
        """Poll `request` (the collective `what` = next(...)) until it completes; returns the seconds waited.
        Past the deadline: diagnose and raise."""
        if request.Test():
            return 0.0
        t0 = time.perf_counter()
        deadline, nap, spins = t0 + self.timeout, 0.0, 0
        self.waiting = what
        try:
            while not request.Test():
                spins += 1
                if spins < 200:  # most waits are short: spin a little before napping
                    continue
                if self.ctl is not None:
                    self._serve(self._control_messages())
                if time.perf_counter() > deadline:
                    self._time_out(what)
                time.sleep(nap)
                nap = min(2 * nap + 1e-5, 1e-3)
        finally:
            self.waiting = None
        return time.perf_counter() - t0

    def _control_messages(self):
        MPI, status = self.MPI, self.MPI.Status()
        while self.ctl.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status):
            source, tag = status.Get_source(), status.Get_tag()
            yield source, tag, self.ctl.recv(source=source, tag=tag)

    def _serve(self, messages):
        """Answer where this rank waits; a notice from a rank that timed out ends this wait too."""
        replies = {}
        for source, tag, message in messages:
            if tag == _QUERY:
                self._sends.append(self.ctl.isend(self.waiting, dest=source, tag=_REPLY))
            elif tag == _NOTICE:
                raise self._abort_soon(DistributedTimeoutError(
                    f"{self.waiting[1]} on rank {self.rank} was abandoned: {message}"))
            elif tag == _REPLY:
                replies[source] = message
        return replies

    def _time_out(self, what):
        seq, what = what
        others = [r for r in range(self.size) if r != self.rank]
        if self.ctl is None:  # still in init: no control channel to ask on
            raise self._abort_soon(DistributedTimeoutError(
                f"{what} timed out after {self.timeout:g} s on rank {self.rank}, waiting for rank(s) {others}"))
        for r in others:
            self._sends.append(self.ctl.isend(seq, dest=r, tag=_QUERY))
        answers, end = {}, time.perf_counter() + min(_ANSWER_WINDOW, self.timeout)
        while len(answers) < len(others) and time.perf_counter() < end:
            answers.update(self._serve(self._control_messages()))
            time.sleep(1e-3)
        message, notify = _diagnose((seq, what), self.rank, others, answers, self.timeout)
        sends = [self.ctl.isend(message, dest=r, tag=_NOTICE) for r in notify]
        end = time.perf_counter() + 0.5
        while not all(s.Test() for s in sends) and time.perf_counter() < end:
            time.sleep(1e-3)
        raise self._abort_soon(DistributedTimeoutError(message))

    def _abort_soon(self, error):
        """The job ends after a grace period (for every waiting rank to print its error), caught or not."""
        def abort():
            time.sleep(_ABORT_GRACE)
            sys.stderr.flush()
            self.comm.Abort(1)

        threading.Thread(target=abort, daemon=True, name="minitensor-distributed-abort").start()
        return error


def _diagnose(what, rank, others, answers, timeout):
    """The message of a timed-out collective `what` = (seq, description) on `rank`, from where the `others` said
    they wait (answers: rank -> (seq, description) or None, outside a collective; a rank that did not answer is
    missing). A rank waits *with* us only in the same collective: the same number and description; one with the
    same number but another description called a different collective (or other arguments) at this point of the
    program. Returns (message, the ranks that answered, to be told)."""
    seq, description = what
    with_us = [r for r, a in sorted(answers.items()) if a is not None and tuple(a) == (seq, description)]
    elsewhere = {r: a for r, a in sorted(answers.items()) if a is not None and r not in with_us}
    silent = [r for r in others if r not in with_us and r not in elsewhere]
    blame = sorted(silent + list(elsewhere))
    parts = [f"{description} timed out after {timeout:g} s on rank {rank}, waiting for rank(s) {blame}"]
    if silent:
        parts.append(f"rank(s) {silent} did not answer (dead, hung, or busy outside a collective)")
    for r, (other_seq, other) in elsewhere.items():
        if other_seq == seq:  # the same place in the program, another call: a bug in the program, not a hang
            parts.append(f"rank {r} waits in {other} instead: the ranks called different collectives (every rank "
                         "must call the same collectives, with the same arguments, in the same order)")
        else:
            parts.append(f"rank {r} waits in {other} instead")
    if with_us:
        parts.append(f"rank(s) {with_us} were waiting too")
    message = "; ".join(parts) + f". Aborting the job (timeout: init(timeout=...) or {TIMEOUT_ENV})"
    return message, with_us + list(elsewhere)


_world = None


def init(timeout=None):
    """Join the MPI job (started by `mpiexec -n N python ...`; a plain `python ...` is a world of one).

    timeout: seconds (or a timedelta) any collective may wait; default MINITENSOR_DIST_TIMEOUT, else 300 s.
    Calling init again only changes the timeout. After init, an uncaught exception on any rank aborts the whole
    job (as `python -m mpi4py` does), so the other ranks do not wait for a rank that is gone.
    """
    global _world
    if _world is not None:
        if timeout is not None:
            _world.timeout = _seconds(timeout)
        return
    seconds = _seconds(timeout)
    _world = _World(_mpi(), seconds)
    sys.excepthook = _aborting_excepthook(sys.excepthook, _world)


def _aborting_excepthook(previous, world):
    def hook(exc_type, exc, tb):
        previous(exc_type, exc, tb)
        sys.stderr.flush()
        sys.stdout.flush()
        time.sleep(_ABORT_GRACE)
        world.comm.Abort(1)

    return hook


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1, store=None,
                       group_name="", pg_options=None, device_id=None):
    """PyTorch's spelling of init(): the job's size and ranks come from mpiexec, so they are only checked."""
    if backend not in (None, "mpi", "gloo"):
        raise ValueError(f"init_process_group: backend {backend!r} is not available; minitensor runs its "
                         "collectives over MPI on the CPU (use backend='mpi', 'gloo' or None)")
    init(timeout)
    for name, given, actual in (("world_size", world_size, _world.size), ("rank", rank, _world.rank)):
        if given not in (-1, None) and given != actual:
            raise ValueError(f"init_process_group: {name}={given}, but mpiexec started this process with "
                             f"{name} {actual}")


def destroy_process_group(group=None):
    """Forget the process group (MPI itself is finalized when the process exits)."""
    global _world
    _world = None


def is_initialized():
    return _world is not None


def _require(op):
    if _world is None:
        raise RuntimeError(f"{op}: minitensor.distributed is not initialized; call minitensor.distributed.init() "
                           "first (and launch with: mpiexec -n N python ...)")
    return _world


def rank():
    return _require("rank").rank


def world_size():
    return _require("world_size").size


get_rank, get_world_size = rank, world_size


def _check_group(op, group):
    if group is not None:
        raise ValueError(f"{op}: only the default group (all ranks) is supported, got group={group!r}")


def _describe(meta):
    """'float32 (2, 3)' from the dtype code, ndim and dims of an _agree message."""
    dims = [int(d) for d in meta[2:2 + min(int(meta[1]), _META_DIMS)]]
    return f"{_DTYPES[meta[0]] if 0 <= meta[0] < len(_DTYPES) else '?'} {tuple(dims)}"


def _agree(world, op, arr, arg=None, ok=True, expected=""):
    """Check with one small allgather that every rank is in the collective `op` (one of _COLLECTIVES), with the
    same shape and dtype of `arr` and the same `arg` (name, value, label: an int argument such as the reduce op
    or src, and how to show a value). On any difference every rank raises the same ValueError."""
    request, what, check = _start_agree(world, op, arr, arg, ok, expected)
    world.wait(request, what)
    check()


def _start_agree(world, op, arr, arg=None, ok=True, expected=""):
    """_agree in two halves: returns (the allgather's request, its (seq, description), the check to run once
    it completed)."""
    name, value, label = arg if arg is not None else ("", 0, str)
    meta = np.zeros(5 + _META_DIMS, dtype=np.int64)
    shape = list(arr.shape)
    if len(shape) > _META_DIMS:
        shape = shape[:_META_DIMS - 1] + [int(np.prod(shape[_META_DIMS - 1:]))]
    dtype = _DTYPES.index(str(arr.dtype)) if str(arr.dtype) in _DTYPES else -1
    meta[:5 + len(shape)] = [_COLLECTIVES.index(op), int(ok), value, dtype, arr.ndim] + shape
    every = np.empty((world.size, meta.size), dtype=np.int64)
    request = world.comm.Iallgather(meta, every)
    return request, world.next(f"{op} (comparing the ranks' calls)"), lambda: _check_agreed(op, every, name, label, expected)


def _check_agreed(op, every, name, label, expected):
    if (every[:, 0] != every[0, 0]).any():
        seen = ", ".join(f"rank {r}: {_COLLECTIVES[c] if 0 <= c < len(_COLLECTIVES) else '?'}"
                         for r, c in enumerate(every[:, 0]))
        raise ValueError(f"{op}: the ranks called different collectives ({seen}); every rank must call the same "
                         "collectives in the same order")
    bad = [r for r in range(len(every)) if not every[r, 1]]
    if bad:
        raise ValueError(f"{op}: rank(s) {bad} passed {expected}")
    if (every[:, 2] != every[0, 2]).any():
        seen = ", ".join(f"rank {r}: {label(int(v))}" for r, v in enumerate(every[:, 2]))
        raise ValueError(f"{op}: every rank must pass the same {name}; got {seen}")
    if (every != every[0]).any():
        seen = ", ".join(f"rank {r}: {_describe(every[r, 3:])}" for r in range(len(every)))
        raise ValueError(f"{op}: every rank must pass the same shape and dtype; got {seen}")


def _array(op, tensor):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{op}: expected a minitensor Tensor, got {type(tensor).__name__}")
    arr = tensor._data
    if str(arr.dtype) not in _DTYPES:
        raise TypeError(f"{op}: dtype {arr.dtype} cannot be sent; expected one of {', '.join(_DTYPES)}")
    if not arr.flags.writeable:
        raise ValueError(f"{op}: the tensor (shape {tuple(arr.shape)}) is a read-only view and cannot be "
                         "written in place; pass a contiguous clone")
    return arr


class Work:
    """A collective in flight (async_op=True): wait() completes it, raising on timeout."""

    def __init__(self, world, request, what, finish):
        self._world, self._request, self._what, self._finish = world, request, what, finish
        self._done = False

    def is_completed(self):
        return self._done or bool(self._request.Test())

    def wait(self, timeout=None):
        if not self._done:
            self._world.wait(self._request, self._what)
            self._done = True
            self._finish()
        return True


def _run(world, tensor, arr, what, start, async_op, after=None):
    """Start a collective on arr (a contiguous copy if it is strided), then finish it into the tensor."""
    buf = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)

    def finish():
        if after is not None:
            after(buf)
        if buf is not arr:
            np.copyto(arr, buf)
        tensor._vc[0] += 1

    work = Work(world, start(buf), what, finish)
    if async_op:
        return work
    work.wait()
    return None


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce `tensor` across ranks in place: afterwards every rank holds the SUM (or PRODUCT, MIN, MAX, AVG)."""
    world, arr = _require("all_reduce"), _array("all_reduce", tensor)
    _check_group("all_reduce", group)
    if not isinstance(op, ReduceOp):
        raise ValueError(f"all_reduce: op must be a ReduceOp (SUM, PRODUCT, MIN, MAX, AVG), got {op!r}")
    if op is ReduceOp.AVG and arr.dtype.kind != "f":
        raise TypeError(f"all_reduce: ReduceOp.AVG needs a floating tensor, got {arr.dtype}")
    _agree(world, "all_reduce", arr, ("op", list(ReduceOp).index(op), _reduce_op_name))
    MPI = world.MPI
    mpi_op = MPI.SUM if op is ReduceOp.AVG else getattr(MPI, op.name.replace("PRODUCT", "PROD"))
    after = (lambda buf: np.divide(buf, world.size, out=buf)) if op is ReduceOp.AVG else None
    what = world.next(f"all_reduce ({_describe_arr(arr)}, {op.name})")
    return _run(world, tensor, arr, what, lambda buf: world.comm.Iallreduce(MPI.IN_PLACE, buf, mpi_op),
                async_op, after)


def _reduce_op_name(index):
    ops = list(ReduceOp)
    return f"ReduceOp.{ops[index].name}" if 0 <= index < len(ops) else f"an unknown op ({index})"


def _describe_arr(arr):
    return f"{arr.dtype} {tuple(arr.shape)}"


def broadcast(tensor, src=0, group=None, async_op=False):
    """Copy rank `src`'s tensor into `tensor` on every rank, in place."""
    world, arr = _require("broadcast"), _array("broadcast", tensor)
    _check_group("broadcast", group)
    if not 0 <= src < world.size:
        raise ValueError(f"broadcast: src {src} is not a rank of this world of {world.size}")
    _agree(world, "broadcast", arr, ("src", src, lambda r: f"src={r}"))
    what = world.next(f"broadcast ({_describe_arr(arr)}, from rank {src})")
    return _run(world, tensor, arr, what, lambda buf: world.comm.Ibcast(buf, root=src), async_op)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """tensor_list[r] <- rank r's `tensor`, on every rank (tensor_list: world_size tensors shaped like it)."""
    world, arr = _require("all_gather"), _array("all_gather", tensor)
    _check_group("all_gather", group)
    expected = f"a tensor_list that is not {world.size} tensors of the input's shape and dtype"
    ok = (isinstance(tensor_list, (list, tuple)) and len(tensor_list) == world.size
          and all(isinstance(t, Tensor) and t.shape == arr.shape and t.dtype == arr.dtype for t in tensor_list))
    _agree(world, "all_gather", arr, ok=ok, expected=expected)
    gathered = np.empty((world.size,) + arr.shape, dtype=arr.dtype)
    request = world.comm.Iallgather(np.ascontiguousarray(arr), gathered)

    def finish():
        for t, part in zip(tensor_list, gathered):
            np.copyto(t._data, part)
            t._vc[0] += 1

    work = Work(world, request, world.next(f"all_gather ({_describe_arr(arr)})"), finish)
    if async_op:
        return work
    work.wait()
    return None


def barrier(group=None, async_op=False):
    """Wait until every rank has called barrier()."""
    world = _require("barrier")
    _check_group("barrier", group)
    # the comparison of the ranks' collectives is an allgather, which no rank completes before every rank entered
    # it: a barrier too
    request, what, check = _start_agree(world, "barrier", np.zeros(0))
    work = Work(world, request, what, check)
    if async_op:
        return work
    work.wait()
    return None


def broadcast_object_list(object_list, src=0, group=None):
    """Replace object_list's items on every rank with rank `src`'s (picklable objects), in place."""
    world = _require("broadcast_object_list")
    _check_group("broadcast_object_list", group)
    if not 0 <= src < world.size:
        raise ValueError(f"broadcast_object_list: src {src} is not a rank of this world of {world.size}")
    _agree(world, "broadcast_object_list", np.zeros(0), ("src", src, lambda r: f"src={r}"))
    data = np.frombuffer(pickle.dumps(list(object_list)), dtype=np.uint8) if world.rank == src else None
    size = np.array([0 if data is None else data.size], dtype=np.int64)
    world.wait(world.comm.Ibcast(size, root=src), world.next(f"broadcast_object_list (size, from rank {src})"))
    buf = data.copy() if data is not None else np.empty(int(size[0]), dtype=np.uint8)
    world.wait(world.comm.Ibcast(buf, root=src), world.next(f"broadcast_object_list ({size[0]} bytes)"))
    objects = pickle.loads(buf.tobytes())
    if len(objects) != len(object_list):
        raise ValueError(f"broadcast_object_list: rank {src} sent {len(objects)} objects, rank {world.rank} "
                         f"expected {len(object_list)}")
    object_list[:] = objects


def _local_size():
    """How many ranks run on this machine (for sharing its cores among them)."""
    world = _require("local_size")
    name = world.MPI.Get_processor_name().encode()
    mine = np.array([int.from_bytes(hashlib.sha256(name).digest()[:8], "little", signed=True)], dtype=np.int64)
    every = np.empty(world.size, dtype=np.int64)
    world.wait(world.comm.Iallgather(mine, every), world.next("local_size (host names)"))
    return int((every == mine[0]).sum())


def _abort(code):
    """End the whole job now, from this rank."""
    _require("abort").comm.Abort(code)


def _start_sum(flat, what):
    """Internal (DistributedDataParallel's buckets): start an in-place SUM of a flat array, unchecked."""
    world = _world
    return world.comm.Iallreduce(world.MPI.IN_PLACE, flat, world.MPI.SUM), world.next(what)


def _start_broadcast(flat, src, what):
    world = _world
    return world.comm.Ibcast(flat, root=src), world.next(what)


def _wait(request, what):
    return _world.wait(request, what)
