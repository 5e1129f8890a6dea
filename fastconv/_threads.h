/* Keeping a parallel region's threads on different CPUs.
 *
 * On a virtual machine an idle vCPU may be taken off its host core; Linux then sees it as
 * preempted and wakes a sleeping OpenMP worker on the CPU of the thread that woke it (the
 * master). Both then share one CPU until the load balancer moves one, milliseconds later:
 * measured on this project's 2-vCPU VM, after a 5 ms pause 63-96% of small parallel regions
 * ran their two threads on one CPU, each region 3-6x slower than on two. A worker that finds
 * itself on the master's CPU at the start of a region moves itself off it: it narrows its
 * own affinity to the process's CPUs minus the master's. Only the OpenMP workers change;
 * the calling thread and the rest of the process keep their affinity.
 */
#ifndef FASTCONV_THREADS_H
#define FASTCONV_THREADS_H

#ifdef _OPENMP
#include <omp.h>
#define fc_thread_num() omp_get_thread_num()
#else
#define fc_thread_num() 0
#endif

#if defined(__linux__)
#include <sched.h>
#include <unistd.h>

/* The CPU the calling thread runs on, or -1 if unknown. */
static inline int fc_current_cpu(void) { return sched_getcpu(); }

static void fc_move_off_cpu(int cpu)
{
    /* The process's CPUs: those of its main thread (the thread group leader). Not this
     * worker's own mask, which an earlier move (by another kernel module's copy of this
     * code) may have narrowed. */
    cpu_set_t others;
    if (sched_getaffinity(getpid(), sizeof others, &others) != 0) return;
    CPU_CLR(cpu, &others);
    if (CPU_COUNT(&others) > 0) sched_setaffinity(0, sizeof others, &others);
}

/* Called by every thread of a region as it starts, with master_cpu from fc_current_cpu()
 * just before the region; the master itself returns at once. Costs a worker one
 * sched_getcpu() unless it shares the master's CPU. */
static inline void fc_leave_master_cpu(int master_cpu)
{
    if (fc_thread_num() > 0 && master_cpu >= 0 && sched_getcpu() == master_cpu)
        fc_move_off_cpu(master_cpu);
}
#else
static inline int fc_current_cpu(void) { return -1; }
static inline void fc_leave_master_cpu(int master_cpu) { (void)master_cpu; }
#endif

#endif
