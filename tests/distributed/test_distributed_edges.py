"""minitensor.distributed when the ranks disagree: a different reduce op, or different collectives at the same point
of the program. Each is a clear ValueError on every rank at once, naming what each rank called (MPI matches
collectives by order alone: an allgather completes against a barrier, with garbage); and a timeout names where each
rank waits."""
import pytest

from minitensor.distributed import comm
from tests.distributed.test_distributed import run_job

MISMATCHES = {
    "op": ("all_reduce: every rank must pass the same op; got rank 0: ReduceOp.SUM, rank 1: ReduceOp.MAX",) * 2,
    "collectives": ("all_reduce: the ranks called different collectives (rank 0: all_reduce, rank 1: broadcast)",
                    "broadcast: the ranks called different collectives (rank 0: all_reduce, rank 1: broadcast)"),
    "barrier": ("all_reduce: the ranks called different collectives (rank 0: all_reduce, rank 1: barrier)",
                "barrier: the ranks called different collectives (rank 0: all_reduce, rank 1: barrier)"),
    "objects": ("broadcast_object_list: the ranks called different collectives (rank 0: broadcast_object_list, "
                "rank 1: all_gather)",
                "all_gather: the ranks called different collectives (rank 0: broadcast_object_list, "
                "rank 1: all_gather)"),
}


@pytest.mark.parametrize("mode", sorted(MISMATCHES))
def test_ranks_that_disagree_get_a_clear_error_at_once(mode):
    code, out, seconds = run_job(2, "worker_mismatch.py", mode, timeout=60)
    assert code == 0, out
    for r, message in enumerate(MISMATCHES[mode]):
        assert f"rank {r} raised ValueError: {message}" in out, out
        assert f"rank {r}: done" in out, out
    assert "which it must not" not in out, out
    assert seconds < 30, f"the job took {seconds:.1f} s (the collective timeout is 60 s); its output:\n{out}"


def test_a_timeout_names_where_each_rank_waits():
    what = (7, "all_reduce (float32 (3,), SUM) #7")
    # rank 1 is at the same point of the program (number 7) in another collective: it is blamed, and said to be
    # elsewhere, not "waiting too" (which blamed rank(s) [] before)
    message, notify = comm._diagnose(what, 0, [1, 2, 3], {1: (7, "barrier #7"), 2: what}, 2.0)
    assert message.startswith("all_reduce (float32 (3,), SUM) #7 timed out after 2 s on rank 0, waiting for "
                              "rank(s) [1, 3]; rank(s) [3] did not answer"), message
    assert ("rank 1 waits in barrier #7 instead: the ranks called different collectives (every rank must call the "
            "same collectives, with the same arguments, in the same order)") in message, message
    assert "rank(s) [2] were waiting too" in message and "Aborting the job" in message, message
    assert sorted(notify) == [1, 2]
    # a rank further on, or not in a collective (None): blamed as elsewhere, resp. silent
    message, notify = comm._diagnose(what, 1, [0, 2], {0: (9, "broadcast #9"), 2: None}, 5.0)
    assert "waiting for rank(s) [0, 2]; rank(s) [2] did not answer" in message, message
    assert "rank 0 waits in broadcast #9 instead." in message and "different collectives" not in message, message
    assert notify == [0]
