/* Threading for the CPU kernels (scan_cpu.c, conv1d_cpu.c): lm_parallel runs a kernel's tasks [0, tasks)
   in nthreads contiguous ranges on the OpenMP team of the runtime torch uses, through its GOMP_parallel
   entry point (the caller finds it in torch's libraries; libgomp, LLVM's libomp and Intel's libiomp5 all
   export it). The same team as torch's own ops: its threads are awake, where threads of our own would
   share the cores with OpenMP workers that spin after every torch op. Ranges are claimed with an atomic
   counter, so a smaller team than asked for still runs them all. */
#include "cpu_vec.h"

typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);

typedef struct {
    const void *a;
    lm_task_fn fn;
    int64_t tasks, ranges, next;
    int rc;
} team_work;

static void team_worker(void *p)
{
    team_work *w = p;
    for (;;) {
        int64_t i = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED);
        if (i >= w->ranges) break;
        if (w->fn(w->a, w->tasks * i / w->ranges, w->tasks * (i + 1) / w->ranges))
            __atomic_store_n(&w->rc, 1, __ATOMIC_RELAXED);
    }
}

int lm_parallel(lm_task_fn fn, const void *a, int64_t tasks, int64_t nthreads, void *gomp_parallel)
{
    team_work w = {a, fn, tasks, nthreads < tasks ? nthreads : tasks, 0, 0};
    if (gomp_parallel && w.ranges > 1)
        ((gomp_parallel_fn)gomp_parallel)(team_worker, &w, (unsigned)w.ranges, 0);
    else
        team_worker(&w);
    return w.rc;
}
