"""OpenMP facts the Python layer needs: is it compiled in, how many threads by default, and
has this process been forked (see fastconv._validation's fork safety)."""

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
