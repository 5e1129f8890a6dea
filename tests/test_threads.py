"""Thread safety and thread limits.

The rule (documented in the README's "Reliability" section): every Python thread that calls a
kernel leads its own OpenMP team of ``num_threads`` threads (``num_threads=None``: the OpenMP
default of *that* thread). libgomp keeps a leader's ``num_threads - 1`` workers parked while
the leader thread lives and ends them when it exits, so P calling threads use at most
``P * num_threads`` OS threads, and none are left behind once the callers are gone.

OpenMP's thread-count setting is per thread: ``threadpoolctl.threadpool_limits`` (which calls
``omp_set_num_threads``) and ``omp_set_num_threads`` affect only the thread that calls them;
``OMP_NUM_THREADS`` (read at start-up) and ``num_threads=`` apply everywhere.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastconv
from fastconv import _openmp_helpers, _validation

N_CALLERS = 16
LINUX_TASKS = "/proc/self/task"
needs_proc = pytest.mark.skipif(not os.path.isdir(LINUX_TASKS), reason="counts /proc/self/task")


def os_threads():
    return len(os.listdir(LINUX_TASKS))


def default_threads():
    return _validation.resolve_num_threads(None)


needs_two_openmp_threads = pytest.mark.skipif(
    default_threads() < 2 or not _openmp_helpers.openmp_enabled(),
    reason="needs OpenMP and 2 CPUs")


def make_calls(rng):
    """``[(name, thunk(num_threads))]``: every op, big enough to take its parallel path."""
    x32 = rng.standard_normal((2, 16, 40, 40)).astype(np.float32)
    w32 = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    x64 = rng.standard_normal((2, 8, 37, 41))
    w64 = rng.standard_normal((8, 2, 3, 5))
    b64 = rng.standard_normal(8)
    big = rng.standard_normal(1 << 18).astype(np.float32)
    image = rng.standard_normal((96, 96))
    layers = fastconv.layers
    net = layers.Sequential([layers.Conv2D(w32[:, :16], padding=1), layers.ReLU(),
                             layers.MaxPool2D(2)])  # one fused kernel call, shared packed weights
    return [
        ("Sequential conv-relu-pool", lambda t: net(x32, num_threads=t)),
        ("conv2d f32", lambda t: fastconv.conv2d(x32, w32, padding=1, num_threads=t)),
        ("conv2d f32 NHWC relu", lambda t: fastconv.conv2d(
            x32.transpose(0, 2, 3, 1), w32, stride=2, layout="NHWC", activation="relu",
            num_threads=t)),
        ("conv2d f64 groups", lambda t: fastconv.conv2d(
            x64, w64, b64, padding="same", dilation=2, groups=4, padding_mode="reflect",
            num_threads=t)),
        ("conv2d f32 depthwise s2", lambda t: fastconv.conv2d(
            x32, w32[:16, :1], padding=1, stride=2, groups=16, num_threads=t)),
        ("relu", lambda t: fastconv.relu(big, num_threads=t)),
        ("max_pool2d", lambda t: fastconv.max_pool2d(x32, 3, stride=1, padding=1,
                                                      num_threads=t)),
        ("max_pool2d indices NHWC", lambda t: fastconv.max_pool2d(
            x64.transpose(0, 2, 3, 1), 2, layout="NHWC", return_indices=True,
            num_threads=t)),
        ("correlate2d", lambda t: fastconv.correlate2d(image, image[:7, :5], "same")),
    ]


def as_bytes(result):
    if isinstance(result, tuple):
        return tuple(r.tobytes() for r in result)
    return result.tobytes()


def run_in_threads(n, target):
    """Start ``n`` threads running ``target(i)``, join them and re-raise the first error."""
    errors = []

    def wrapper(i):
        try:
            target(i)
        except BaseException as exc:  # reported below, with the thread it came from
            errors.append((i, exc))

    threads = [threading.Thread(target=wrapper, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker thread did not finish"
    if errors:
        raise AssertionError(f"thread {errors[0][0]} failed: {errors[0][1]!r}") from errors[0][1]


@needs_proc
def test_concurrent_callers_bit_identical_and_threads_bounded(rng):
    calls = make_calls(rng)
    serial = {name: as_bytes(call(1)) for name, call in calls}
    team = default_threads()
    threading.Thread(target=lambda: None).start()  # settle the interpreter's own threads
    gc.collect()
    baseline = os_threads()
    start = threading.Barrier(N_CALLERS)
    done = threading.Barrier(N_CALLERS + 1)
    leave = threading.Event()
    mismatches = []

    def caller(i):
        start.wait()
        for repeat in range(3):
            for k, (name, call) in enumerate(calls):
                # every caller mixes the default, an explicit team and a serial call
                threads = (None, team, 1, 2)[(i + k + repeat) % 4]
                if as_bytes(call(threads)) != serial[name]:
                    mismatches.append((i, name, threads))
        done.wait()
        leave.wait(timeout=60)

    workers = threading.Thread(target=run_in_threads, args=(N_CALLERS, caller))
    workers.start()
    done.wait(timeout=300)
    # Every caller is alive and has led parallel regions: its team's workers are parked.
    peak = os_threads()
    leave.set()
    workers.join()
    assert not mismatches, f"results differ from the serial call: {mismatches[:5]}"
    # callers + the thread that started them + each caller's parked OpenMP workers
    per_caller = max(team, _validation.resolve_num_threads(2))
    bound = baseline + 1 + N_CALLERS * per_caller
    assert peak <= bound, f"{peak} OS threads with {N_CALLERS} callers (baseline {baseline})"
    if _openmp_helpers.openmp_enabled() and per_caller > 1:
        assert peak > baseline + 1 + N_CALLERS, "the callers never ran a parallel region"
    # The callers have exited: libgomp ended their teams' workers too.
    deadline = time.monotonic() + 10
    while os_threads() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os_threads() <= baseline, f"{os_threads()} OS threads left (baseline {baseline})"


@needs_two_openmp_threads
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux thread placement")
def test_workers_leave_the_calling_threads_cpu(rng):
    """A virtual machine's scheduler may wake a sleeping OpenMP worker on the CPU of the
    thread that woke it (``_threads.h``); 63-96% of 2-thread regions after a 5 ms pause did
    on the project's VM, each 3-6x slower. The worker moves off that CPU as the region starts,
    and the calling thread's own affinity stays as it was."""
    affinity = os.sched_getaffinity(0)
    if len(affinity) < 2:
        pytest.skip("needs 2 CPUs in the affinity mask")
    shared = 0
    for _ in range(40):
        time.sleep(0.005)
        cpus = _openmp_helpers.region_cpus(2)
        assert all(cpu in affinity for cpu in cpus), cpus
        shared += cpus[0] == cpus[1]
    # (the calling thread may migrate between its own check and the worker's)
    assert shared <= 4, f"{shared} of 40 regions ran both threads on one CPU"
    for name, call in make_calls(rng):
        call(2)
    assert os.sched_getaffinity(0) == affinity


@needs_two_openmp_threads
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux thread placement")
def test_workers_follow_a_moving_caller(rng):
    """The calling thread hops between two CPUs; each kernel module's regions (here conv2d,
    then the probe) still put the worker on the other one, whichever module moved it last."""
    affinity = os.sched_getaffinity(0)
    if len(affinity) < 2:
        pytest.skip("needs 2 CPUs in the affinity mask")
    first, second = sorted(affinity)[:2]
    x = rng.standard_normal((1, 16, 20, 20)).astype(np.float32)
    weight = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    shared = 0
    try:
        for i in range(20):
            for cpu in (first, second) if i % 2 else (second, first):
                os.sched_setaffinity(0, {cpu})  # moves the caller there; it stays after
                os.sched_setaffinity(0, affinity)
                if cpu == first:
                    fastconv.conv2d(x, weight, padding=1, num_threads=2)
            cpus = _openmp_helpers.region_cpus(2)
            shared += cpus[0] == cpus[1]
    finally:
        os.sched_setaffinity(0, affinity)
    assert shared <= 2, f"{shared} of 20 regions ran both threads on one CPU"


def test_results_identical_for_every_thread_count(rng):
    for name, call in make_calls(rng):
        expected = as_bytes(call(1))
        for threads in (2, 3, 4, 16, None):
            assert as_bytes(call(threads)) == expected, (name, threads)


def count_new_threads(target):
    """OS threads a fresh worker thread adds while it runs ``target`` and stays alive."""
    ready, release = threading.Event(), threading.Event()
    result = {}

    def worker():
        result["value"] = target()
        ready.set()
        release.wait(timeout=60)

    gc.collect()
    before = os_threads()
    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait(timeout=120)
    added = os_threads() - before - 1  # not counting the worker itself
    release.set()
    thread.join()
    return added, result.get("value")


@needs_proc
@needs_two_openmp_threads
def test_num_threads_from_worker_threads(rng):
    x = rng.standard_normal((1, 32, 64, 64)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    expected = fastconv.conv2d(x, w, num_threads=1)
    added, y = count_new_threads(lambda: fastconv.conv2d(x, w, num_threads=1))
    assert added == 0 and np.array_equal(y, expected)
    added, y = count_new_threads(lambda: fastconv.conv2d(x, w, num_threads=2))
    assert added == 1 and np.array_equal(y, expected)


threadpoolctl = pytest.importorskip("threadpoolctl")


def test_threadpoolctl_sees_fastconvs_openmp():
    if not _openmp_helpers.openmp_enabled():
        pytest.skip("serial build")
    infos = threadpoolctl.threadpool_info()
    assert any(info["user_api"] == "openmp" for info in infos), infos


@needs_two_openmp_threads
def test_threadpool_limits_in_the_calling_thread(rng):
    x = rng.standard_normal((1, 32, 64, 64)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    expected = fastconv.conv2d(x, w)
    team = default_threads()
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert default_threads() == 1
        assert np.array_equal(fastconv.conv2d(x, w), expected)
        assert _validation.resolve_num_threads(2) == 2  # an explicit num_threads still wins
    assert default_threads() == team


@needs_proc
@needs_two_openmp_threads
def test_threadpool_limits_inside_worker_threads(rng):
    x = rng.standard_normal((1, 32, 64, 64)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    expected = fastconv.conv2d(x, w, num_threads=1)

    def limited():
        with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
            return default_threads(), fastconv.conv2d(x, w)

    added, (threads, y) = count_new_threads(limited)
    assert threads == 1 and added == 0 and np.array_equal(y, expected)

    # 16 workers, each limiting itself, all at once
    seen = []
    run_in_threads(N_CALLERS, lambda i: seen.append(limited()))
    assert [t for t, _ in seen] == [1] * N_CALLERS
    assert all(np.array_equal(y, expected) for _, y in seen)


@needs_two_openmp_threads
def test_threadpool_limits_do_not_reach_other_threads():
    """Documented behaviour: a limit set in one thread leaves other threads (existing or new)
    at the process default; limit inside the workers, or pass num_threads=."""
    team = default_threads()
    seen = []
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert default_threads() == 1
        run_in_threads(4, lambda i: seen.append(default_threads()))
    assert seen == [team] * 4


def test_omp_num_threads_applies_to_every_thread():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env["PYTHONPATH"] = package_parent
    script = textwrap.dedent("""
        import threading
        from fastconv import _validation
        seen = [_validation.resolve_num_threads(None)]
        t = threading.Thread(target=lambda: seen.append(_validation.resolve_num_threads(None)))
        t.start(); t.join()
        print(seen)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False, env=env, timeout=120, cwd=os.path.dirname(package_parent))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[1, 1]"


@pytest.mark.parametrize("user_env, expected", [
    ({}, "'3000'"),                                   # fastconv's short spin
    ({"GOMP_SPINCOUNT": "77"}, "'77'"),               # the user's spin count wins
    ({"OMP_WAIT_POLICY": "active"}, None),            # so does the user's wait policy
])
def test_openmp_spin_is_short_unless_the_user_chose(user_env, expected):
    """libgomp's idle threads spin for GOMP_SPINCOUNT polls; fastconv shortens it while its
    libgomp loads (see fastconv._openmp_env) and leaves the environment as it found it."""
    from fastconv import _openmp_env

    if not _openmp_helpers.openmp_enabled():
        pytest.skip("fastconv was built without OpenMP")
    env = {k: v for k, v in os.environ.items() if k not in _openmp_env.USER_SETTINGS}
    env.update(user_env, OMP_DISPLAY_ENV="verbose")
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env["PYTHONPATH"] = package_parent
    script = "import os, fastconv; print(os.environ.get('GOMP_SPINCOUNT'))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False, env=env, timeout=120, cwd=os.path.dirname(package_parent))
    assert proc.returncode == 0, proc.stderr
    shown = [line.split("=", 1)[1].strip() for line in proc.stderr.splitlines()
             if line.strip().startswith("GOMP_SPINCOUNT")]
    assert shown, proc.stderr  # libgomp printed its settings once, when fastconv loaded it
    if expected is not None:
        assert shown[0] == expected
    else:
        assert shown[0] != "'3000'"
    # The environment is the user's again once fastconv is imported.
    assert proc.stdout.strip() == user_env.get("GOMP_SPINCOUNT", "None")
