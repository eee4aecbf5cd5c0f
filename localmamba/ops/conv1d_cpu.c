/* Causal depthwise conv1d on CPU, forward and backward (conv1d.py):

       out_t = act(bias + sum_{s < W} weight[c, W-1-s] * x_{t-s}),   x_{t<0} = 0,  act: identity or SiLU

   Built and loaded by _cpu_kernels.py with the other CPU kernels (cc -O3 -march=native, ctypes). A task is
   one (batch element, block of VL channels): it walks the block's steps in time with the last W inputs in
   registers (the forward), or backwards in time with the last W inputs and W output gradients (the
   backward: SiLU's derivative from the recomputed pre-activation, dx, and dweight and dbias summed over
   the steps in registers, written once per task into per-batch-element partials that the caller adds up).
   No two tasks write the same memory; x is read once in each direction. Every tensor comes as a pointer and
   element strides; channels at stride 1 (the mixers' (B, L, C) and (L, B, C) storage) load as whole
   vectors, others lane by lane. Widths 2, 3 and 4 get code of their own (windows unrolled into registers),
   other widths up to WMAX one generic loop. */
#include "cpu_vec.h"

#define WMAX 8

/* Mirrored by ctypes in conv1d_cpu.py: keep the field order. Strides are in elements, in the order of
   the tensor's dimensions: (batch, channel, step) for x, out, dout, dx; (channel, tap) for weight. */
typedef struct {
    int64_t b, c, l, w, silu;
    const float *x; int64_t sx[3];
    const float *weight; int64_t sweight[2];
    const float *bias; int64_t sbias;   /* NULL: none */
    float *out; int64_t sout[3];
    const float *dout; int64_t sdout[3];
    float *dx; int64_t sdx[3];
    float *dweight;                     /* (b, w, c) contiguous: per batch element, tap by tap */
    float *dbias;                       /* (b, c) */
} cc_args;

/* a vector of nv channels at stride s; vec (a constant): channels at stride 1, a whole vector */
static inline __attribute__((always_inline)) vf ldv(const float *p, int64_t s, int nv, const int vec)
{
    if (vec) {
        vf v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    return ld(p, s, nv);
}

static inline __attribute__((always_inline)) void stv(float *p, int64_t s, int nv, vf v, const int vec)
{
    if (vec)
        memcpy(p, &v, sizeof v);
    else
        st(p, s, nv, v);
}

/* wv[s]: the weight of x_{t-s} (weight[:, W-1-s]) for the nv channels from c0; the bias (0 when none) */
static inline __attribute__((always_inline)) vf taps(const cc_args *a, int64_t c0, int nv, int W, vf *wv)
{
    for (int s = 0; s < W; s++)
        wv[s] = ld(a->weight + c0 * a->sweight[0] + (W - 1 - s) * a->sweight[1], a->sweight[0], nv);
    return a->bias ? ld(a->bias + c0 * a->sbias, a->sbias, nv) : bc(0.0f);
}

static inline __attribute__((always_inline)) void
fwd_block(const cc_args *a, int64_t bi, int64_t c0, int nv, const int W, const int silu, const int vec)
{
    vf wv[WMAX], xw[WMAX];                                      /* xw[s] = x_{t-s} */
    vf bv = taps(a, c0, nv, W, wv);
    const float *x = a->x + bi * a->sx[0] + c0 * a->sx[1];
    float *out = a->out + bi * a->sout[0] + c0 * a->sout[1];
    for (int s = 0; s < W; s++) xw[s] = bc(0.0f);
    for (int64_t t = 0; t < a->l; t++) {
        for (int s = W - 1; s > 0; s--) xw[s] = xw[s - 1];
        xw[0] = ldv(x + t * a->sx[2], a->sx[1], nv, vec);
        vf o = bv;
        for (int s = 0; s < W; s++) o += wv[s] * xw[s];
        if (silu) o *= vsigmoid(o);
        stv(out + t * a->sout[2], a->sout[1], nv, o, vec);
    }
}

/* Backwards in time: g_t = dout_t act'(pre_t), dx_t = sum_s weight[:, W-1-s] g_{t+s},
   dweight[:, W-1-s] = sum_t g_t x_{t-s}, dbias = sum_t g_t. */
static inline __attribute__((always_inline)) void
bwd_block(const cc_args *a, int64_t bi, int64_t c0, int nv, const int W, const int silu, const int vec)
{
    vf wv[WMAX], xw[WMAX], gw[WMAX], dw[WMAX];                  /* xw[s] = x_{t-s}, gw[s] = g_{t+s} */
    vf bv = taps(a, c0, nv, W, wv), db = bc(0.0f);
    const int64_t l = a->l, sxt = a->sx[2], sxc = a->sx[1];
    const float *x = a->x + bi * a->sx[0] + c0 * sxc;
    const float *dout = a->dout + bi * a->sdout[0] + c0 * a->sdout[1];
    float *dx = a->dx + bi * a->sdx[0] + c0 * a->sdx[1];
    for (int s = 0; s < W; s++) {
        xw[s] = l - 1 - s >= 0 ? ldv(x + (l - 1 - s) * sxt, sxc, nv, vec) : bc(0.0f);
        gw[s] = dw[s] = bc(0.0f);
    }
    for (int64_t t = l - 1; t >= 0; t--) {
        vf g = ldv(dout + t * a->sdout[2], a->sdout[1], nv, vec);
        if (silu) {                                             /* silu'(p) = sig(p) (1 + p (1 - sig(p))) */
            vf p = bv;
            for (int s = 0; s < W; s++) p += wv[s] * xw[s];
            vf sg = vsigmoid(p);
            g *= sg * (1.0f + p * (1.0f - sg));
        }
        for (int s = W - 1; s > 0; s--) gw[s] = gw[s - 1];
        gw[0] = g;
        vf d = bc(0.0f);
        for (int s = 0; s < W; s++) {
            d += wv[s] * gw[s];
            dw[s] += g * xw[s];
        }
        stv(dx + t * a->sdx[2], a->sdx[1], nv, d, vec);
        db += g;
        for (int s = 0; s < W - 1; s++) xw[s] = xw[s + 1];
        xw[W - 1] = t - W >= 0 ? ldv(x + (t - W) * sxt, sxc, nv, vec) : bc(0.0f);
    }
    for (int s = 0; s < W; s++)
        st(a->dweight + (bi * W + W - 1 - s) * a->c + c0, 1, nv, dw[s]);
    st(a->dbias + bi * a->c + c0, 1, nv, db);
}

/* Whole vectors of widths 2, 3 and 4 (the mixers' 4) get a copy of the block each, per activation: constant W
   unrolls the windows into registers. The rest (partial blocks, strided channels, other widths): one generic
   copy. */
#define TASKS(block, vec_ok)                                                                                \
    const cc_args *a = args;                                                                              \
    if (a->w < 1 || a->w > WMAX) return 1;                                                                \
    const int64_t nblk = (a->c + VL - 1) / VL;                                                            \
    for (int64_t task = task0; task < task1; task++) {                                                    \
        int64_t bi = task / nblk, c0 = task % nblk * VL;                                                  \
        int nv = (int)(a->c - c0 < VL ? a->c - c0 : VL);                                                  \
        if (nv == VL && (vec_ok)) {                                                                       \
            switch (a->w * 2 + (a->silu != 0)) {                                                          \
            case 4: block(a, bi, c0, VL, 2, 0, 1); continue;                                              \
            case 5: block(a, bi, c0, VL, 2, 1, 1); continue;                                              \
            case 6: block(a, bi, c0, VL, 3, 0, 1); continue;                                              \
            case 7: block(a, bi, c0, VL, 3, 1, 1); continue;                                              \
            case 8: block(a, bi, c0, VL, 4, 0, 1); continue;                                              \
            case 9: block(a, bi, c0, VL, 4, 1, 1); continue;                                              \
            }                                                                                             \
        }                                                                                                 \
        block(a, bi, c0, nv, (int)a->w, a->silu != 0, 0);                                                 \
    }                                                                                                     \
    return 0;

/* tasks: b * ceil(c / VL), (batch element, block of channels) */
int cc_forward(const void *args, int64_t task0, int64_t task1)
{
    TASKS(fwd_block, a->sx[1] == 1 && a->sout[1] == 1)
}

int cc_backward(const void *args, int64_t task0, int64_t task1)
{
    TASKS(bwd_block, a->sx[1] == 1 && a->sdout[1] == 1 && a->sdx[1] == 1)
}
