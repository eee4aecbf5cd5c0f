/* Fused selective scan on CPU, forward and backward (the S6 recurrence of selective_scan.py).

   Built and loaded by _cpu_kernels.py with the other CPU kernels (cc -O3 -march=native, ctypes); no Python
   or torch headers. Plain C with GCC/Clang vector extensions (cpu_vec.h): a vector holds VL = 8 consecutive
   channels of one group (one AVX2 register), so each step is elementwise over channels with B_t[n] and C_t[n]
   broadcast, and the forward needs no horizontal sum. exp, log1p and sigmoid are inlined polynomials
   (Cephes), vectorised.

   Work is cut into tasks that the caller hands out to threads as index ranges [task0, task1) (lm_parallel,
   cpu_team.c):
   - forward: one task per (batch, block of VL channels);
   - backward: one task per (batch, group, split of the group's blocks). A task recomputes the states of
     its blocks into per-thread scratch, walks the adjoint recurrence backwards, and writes dB and dC of
     its (batch, group, split) and dA, dD, d delta_bias of its (batch, channels): partial sums that the
     caller adds up. No two tasks write the same memory.
   Every tensor comes as a pointer and element strides, so any layout works; channels at stride 1 (the
   layers' time-major (l, b, d) storage) load as whole vectors, others lane by lane. */
#include "cpu_vec.h"

/* Mirrored by ctypes in scan_cpu.py: keep the field order. Strides are in elements, in the
   order of the tensor's dimensions: (batch, channel, step) for u, delta, z, out and their gradients. */
typedef struct {
    int64_t b, d, l, n, gB, gC, G, S, softplus;
    const float *u; int64_t su[3];
    const float *delta; int64_t sdelta[3];
    const float *A; int64_t sA[2];
    const float *B; int64_t sB[4];      /* (batch, group, state, step) */
    const float *C; int64_t sC[4];
    const float *D; int64_t sD;         /* NULL: absent (as are z and bias) */
    const float *z; int64_t sz[3];
    const float *bias; int64_t sbias;
    float *out; int64_t sout[3];
    const float *dout; int64_t sdout[3];
    float *du; int64_t sdu[3];
    float *ddelta; int64_t sddelta[3];
    float *dz; int64_t sdz[3];
    float *dA;                          /* (b, d, n) contiguous: per batch element */
    float *dD, *dbias;                  /* (b, d) */
    float *dB, *dC;                     /* (S, l, b, G, n) contiguous: per split of a group */
} ss_args;

/* ------------------------------------------------------------------------------------ vector math */
/* log(1 + e) for e in [0, 1]: Cephes logf of w = 1 + e, times e / (w - 1), which cancels the rounding
   of 1 + e (Goldberg's log1p); e where w rounds to 1. */
static inline vf vlog1p01(vf e)
{
    vf w = 1.0f + e;
    vi big = w > 1.41421356f;
    vf x = sel(big, w * 0.5f, w) - 1.0f;
    vf k = sel(big, bc(1.0f), bc(0.0f));
    vf z = x * x;
    vf y = 7.0376836292e-2f * x - 1.1514610310e-1f;
    y = y * x + 1.1676998740e-1f;
    y = y * x - 1.2420140846e-1f;
    y = y * x + 1.4249322787e-1f;
    y = y * x - 1.6668057665e-1f;
    y = y * x + 2.0000714765e-1f;
    y = y * x - 2.4999993993e-1f;
    y = y * x + 3.3333331174e-1f;
    y = y * x * z;
    y = y + k * -2.12194440e-4f - 0.5f * z;
    vf lg = x + y + k * 0.693359375f;
    vf wm1 = w - 1.0f;
    vi one = wm1 == 0.0f;
    return sel(one, e, lg * e / sel(one, bc(1.0f), wm1));
}

/* softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)) */
static inline vf vsoftplus(vf x)
{
    vf ax = sel(x < 0.0f, -x, x);
    return sel(x > 0.0f, x, bc(0.0f)) + vlog1p01(vexp(-ax));
}


/* ------------------------------------------------------------------------------------- shared parts */
/* One block: nv <= VL channels from c0 of batch element bi, all in one group of B and one of C. */
typedef struct {
    int64_t bi, c0;
    int nv;
    const float *u, *delta, *z, *B, *C;  /* at (bi, c0, step 0) / (bi, group, state 0, step 0) */
    vf Dv, biasv;                        /* 0 where absent, and in lanes past nv */
} block;

static block block_at(const ss_args *a, int64_t bi, int64_t c0, int nv, vf *Av)
{
    block k;
    k.bi = bi;
    k.c0 = c0;
    k.nv = nv;
    k.u = a->u + bi * a->su[0] + c0 * a->su[1];
    k.delta = a->delta + bi * a->sdelta[0] + c0 * a->sdelta[1];
    k.z = a->z ? a->z + bi * a->sz[0] + c0 * a->sz[1] : NULL;
    k.B = a->B + bi * a->sB[0] + (c0 / (a->d / a->gB)) * a->sB[1];
    k.C = a->C + bi * a->sC[0] + (c0 / (a->d / a->gC)) * a->sC[1];
    k.Dv = a->D ? ld(a->D + c0 * a->sD, a->sD, nv) : bc(0.0f);
    k.biasv = a->bias ? ld(a->bias + c0 * a->sbias, a->sbias, nv) : bc(0.0f);
    for (int64_t s = 0; s < a->n; s++)
        Av[s] = ld(a->A + c0 * a->sA[0] + s * a->sA[1], a->sA[0], nv);
    return k;
}

/* delta_t (+ bias, softplus) and delta_t u_t of every step, and softplus'(delta_t + bias) if dsp is given.
   A loop of independent steps ahead of the recurrence: inline, each step of the recurrence waited for
   softplus' long chain of dependent operations (LocalVim-T layer forward, 1 thread: 7.9 ms inline,
   5.3 ms hoisted). */
static void step_inputs(const ss_args *a, const block *k, vf *dt, vf *dtu, vf *dsp)
{
    for (int64_t t = 0; t < a->l; t++) {
        vf x = ld(k->delta + t * a->sdelta[2], a->sdelta[1], k->nv) + k->biasv;
        vf d = a->softplus ? vsoftplus(x) : x;
        dt[t] = d;
        dtu[t] = d * ld(k->u + t * a->su[2], a->su[1], k->nv);
        if (dsp)
            dsp[t] = a->softplus ? vsigmoid(x) : bc(1.0f);
    }
}

static void *scratch(size_t nvec)
{
    size_t bytes = (nvec ? nvec : 1) * sizeof(vf);
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

/* ------------------------------------------------------------------------------------------ forward */
int ss_forward(const void *args, int64_t task0, int64_t task1)
{
    const ss_args *a = args;
    const int64_t n = a->n, l = a->l, dG = a->d / a->G, nblk = (dG + VL - 1) / VL;
    vf *h = scratch(2 * n + 2 * l), *Av = h + n, *dt = Av + n, *dtu = dt + l;
    if (!h) return 1;
    for (int64_t task = task0; task < task1; task++) {
        int64_t bi = task / (a->G * nblk), gi = task / nblk % a->G, blk = task % nblk;
        int64_t off = blk * VL;
        int nv = (int)(dG - off < VL ? dG - off : VL);
        block k = block_at(a, bi, gi * dG + off, nv, Av);
        float *out = a->out + bi * a->sout[0] + k.c0 * a->sout[1];
        step_inputs(a, &k, dt, dtu, NULL);
        for (int64_t s = 0; s < n; s++) h[s] = bc(0.0f);
        for (int64_t t = 0; t < l; t++) {
            vf y = bc(0.0f);
            const float *Bt = k.B + t * a->sB[3], *Ct = k.C + t * a->sC[3];
            for (int64_t s = 0; s < n; s++) {
                h[s] = vexp(dt[t] * Av[s]) * h[s] + dtu[t] * Bt[s * a->sB[2]];
                y += Ct[s * a->sC[2]] * h[s];
            }
            vf o = y + k.Dv * ld(k.u + t * a->su[2], a->su[1], nv);
            if (k.z) {
                vf zv = ld(k.z + t * a->sz[2], a->sz[1], nv);
                o *= zv * vsigmoid(zv);
            }
            st(out + t * a->sout[2], a->sout[1], nv, o);
        }
    }
    free(h);
    return 0;
}

/* ----------------------------------------------------------------------------------------- backward */
typedef struct {
    vf *h, *Av, *dh, *anext, *dAv;  /* (n) each */
    vf *hprev, *decay;              /* (l, n): h_{t-1} and exp(delta_t A) of every step */
    vf *dt, *dtu, *dy, *dsp;        /* (l): delta after softplus, delta u, dL/dy, softplus'(delta) */
    vf *dBacc, *dCacc;              /* (l, n): the task's dB and dC, lane by lane */
} bwd_scratch;

/* Forward again, keeping h_{t-1} and exp(delta_t A); dC and dz need only forward quantities. */
static void bwd_recompute(const ss_args *a, const block *k, bwd_scratch *w, const float *dout, float *dz)
{
    const int64_t n = a->n, l = a->l;
    const int nv = k->nv;
    step_inputs(a, k, w->dt, w->dtu, w->dsp);
    for (int64_t s = 0; s < n; s++) w->h[s] = bc(0.0f);
    for (int64_t t = 0; t < l; t++) {
        vf dt = w->dt[t], dtu = w->dtu[t];
        vf g = ld(dout + t * a->sdout[2], a->sdout[1], nv);
        vf dy = g, y = bc(0.0f), zv = bc(0.0f), sz = bc(0.0f);
        if (k->z) {
            zv = ld(k->z + t * a->sz[2], a->sz[1], nv);
            sz = vsigmoid(zv);
            dy = g * zv * sz;                                   /* dL/dy = dout * silu(z) */
        }
        const float *Bt = k->B + t * a->sB[3], *Ct = k->C + t * a->sC[3];
        vf *hp = w->hprev + t * n, *dc = w->decay + t * n, *acc = w->dCacc + t * n;
        for (int64_t s = 0; s < n; s++) {
            vf da = vexp(dt * w->Av[s]);
            hp[s] = w->h[s];
            dc[s] = da;
            w->h[s] = da * w->h[s] + dtu * Bt[s * a->sB[2]];
            y += Ct[s * a->sC[2]] * w->h[s];
            acc[s] += dy * w->h[s];                             /* dC_t = sum_c dy_t h_t */
        }
        if (k->z) {                                             /* dz = dout (y + D u) silu'(z) */
            vf o = y + k->Dv * ld(k->u + t * a->su[2], a->su[1], nv);
            st(dz + t * a->sdz[2], a->sdz[1], nv, g * o * sz * (1.0f + zv * (1.0f - sz)));
        }
        w->dy[t] = dy;
    }
}

/* The adjoint recurrence dh_t = C_t dy_t + exp(delta_{t+1} A) dh_{t+1}, t = l-1 .. 0, and every gradient
   of the block's channels. */
static void bwd_adjoint(const ss_args *a, const block *k, bwd_scratch *w, float *du, float *ddelta)
{
    const int64_t n = a->n, l = a->l;
    const int nv = k->nv;
    vf dDv = bc(0.0f), dbv = bc(0.0f);
    for (int64_t s = 0; s < n; s++) w->dh[s] = w->anext[s] = w->dAv[s] = bc(0.0f);
    for (int64_t t = l - 1; t >= 0; t--) {
        vf dt = w->dt[t], dtu = w->dtu[t], dy = w->dy[t];
        vf uv = ld(k->u + t * a->su[2], a->su[1], nv);
        vf sB = bc(0.0f), sA = bc(0.0f);
        const float *Bt = k->B + t * a->sB[3], *Ct = k->C + t * a->sC[3];
        vf *hp = w->hprev + t * n, *dc = w->decay + t * n, *acc = w->dBacc + t * n;
        for (int64_t s = 0; s < n; s++) {
            vf g = w->anext[s] * w->dh[s] + Ct[s * a->sC[2]] * dy;
            float Bs = Bt[s * a->sB[2]];
            w->dh[s] = g;
            w->anext[s] = dc[s];
            acc[s] += g * dtu;                                  /* dB_t = sum_c dh_t delta_t u_t */
            sB += g * Bs;
            vf r = g * dc[s] * hp[s];                           /* dL/d(delta_t A) */
            sA += r * w->Av[s];
            w->dAv[s] += r * dt;
        }
        st(du + t * a->sdu[2], a->sdu[1], nv, dt * sB + k->Dv * dy);
        vf dd = (uv * sB + sA) * w->dsp[t];
        st(ddelta + t * a->sddelta[2], a->sddelta[1], nv, dd);
        dbv += dd;
        dDv += dy * uv;
    }
    for (int j = 0; j < nv; j++) {
        int64_t c = k->bi * a->d + k->c0 + j;
        for (int64_t s = 0; s < n; s++) a->dA[c * n + s] = w->dAv[s][j];
        if (a->dD) a->dD[c] = dDv[j];
        if (a->dbias) a->dbias[c] = dbv[j];
    }
}

int ss_backward(const void *args, int64_t task0, int64_t task1)
{
    const ss_args *a = args;
    const int64_t n = a->n, l = a->l, G = a->G, S = a->S, dG = a->d / G, nblk = (dG + VL - 1) / VL;
    bwd_scratch w;
    vf *mem = scratch(5 * n + 4 * l * n + 4 * l);
    if (!mem) return 1;
    w.h = mem; w.Av = w.h + n; w.dh = w.Av + n; w.anext = w.dh + n; w.dAv = w.anext + n;
    w.hprev = w.dAv + n; w.decay = w.hprev + l * n; w.dBacc = w.decay + l * n; w.dCacc = w.dBacc + l * n;
    w.dt = w.dCacc + l * n; w.dtu = w.dt + l; w.dy = w.dtu + l; w.dsp = w.dy + l;
    for (int64_t task = task0; task < task1; task++) {
        int64_t bi = task / (G * S), gi = task / S % G, sp = task % S;
        int64_t blk0 = sp * nblk / S, blk1 = (sp + 1) * nblk / S;
        for (int64_t i = 0; i < l * n; i++) w.dBacc[i] = w.dCacc[i] = bc(0.0f);
        for (int64_t blk = blk0; blk < blk1; blk++) {
            int64_t off = blk * VL;
            int nv = (int)(dG - off < VL ? dG - off : VL);
            block k = block_at(a, bi, gi * dG + off, nv, w.Av);
            int64_t o_dout = bi * a->sdout[0] + k.c0 * a->sdout[1];
            float *dz = a->dz ? a->dz + bi * a->sdz[0] + k.c0 * a->sdz[1] : NULL;
            bwd_recompute(a, &k, &w, a->dout + o_dout, dz);
            bwd_adjoint(a, &k, &w, a->du + bi * a->sdu[0] + k.c0 * a->sdu[1],
                        a->ddelta + bi * a->sddelta[0] + k.c0 * a->sddelta[1]);
        }
        for (int64_t t = 0; t < l; t++) {                       /* lanes -> (S, l, b, G, n) partials */
            int64_t row = ((sp * l + t) * a->b + bi) * G + gi;
            for (int64_t s = 0; s < n; s++) {
                a->dB[row * n + s] = hsum(w.dBacc[t * n + s]);
                a->dC[row * n + s] = hsum(w.dCacc[t * n + s]);
            }
        }
    }
    free(mem);
    return 0;
}
