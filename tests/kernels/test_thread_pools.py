"""minitensor's OpenMP wait policy (minitensor/backend/native.py): idle workers spin briefly, then sleep, so numpy's
and torch's pools get the cores right after a minitensor kernel. The policy is minitensor's default only: a policy
the user chose is kept, and the environment is left as the user set it. Each case runs in a fresh process, since
libgomp reads its settings once, when it loads. (The speed itself is measured in
benchmarks/bench_threads_mixed.py, never in tests.)"""
import json
import os
import subprocess
import sys

import pytest

from minitensor import backend

WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

# Prints what minitensor reports, whether the variables are in the environment after the import, and what the
# loaded libgomp really uses: omp_display_env(verbose) writes its settings, GOMP_SPINCOUNT included, to stderr.
PROBE = """
import ctypes, json, os, sys
{before}
import minitensor as mt
print(json.dumps({{"omp_wait": mt.backend_info().get("omp_wait"),
                  "env": {{k: os.environ.get(k) for k in {wait_vars!r}}}}}), flush=True)
try:
    gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
except OSError:
    sys.exit(3)  # _C does not use libgomp: nothing of the runtime to inspect
gomp.omp_display_env(1)
"""


def probe(env_vars, before=""):
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARS}
    env.update(env_vars)
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before, wait_vars=WAIT_VARS)], env=env,
                         capture_output=True, text=True, timeout=120)
    if out.returncode == 3:
        pytest.skip("minitensor._C is not linked with libgomp (another OpenMP runtime, or none): no spin count to read")
    assert out.returncode == 0, out.stderr
    reported = json.loads(out.stdout.strip().splitlines()[-1])
    spin = [line.split("=", 1)[1].strip().strip("'") for line in out.stderr.splitlines()
            if line.strip().startswith("GOMP_SPINCOUNT")]
    assert len(spin) == 1, out.stderr
    return reported, int(spin[0])


@pytest.fixture(autouse=True)
def _needs_native(C):
    """Every test here needs the compiled kernels (the C fixture skips, with its reason, without them)."""


def test_the_default_is_a_short_spin_and_the_environment_is_left_alone():
    reported, spin = probe({})
    assert spin == backend.native.SPIN_COUNT  # libgomp's own default is 300000 (~5 ms of spinning after every region)
    assert reported["omp_wait"] == f"GOMP_SPINCOUNT={backend.native.SPIN_COUNT} (minitensor's default)"
    # set for the import of _C only: child processes and a libgomp loaded later (torch's copy) never see it
    assert reported["env"] == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}


@pytest.mark.parametrize("user, runtime_spin", [
    ({"GOMP_SPINCOUNT": "12345"}, 12345),
    ({"OMP_WAIT_POLICY": "passive"}, 0),
    ({"OMP_WAIT_POLICY": "active"}, 30_000_000_000),
    ({"OMP_WAIT_POLICY": "active", "GOMP_SPINCOUNT": "777"}, 777),
])
def test_a_wait_policy_the_user_chose_is_kept(user, runtime_spin):
    reported, spin = probe(user)
    assert spin == runtime_spin
    assert reported["env"] == {k: user.get(k) for k in WAIT_VARS}
    chosen = " ".join(f"{k}={user[k]}" for k in WAIT_VARS if k in user)
    assert reported["omp_wait"] == f"{chosen} (the user's)"


def test_a_runtime_loaded_before_minitensor_is_reported_as_such():
    # another extension loaded libgomp first: its policy was fixed then, and minitensor does not claim otherwise
    reported, spin = probe({}, before='ctypes.CDLL("libgomp.so.1")')
    assert spin == 300_000
    assert reported["omp_wait"] == "libgomp's own (it was loaded before minitensor)"
    assert reported["env"] == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}
