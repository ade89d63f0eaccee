// One-kernel attention (src/cuda/flash.rs): the FlashAttention-2 algorithm for head dim 128 in bf16 or f16 with
// f32 accumulation, on the tensor cores through `mma.sync` (sm_80 and later), compiled at run time with NVRTC.
//
// Layouts: q, k, v, out, their gradients [bh, len, 128] contiguous; lse and delta [bh, lq] f32 (lse in natural
// units of the scaled scores, delta = rowsum(dO * O)). Every kernel runs 4 warps; a warp owns 16 rows (queries
// in the forward and the dQ kernel, keys in the dK/dV kernel) and keeps their accumulators in registers.
// Tiles of the other operand go through shared memory (cp.async), rows padded to 136 elements so that the
// ldmatrix row addresses of a phase fall on distinct banks.
//
// Fragment layouts of mma.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"), g = lane / 4, c = lane % 4:
// A (16x16): reg0 (row g, k 2c..2c+1), reg1 (row g+8, same k), reg2 (row g, k 2c+8..), reg3 (row g+8, k 2c+8..);
// B (16x8): reg0 (k 2c..2c+1, col g), reg1 (k 2c+8.., col g); C (16x8 f32): c0,c1 (row g, cols 2c, 2c+1),
// c2,c3 (row g+8). Two C tiles side by side are, packed to 16 bits, the A fragment of the next product: that
// is how probabilities go from one product into the next without leaving registers.
typedef unsigned short u16;
typedef unsigned int u32;

#define HD 128
#define SROW 136
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f
#define NEG_INF __int_as_float(0xff800000)
#define POS_INF __int_as_float(0x7f800000)

__device__ __forceinline__ u32 smem(const void* p) { return (u32)__cvta_generic_to_shared(p); }

// 16 bytes global -> shared without passing through registers; zeros when `valid` is false.
__device__ __forceinline__ void cp16(u16* dst, const u16* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem(dst)), "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// Rows [row0, row0 + rows) of a [len, HD] matrix into a [rows, SROW] tile; rows at or past `len` read as zeros.
__device__ __forceinline__ void load_tile(u16* dst, const u16* src, int row0, int rows, int len) {
    for (int i = threadIdx.x; i < rows * (HD / 8); i += blockDim.x) {
        int r = i / (HD / 8), col = (i % (HD / 8)) * 8, row = row0 + r;
        bool ok = row < len;
        cp16(dst + r * SROW + col, src + (long long)(ok ? row : 0) * HD + col, ok);
    }
}

__device__ __forceinline__ void ldsm(u32 r[4], const u16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem(p)) : "memory");
}
__device__ __forceinline__ void ldsm_t(u32 r[4], const u16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem(p)) : "memory");
}
// The A fragment of rows m0.. and columns k0.. of a tile (rows = the product's rows).
__device__ __forceinline__ void frag_a(u32 a[4], const u16* tile, int m0, int k0) {
    int lane = threadIdx.x & 31, mi = lane >> 3, r = lane & 7;
    ldsm(a, tile + (m0 + r + (mi & 1) * 8) * SROW + k0 + (mi >> 1) * 8);
}
// B fragments of the column tiles n0 and n0 + 8 (b[0..1] and b[2..3]) at k-step k0, from a tile whose rows are
// the product's columns (B = tileᵀ: K for Q Kᵀ).
__device__ __forceinline__ void frag_b(u32 b[4], const u16* tile, int n0, int k0) {
    int lane = threadIdx.x & 31, mi = lane >> 3, r = lane & 7;
    ldsm(b, tile + (n0 + r + (mi >> 1) * 8) * SROW + k0 + (mi & 1) * 8);
}
// The same from a tile whose rows are the k dimension (B = tile: V for P V).
__device__ __forceinline__ void frag_bt(u32 b[4], const u16* tile, int n0, int k0) {
    int lane = threadIdx.x & 31, mi = lane >> 3, r = lane & 7;
    ldsm_t(b, tile + (k0 + r + (mi & 1) * 8) * SROW + n0 + (mi >> 1) * 8);
}

__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// The A fragment of k-step t from C tiles 2t and 2t+1 (see the top of the file).
#define C_TO_A(PACK, a, c, t)                                                                          \
    a[0] = PACK(c[2 * (t)][0], c[2 * (t)][1]); a[1] = PACK(c[2 * (t)][2], c[2 * (t)][3]);              \
    a[2] = PACK(c[2 * (t) + 1][0], c[2 * (t) + 1][1]); a[3] = PACK(c[2 * (t) + 1][2], c[2 * (t) + 1][3]);

// Row `row` of a warp's C tiles (0: row g, 1: row g + 8) as 32-bit stores of two values.
#define STORE_ROWS(PACK, dst, acc, r0, len, mul0, mul1)                                                \
    {                                                                                                  \
        int c2 = 2 * (threadIdx.x & 3);                                                                \
        for (int n = 0; n < HD / 8; ++n) {                                                             \
            if ((r0) < (len))                                                                          \
                *(u32*)&dst[(long long)(r0) * HD + n * 8 + c2] = PACK(acc[n][0] * (mul0), acc[n][1] * (mul0)); \
            if ((r0) + 8 < (len))                                                                      \
                *(u32*)&dst[(long long)((r0) + 8) * HD + n * 8 + c2] = PACK(acc[n][2] * (mul1), acc[n][3] * (mul1)); \
        }                                                                                              \
    }

#define FLASH(SUFFIX, MMA_TYPE, CVT)                                                                   \
__device__ __forceinline__ u32 pack_##SUFFIX(float lo, float hi) {                                     \
    u32 r;                                                                                             \
    asm("cvt.rn." CVT ".f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));                                \
    return r;                                                                                          \
}                                                                                                      \
__device__ __forceinline__ void mma_##SUFFIX(float c[4], const u32 a[4], u32 b0, u32 b1) {            \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." MMA_TYPE "." MMA_TYPE ".f32 "                \
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                               \
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                      \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));                      \
}                                                                                                      \
/* c[0..n) += A(16 x 16 k-steps of a) x B from frag_b of `tile` (columns 8 * n) over the head dim. */  \
__device__ __forceinline__ void rows_by_tile_##SUFFIX(float (*c)[4], int n, const u32 (*a)[4],          \
                                                      const u16* tile) {                               \
    for (int kk = 0; kk < HD / 16; ++kk)                                                               \
        for (int j = 0; j < n; j += 2) {                                                               \
            u32 b[4];                                                                                  \
            frag_b(b, tile, j * 8, kk * 16);                                                           \
            mma_##SUFFIX(c[j], a[kk], b[0], b[1]);                                                     \
            mma_##SUFFIX(c[j + 1], a[kk], b[2], b[3]);                                                 \
        }                                                                                              \
}                                                                                                      \
/* acc[HD/8] += P (C tiles p[0..2 * steps)) x tile (rows = the k dimension, HD columns). */            \
__device__ __forceinline__ void probs_by_tile_##SUFFIX(float (*acc)[4], float (*p)[4], int steps,      \
                                                       const u16* tile) {                              \
    for (int t = 0; t < steps; ++t) {                                                                  \
        u32 a[4];                                                                                      \
        C_TO_A(pack_##SUFFIX, a, p, t)                                                                 \
        for (int n = 0; n < HD / 8; n += 2) {                                                          \
            u32 b[4];                                                                                  \
            frag_bt(b, tile, n * 8, t * 16);                                                           \
            mma_##SUFFIX(acc[n], a, b[0], b[1]);                                                       \
            mma_##SUFFIX(acc[n + 1], a, b[2], b[3]);                                                   \
        }                                                                                              \
    }                                                                                                  \
}                                                                                                      \
/* Forward: grid (ceil(lq / 64), bh). out = softmax(scale q kᵀ) v, lse per query row. */               \
extern "C" __global__ void __launch_bounds__(128) flash_forward_##SUFFIX(                             \
        const u16* q, const u16* k, const u16* v, u16* out, float* lse, int lq, int lk, float scale) { \
    __shared__ __align__(16) u16 ks[64 * SROW];                                                        \
    __shared__ __align__(16) u16 vs[64 * SROW];                                                        \
    long long bh = blockIdx.y;                                                                         \
    q += bh * lq * HD; out += bh * lq * HD; k += bh * lk * HD; v += bh * lk * HD; lse += bh * lq;      \
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c2 = 2 * (lane & 3);                         \
    int q0 = blockIdx.x * 64, r0 = q0 + warp * 16 + (lane >> 2);                                       \
    u32 qa[HD / 16][4];                                                                                \
    load_tile(ks, q, q0, 64, lq);                                                                      \
    cp_wait();                                                                                         \
    __syncthreads();                                                                                   \
    for (int kk = 0; kk < HD / 16; ++kk) frag_a(qa[kk], ks, warp * 16, kk * 16);                       \
    float acc[HD / 8][4];                                                                              \
    for (int n = 0; n < HD / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;             \
    float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.0f, l1 = 0.0f, sl2 = scale * LOG2E;                       \
    for (int k0 = 0; k0 < lk; k0 += 64) {                                                              \
        __syncthreads();                                                                               \
        load_tile(ks, k, k0, 64, lk);                                                                  \
        load_tile(vs, v, k0, 64, lk);                                                                  \
        cp_wait();                                                                                     \
        __syncthreads();                                                                               \
        float s[8][4];                                                                                 \
        for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;                      \
        rows_by_tile_##SUFFIX(s, 8, qa, ks);                                                           \
        float x0 = NEG_INF, x1 = NEG_INF;                                                              \
        for (int j = 0; j < 8; ++j)                                                                    \
            for (int e = 0; e < 4; ++e) {                                                              \
                float x = k0 + j * 8 + c2 + (e & 1) < lk ? s[j][e] * sl2 : NEG_INF;                    \
                s[j][e] = x;                                                                           \
                if (e < 2) x0 = fmaxf(x0, x); else x1 = fmaxf(x1, x);                                  \
            }                                                                                          \
        x0 = fmaxf(m0, quad_max(x0));                                                                  \
        x1 = fmaxf(m1, quad_max(x1));                                                                  \
        float a0 = ex2(m0 - x0), a1 = ex2(m1 - x1);                                                    \
        m0 = x0; m1 = x1; l0 *= a0; l1 *= a1;                                                          \
        for (int n = 0; n < HD / 8; ++n) { acc[n][0] *= a0; acc[n][1] *= a0; acc[n][2] *= a1; acc[n][3] *= a1; } \
        for (int j = 0; j < 8; ++j) {                                                                  \
            s[j][0] = ex2(s[j][0] - m0); s[j][1] = ex2(s[j][1] - m0);                                  \
            s[j][2] = ex2(s[j][2] - m1); s[j][3] = ex2(s[j][3] - m1);                                  \
            l0 += s[j][0] + s[j][1]; l1 += s[j][2] + s[j][3];                                          \
        }                                                                                              \
        probs_by_tile_##SUFFIX(acc, s, 4, vs);                                                         \
    }                                                                                                  \
    l0 = quad_sum(l0); l1 = quad_sum(l1);                                                              \
    STORE_ROWS(pack_##SUFFIX, out, acc, r0, lq, 1.0f / l0, 1.0f / l1)                                  \
    if ((lane & 3) == 0) {                                                                             \
        if (r0 < lq) lse[r0] = (m0 + __log2f(l0)) * LN2;                                               \
        if (r0 + 8 < lq) lse[r0 + 8] = (m1 + __log2f(l1)) * LN2;                                       \
    }                                                                                                  \
}                                                                                                      \
/* dQ: grid (ceil(lq / 64), bh). dq = scale Σ_keys dS k with dS = P (dO vᵀ - delta). Key tiles of 32. */ \
extern "C" __global__ void __launch_bounds__(128) flash_dq_##SUFFIX(                                  \
        const u16* q, const u16* k, const u16* v, const u16* dout, const float* lse,                   \
        const float* delta, u16* dq, int lq, int lk, float scale) {                                    \
    __shared__ __align__(16) u16 buf[128 * SROW];                                                      \
    u16 *ks = buf, *vs = buf + 32 * SROW;                                                              \
    long long bh = blockIdx.y;                                                                         \
    q += bh * lq * HD; dout += bh * lq * HD; dq += bh * lq * HD; k += bh * lk * HD; v += bh * lk * HD; \
    lse += bh * lq; delta += bh * lq;                                                                  \
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c2 = 2 * (lane & 3);                         \
    int q0 = blockIdx.x * 64, r0 = q0 + warp * 16 + (lane >> 2);                                       \
    u32 qa[HD / 16][4], da[HD / 16][4];                                                                \
    load_tile(buf, q, q0, 64, lq);                                                                     \
    load_tile(buf + 64 * SROW, dout, q0, 64, lq);                                                      \
    cp_wait();                                                                                         \
    __syncthreads();                                                                                   \
    for (int kk = 0; kk < HD / 16; ++kk) {                                                             \
        frag_a(qa[kk], buf, warp * 16, kk * 16);                                                       \
        frag_a(da[kk], buf + 64 * SROW, warp * 16, kk * 16);                                           \
    }                                                                                                  \
    float ls0 = r0 < lq ? lse[r0] * LOG2E : 0.0f, ls1 = r0 + 8 < lq ? lse[r0 + 8] * LOG2E : 0.0f;      \
    float d0 = r0 < lq ? delta[r0] : 0.0f, d1 = r0 + 8 < lq ? delta[r0 + 8] : 0.0f;                    \
    float acc[HD / 8][4];                                                                              \
    for (int n = 0; n < HD / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;             \
    float sl2 = scale * LOG2E;                                                                         \
    for (int k0 = 0; k0 < lk; k0 += 32) {                                                              \
        __syncthreads();                                                                               \
        load_tile(ks, k, k0, 32, lk);                                                                  \
        load_tile(vs, v, k0, 32, lk);                                                                  \
        cp_wait();                                                                                     \
        __syncthreads();                                                                               \
        float s[4][4], dp[4][4];                                                                       \
        for (int j = 0; j < 4; ++j)                                                                    \
            for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.0f;                                     \
        rows_by_tile_##SUFFIX(s, 4, qa, ks);                                                           \
        rows_by_tile_##SUFFIX(dp, 4, da, vs);                                                          \
        for (int j = 0; j < 4; ++j)                                                                    \
            for (int e = 0; e < 4; ++e) {                                                              \
                bool ok = k0 + j * 8 + c2 + (e & 1) < lk;                                              \
                float p = ok ? ex2(s[j][e] * sl2 - (e < 2 ? ls0 : ls1)) : 0.0f;                        \
                s[j][e] = p * (dp[j][e] - (e < 2 ? d0 : d1));                                          \
            }                                                                                          \
        probs_by_tile_##SUFFIX(acc, s, 2, ks);                                                         \
    }                                                                                                  \
    STORE_ROWS(pack_##SUFFIX, dq, acc, r0, lq, scale, scale)                                           \
}                                                                                                      \
/* dK, dV: grid (ceil(lk / 64), bh); a warp owns 16 keys. With Sᵀ = k qᵀ per query tile of 32:         \
   dv += Pᵀ dO, dSᵀ = Pᵀ (v dOᵀ - delta), dk += scale dSᵀ q. */                                        \
extern "C" __global__ void __launch_bounds__(128) flash_dkdv_##SUFFIX(                                \
        const u16* q, const u16* k, const u16* v, const u16* dout, const float* lse,                   \
        const float* delta, u16* dk, u16* dv, int lq, int lk, float scale) {                           \
    __shared__ __align__(16) u16 vsh[64 * SROW];                                                       \
    __shared__ __align__(16) u16 buf[64 * SROW];                                                       \
    __shared__ float lse_s[32], delta_s[32];                                                           \
    u16 *qs = buf, *dos = buf + 32 * SROW;                                                             \
    long long bh = blockIdx.y;                                                                         \
    q += bh * lq * HD; dout += bh * lq * HD; k += bh * lk * HD; v += bh * lk * HD;                     \
    dk += bh * lk * HD; dv += bh * lk * HD; lse += bh * lq; delta += bh * lq;                          \
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c2 = 2 * (lane & 3);                         \
    int key0 = blockIdx.x * 64, r0 = key0 + warp * 16 + (lane >> 2);                                   \
    u32 ka[HD / 16][4];                                                                                \
    load_tile(buf, k, key0, 64, lk);                                                                   \
    load_tile(vsh, v, key0, 64, lk);                                                                   \
    cp_wait();                                                                                         \
    __syncthreads();                                                                                   \
    for (int kk = 0; kk < HD / 16; ++kk) frag_a(ka[kk], buf, warp * 16, kk * 16);                      \
    float dka[HD / 8][4], dva[HD / 8][4];                                                              \
    for (int n = 0; n < HD / 8; ++n)                                                                   \
        for (int e = 0; e < 4; ++e) dka[n][e] = dva[n][e] = 0.0f;                                      \
    float sl2 = scale * LOG2E;                                                                         \
    for (int t0 = 0; t0 < lq; t0 += 32) {                                                              \
        __syncthreads();                                                                               \
        load_tile(qs, q, t0, 32, lq);                                                                  \
        load_tile(dos, dout, t0, 32, lq);                                                              \
        if (threadIdx.x < 32) {                                                                        \
            int row = t0 + threadIdx.x;                                                                \
            lse_s[threadIdx.x] = row < lq ? lse[row] * LOG2E : POS_INF;                                \
            delta_s[threadIdx.x] = row < lq ? delta[row] : 0.0f;                                       \
        }                                                                                              \
        cp_wait();                                                                                     \
        __syncthreads();                                                                               \
        float st[4][4], dpt[4][4];                                                                     \
        for (int j = 0; j < 4; ++j)                                                                    \
            for (int e = 0; e < 4; ++e) st[j][e] = dpt[j][e] = 0.0f;                                   \
        rows_by_tile_##SUFFIX(st, 4, ka, qs);                                                          \
        for (int j = 0; j < 4; ++j)                                                                    \
            for (int e = 0; e < 4; ++e) st[j][e] = ex2(st[j][e] * sl2 - lse_s[j * 8 + c2 + (e & 1)]);  \
        probs_by_tile_##SUFFIX(dva, st, 2, dos);                                                       \
        for (int kk = 0; kk < HD / 16; ++kk) {                                                         \
            u32 va[4];                                                                                 \
            frag_a(va, vsh, warp * 16, kk * 16);                                                       \
            for (int j = 0; j < 4; j += 2) {                                                           \
                u32 b[4];                                                                              \
                frag_b(b, dos, j * 8, kk * 16);                                                        \
                mma_##SUFFIX(dpt[j], va, b[0], b[1]);                                                  \
                mma_##SUFFIX(dpt[j + 1], va, b[2], b[3]);                                              \
            }                                                                                          \
        }                                                                                              \
        for (int j = 0; j < 4; ++j)                                                                    \
            for (int e = 0; e < 4; ++e) st[j][e] *= dpt[j][e] - delta_s[j * 8 + c2 + (e & 1)];        \
        probs_by_tile_##SUFFIX(dka, st, 2, qs);                                                        \
    }                                                                                                  \
    STORE_ROWS(pack_##SUFFIX, dk, dka, r0, lk, scale, scale)                                           \
    STORE_ROWS(pack_##SUFFIX, dv, dva, r0, lk, 1.0f, 1.0f)                                             \
}

FLASH(bf16, "bf16", "bf16x2")
FLASH(f16, "f16", "f16x2")
