/* Vector helpers shared by the CPU kernels (scan_cpu.c, conv1d_cpu.c): plain C with GCC/Clang vector
   extensions, a vector holding VL = 8 consecutive channels (one AVX2 register), loads and stores at any
   stride, and exp and sigmoid as inlined polynomials (Cephes), vectorised. */
#ifndef LOCALMAMBA_CPU_VEC_H
#define LOCALMAMBA_CPU_VEC_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#define VL 8
typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(float))));

/* ---------------------------------------------------------------------------------------- vector math */
static inline vf bc(float x) { return (vf){0} + x; }
static inline vf sel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
/* min(x, hi) and max(x, lo), NaN staying NaN (one instruction each with AVX, which returns its second
   operand when one is NaN) */
#if defined(__AVX__)
static inline vf vmin(vf x, float hi) { return (vf)_mm256_min_ps(_mm256_set1_ps(hi), (__m256)x); }
static inline vf vmax(vf x, float lo) { return (vf)_mm256_max_ps(_mm256_set1_ps(lo), (__m256)x); }
#else
static inline vf vmin(vf x, float hi) { return sel(x > hi, bc(hi), x); }
static inline vf vmax(vf x, float lo) { return sel(x < lo, bc(lo), x); }
#endif

static inline vf ld(const float *p, int64_t s, int nv)
{
    vf v = {0};
    if (s == 1 && nv == VL) {
        memcpy(&v, p, sizeof v);
    } else {
        for (int j = 0; j < nv; j++) v[j] = p[j * s];
    }
    return v;
}

static inline void st(float *p, int64_t s, int nv, vf v)
{
    if (s == 1 && nv == VL) {
        memcpy(p, &v, sizeof v);
    } else {
        for (int j = 0; j < nv; j++) p[j * s] = v[j];
    }
}

static inline float hsum(vf v)
{
    float s = 0.0f;
    for (int j = 0; j < VL; j++) s += v[j];
    return s;
}

/* exp(x) for x clamped to [-87, 88]: exp(-87) = 1.6e-38 stands for the smaller values (a state decayed to
   nothing either way), exp(88) for overflow; NaN stays NaN. Cephes' range reduction, then a degree-5
   polynomial (near-minimax, fitted on [-ln2/2, ln2/2]): relative error 1.6e-7 evaluated in fp32, where
   Cephes' degree 7 gave 1e-7; LocalVim-T's scan forward 4.2 ms against 4.5. */
static inline vf vexp(vf x)
{
    x = vmax(vmin(x, 88.0f), -87.0f);
    vf k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* round(x / ln 2) */
    vf r = x - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    vf p = 8.31253e-3f * r + 4.189013e-2f;
    p = p * r + 1.6667114e-1f;
    p = p * r + 4.999923e-1f;
    p = p * (r * r) + r + 1.0f;
    vi ki = __builtin_convertvector(k, vi);
    vf scale = (vf)((ki + 127) << 23);
    return p * scale;
}

static inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

/* A kernel's work is cut into tasks, run by lm_parallel (cpu_team.c) or by the caller's threads as index
   ranges [task0, task1); every task function has this signature and returns nonzero when out of memory. */
typedef int (*lm_task_fn)(const void *args, int64_t task0, int64_t task1);

#endif
