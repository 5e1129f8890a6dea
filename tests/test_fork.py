"""Fork safety: a child forked after the parent ran parallel kernels can still call fastconv.

libgomp's thread pool does not survive ``fork()``: a child whose forking thread had led a
parallel region of more than one thread waits forever for pool threads that exist only in the
parent. fastconv runs every call of such a child on one thread
(``_validation.in_forked_child``: a fork counter kept by a pthread_atfork handler), and a
one-thread team never touches the pool.

Each scenario runs in a fresh interpreter (``subprocess`` with a timeout), so a hang fails the
test instead of hanging pytest, and the parent's OpenMP state is exactly what the script made.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import fastconv
from fastconv import _openmp_helpers

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TIMEOUT = 120  # seconds for a whole scenario; a healthy one takes about a second

# Work large enough that every op takes its parallel path (see the kernels' use_threads_if).
PRELUDE = textwrap.dedent("""
    import os, sys, threading, time
    import numpy as np
    import fastconv
    from fastconv import _validation

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 64, 64)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    big = rng.standard_normal(1 << 19)

    def run_all(num_threads=None):
        return [fastconv.conv2d(x, w, padding=1, num_threads=num_threads),
                fastconv.conv2d(x.transpose(0, 2, 3, 1), w, layout="NHWC",
                                num_threads=num_threads),
                fastconv.relu(big, num_threads=num_threads),
                fastconv.max_pool2d(x, 3, stride=1, padding=1, num_threads=num_threads),
                fastconv.max_pool2d(x, 2, return_indices=True, num_threads=num_threads)[1]]

    def same(a, b):
        return all(np.array_equal(p, q) for p, q in zip(a, b))

    def wait(pid, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.02)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return "hung"

    expected = run_all(num_threads=1)
    assert not _validation.in_forked_child()
""")

# The parent uses the parallel kernels: its libgomp pool now exists.
PARENT_USES_THREADS = """
assert same(run_all(num_threads=2), expected)
"""


def run_scenario(body, timeout=TIMEOUT, parent_uses_threads=True):
    """Run PRELUDE (+ PARENT_USES_THREADS) + body in a fresh interpreter importing this
    fastconv; return its stdout."""
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + [p for p in
                                        env.get("PYTHONPATH", "").split(os.pathsep) if p])
    script = (PRELUDE + (PARENT_USES_THREADS if parent_uses_threads else "")
              + textwrap.dedent(body))
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              check=False, timeout=timeout, env=env,
                              cwd=os.path.dirname(package_parent))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scenario hung for {timeout} s; output so far: {exc.stdout!r} {exc.stderr!r}")
    assert proc.returncode == 0, f"scenario failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_os_fork_child_computes_after_parent_used_threads():
    out = run_scenario("""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ok = (_validation.in_forked_child()
                      and _validation.resolve_num_threads(None) == 1
                      and _validation.resolve_num_threads(8) == 1
                      and same(run_all(), expected) and same(run_all(num_threads=2), expected))
                code = 0 if ok else 3
            finally:
                os._exit(code)
        print("child", wait(pid, 60))
        # The parent keeps its threads and still agrees with itself.
        print("parent", same(run_all(num_threads=2), expected),
              _validation.in_forked_child())
    """)
    assert "child 0" in out, out
    assert "parent True False" in out, out


def test_grandchild_and_argument_checks_after_fork():
    out = run_scenario("""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                try:
                    fastconv.relu(big, num_threads=0)
                except ValueError:
                    pass
                else:
                    os._exit(4)  # arguments are still checked in the child
                grandchild = os.fork()
                if grandchild == 0:
                    os._exit(0 if same(run_all(), expected) else 5)
                code = wait(grandchild, 60)
                code = code if isinstance(code, int) else 6
            finally:
                os._exit(code)
        print("child", wait(pid, 90))
    """)
    assert "child 0" in out, out


def test_multiprocessing_fork_pool():
    out = run_scenario("""
        import multiprocessing as mp

        def work(seed):
            return [r.tobytes() for r in run_all()] == [r.tobytes() for r in expected]

        ctx = mp.get_context("fork")
        with ctx.Pool(2) as pool:
            result = pool.map_async(work, range(4))
            print("results", result.get(timeout=60))
        proc = ctx.Process(target=work, args=(0,))
        proc.start()
        proc.join(60)
        print("process", proc.exitcode)
    """)
    assert "results [True, True, True, True]" in out, out
    assert "process 0" in out, out


def test_fork_while_other_threads_run_parallel_kernels():
    out = run_scenario("""
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                run_all(num_threads=2)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        codes = []
        for _ in range(5):
            pid = os.fork()
            if pid == 0:
                os._exit(0 if same(run_all(), expected) else 3)
            codes.append(wait(pid, 60))
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
        print("codes", codes)
    """)
    assert "codes [0, 0, 0, 0, 0]" in out, out


@pytest.mark.skipif(not _openmp_helpers.openmp_enabled(), reason="needs OpenMP")
def test_child_keeps_its_threads_if_the_parent_never_ran_a_team():
    """Forked before any call with more than one thread (e.g. from a forkserver that only
    imported fastconv, or after serial calls): the child may use threads, and finishes."""
    out = run_scenario("""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                threads = _validation.resolve_num_threads(None)
                ok = (not _validation.in_forked_child()
                      and threads == min(_validation._openmp_helpers.usable_cpu_count(),
                                         _validation._openmp_helpers.get_max_threads())
                      and same(run_all(num_threads=2), expected))
                # ... and its own children, forked after it used threads, run serially
                used_threads = _validation.resolve_num_threads(2) > 1
                grandchild = os.fork()
                if grandchild == 0:
                    os._exit(0 if _validation.in_forked_child() == used_threads
                             and same(run_all(), expected) else 7)
                code = 0 if ok and wait(grandchild, 60) == 0 else 3
            finally:
                os._exit(code)
        print("child", wait(pid, 60))
    """, parent_uses_threads=False)
    assert "child 0" in out, out


def test_fork_from_c_without_python_hooks():
    """A fork that skips os.register_at_fork hooks (libc's fork through ctypes, as C code would
    do) is still detected, by the fork counter of a pthread_atfork handler."""
    out = run_scenario("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        pid = libc.fork()
        if pid == 0:
            os._exit(0 if _validation.in_forked_child() and same(run_all(), expected) else 3)
        print("child", wait(pid, 60))
    """)
    assert "child 0" in out, out


def _runtime_is_libgomp():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    fastconv.relu([1.0])  # make sure the extensions (and their OpenMP runtime) are loaded
    infos = threadpoolctl.threadpool_info()
    return any(i.get("user_api") == "openmp" and "gomp" in os.path.basename(i["filepath"])
               for i in infos)


@pytest.mark.skipif(not _openmp_helpers.openmp_enabled() or (os.cpu_count() or 1) < 2,
                    reason="needs OpenMP and 2 CPUs")
def test_the_hang_is_real_without_the_guard():
    """The control: with the guard switched off, the child hangs (libgomp), so the tests above
    do test something."""
    if not _runtime_is_libgomp():
        pytest.skip("the hang is specific to GNU libgomp")
    if _validation_cpu_count() < 2:
        pytest.skip("one CPU: every call is serial anyway")
    out = run_scenario("""
        pid = os.fork()
        if pid == 0:
            _validation._openmp_helpers._switch_fork_guard_off()
            fastconv.conv2d(x, w, padding=1, num_threads=2)
            os._exit(0)
        print("child", wait(pid, 5))
    """)
    assert "child hung" in out, out


def _validation_cpu_count():
    from fastconv import _validation

    return _validation._openmp_helpers.usable_cpu_count()
