"""OpenMP facts the Python layer needs: is it compiled in, and how many threads by default."""

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
