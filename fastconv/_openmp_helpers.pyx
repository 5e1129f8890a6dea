"""OpenMP facts the Python layer needs: is it compiled in, how many threads by default, and
has this process been forked (see fastconv._validation's fork safety)."""

from cython.parallel cimport parallel, threadid

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FC_OPENMP_ENABLED 1
    #define fc_get_max_threads() omp_get_max_threads()
    #else
    #define FC_OPENMP_ENABLED 0
    #define fc_get_max_threads() 1
    #endif
    """
    int FC_OPENMP_ENABLED
    int fc_get_max_threads() nogil


cdef extern from "_threads.h" nogil:
    int fc_current_cpu()
    void fc_leave_master_cpu(int master_cpu)


def region_cpus(int num_threads):
    """The CPU each thread of one parallel region of ``num_threads`` runs on once the region
    has started the way the kernels start theirs (workers leave the calling thread's CPU,
    see _threads.h); -1 where unknown. For tests and diagnosis."""
    cdef int cpus[64]
    cdef int master_cpu = fc_current_cpu()
    cdef int n = max(1, min(num_threads, 64)), i
    for i in range(n):
        cpus[i] = -1
    with nogil, parallel(num_threads=n):
        fc_leave_master_cpu(master_cpu)
        cpus[threadid()] = fc_current_cpu()
    return [cpus[i] for i in range(n)]


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(FC_OPENMP_ENABLED)


def get_max_threads():
    """The OpenMP default team size for the calling thread.

    Honours ``OMP_NUM_THREADS`` and limits set by ``threadpoolctl`` (which calls
    ``omp_set_num_threads`` on the OpenMP runtime fastconv links).
    """
    return fc_get_max_threads()


cdef extern from *:
    """
    /* Forks of this process, counted in the child by a pthread_atfork handler: it runs for
     * every fork(), also one made from C, which skips Python's os.register_at_fork hooks.
     * Reading a counter costs far less than getpid(), a system call, on every conv2d call. */
    #if defined(__unix__) || defined(__APPLE__)
    #include <pthread.h>
    static long fc_forks = 0;
    static void fc_count_fork(void) { fc_forks++; }
    static int fc_watch_forks(void) { return pthread_atfork(NULL, NULL, fc_count_fork); }
    #else
    static long fc_forks = 0;
    static int fc_watch_forks(void) { return 0; }
    #endif
    """
    long fc_forks
    int fc_watch_forks()


if fc_watch_forks() != 0:
    raise ImportError("fastconv: pthread_atfork failed; fork safety cannot be ensured")


def fork_count():
    """How many times this process's ancestry forked since fastconv loaded: a child sees
    its parent's count plus one."""
    return fc_forks


# Fork safety. libgomp's thread pool does not survive fork(): a child whose forking thread had
# led a parallel region of more than one thread waits forever for the parent's pool threads,
# which do not exist in the child. A one-thread team (num_threads=1, or use_threads_if false)
# never touches the pool. So once this process may have started a team of more than one thread
# (resolve_num_threads returned > 1), a child forked from it runs every call on one thread, and
# so do its own children. A child forked before that (e.g. multiprocessing workers forked from
# a forkserver that only imported fastconv) keeps its threads. The pthread_atfork counter
# covers os.fork, multiprocessing and forks made from C alike. In C: this runs on every call.
cdef long _forks_seen = fc_forks  # forks the two flags below have taken into account
cdef bint _threads_used = False    # this process may have run a team of more than one thread
cdef bint _forked_child = False    # forked from a process that had: run serially


def _usable_cpus():
    import os
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


cdef int _cpu_count = _usable_cpus()


def usable_cpu_count():
    """CPUs this process may run on (its affinity mask): the most threads a call uses."""
    return _cpu_count


cpdef bint in_forked_child():
    """True in a process forked (at any depth) from one that had run fastconv's kernels on more
    than one thread: every call then runs on one thread."""
    global _forks_seen, _forked_child
    if fc_forks != _forks_seen:
        _forks_seen = fc_forks
        _forked_child = _forked_child or _threads_used
    return _forked_child


def _switch_fork_guard_off():
    """Treat this process as never forked (only for the test that shows the hang is real)."""
    global _forks_seen, _forked_child
    _forks_seen = fc_forks
    _forked_child = False


def resolve_num_threads(num_threads):
    """None -> the OpenMP default of the calling thread (at most the usable CPUs); an int >= 1
    caps the call (more threads than CPUs only add contention and scratch memory).

    Always 1 in a forked child (see ``in_forked_child``); arguments are still checked.
    """
    global _threads_used
    cdef long threads
    if num_threads is None:
        threads = min(fc_get_max_threads(), _cpu_count)  # both >= 1
    else:
        if type(num_threads) is not int:  # the usual case skips the ABC checks
            import numbers
            import numpy as np
            if (isinstance(num_threads, (bool, np.bool_))
                    or not isinstance(num_threads, (numbers.Integral, np.integer))):
                raise TypeError(f"num_threads must be None or an int >= 1, got {num_threads!r}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be None or an int >= 1, got {num_threads}")
        threads = min(num_threads, _cpu_count)
    if in_forked_child():
        return 1
    if threads > 1:
        _threads_used = True
    return threads
