"""Which vector instruction sets this CPU (and its OS) supports, read through GCC's cpu model."""

cdef extern from *:
    """
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    static int fc_has_avx512(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    }
    static int fc_has_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    #else
    static int fc_has_avx512(void) { return 0; }
    static int fc_has_avx2(void) { return 0; }
    #endif
    """
    int fc_has_avx512()
    int fc_has_avx2()


def supported_isa_levels():
    """Instruction-set levels this CPU can run, best first (always ends with "baseline")."""
    levels = []
    if fc_has_avx512():
        levels.append("avx512")
    if fc_has_avx2():
        levels.append("avx2")
    levels.append("baseline")
    return levels
