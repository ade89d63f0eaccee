// Kernels of flux2-ops's CUDA paths (src/cuda/attention.rs, src/cuda/quant.rs), compiled at run time with NVRTC.
// No headers: bf16 and f16 travel as 16-bit integers and are converted here. Every kernel exists for
// f32, f16 and bf16 (suffixes _f32, _f16, _bf16); statistics are f32 whatever the storage type.
typedef unsigned short u16;

__device__ __forceinline__ float load_f32(float x) { return x; }
__device__ __forceinline__ float store_f32(float x) { return x; }
__device__ __forceinline__ float load_bf16(u16 x) { return __uint_as_float(((unsigned int)x) << 16); }
__device__ __forceinline__ u16 store_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u) {  // inf stays inf, NaN stays (quiet) NaN
        return (u16)((u >> 16) | ((u & 0xffffu) ? 0x40u : 0u));
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (u16)(u >> 16);
}
__device__ __forceinline__ float load_f16(u16 x) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x)); return f; }
__device__ __forceinline__ u16 store_f16(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }

// Four consecutive values written as one vector store (the address is 8- or 16-byte aligned: rows hold a
// multiple of 4 values).
__device__ __forceinline__ void store4_f32(float* dst, float a, float b, float c, float d) {
    float4 v; v.x = a; v.y = b; v.z = c; v.w = d;
    *(float4*)dst = v;
}
__device__ __forceinline__ void store4_bf16(u16* dst, float a, float b, float c, float d) {
    uint2 v;
    v.x = (unsigned int)store_bf16(a) | ((unsigned int)store_bf16(b) << 16);
    v.y = (unsigned int)store_bf16(c) | ((unsigned int)store_bf16(d) << 16);
    *(uint2*)dst = v;
}
__device__ __forceinline__ void store4_f16(u16* dst, float a, float b, float c, float d) {
    uint2 v;
    v.x = (unsigned int)store_f16(a) | ((unsigned int)store_f16(b) << 16);
    v.y = (unsigned int)store_f16(c) | ((unsigned int)store_f16(d) << 16);
    *(uint2*)dst = v;
}
__device__ __forceinline__ float max4(float4 v) { return fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w)); }

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// Reductions over a whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ float block_max(float v) {
    __shared__ float buf[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    v = (lane < warps) ? buf[lane] : __int_as_float(0xff800000);
    v = warp_max(v);
    __syncthreads();
    return v;
}
__device__ float block_sum(float v) {
    __shared__ float buf[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    v = (lane < warps) ? buf[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

// Scores per thread kept in registers by softmax_rows: rows of a multiple of 4 and at most ROW_REGS *
// blockDim.x values (8192 keys at 256 threads) are read once, as float4; other rows are read three times.
#define ROW_REGS 32

// One block per score row of a query tile. s: [rows, n] f32 scaled scores (row = bh * qn + i, the tile's
// row i of batch-head bh); writes p = exp(s - lse) in the storage type and lse[bh * lq + qs + i].
#define SOFTMAX_ROWS(SUFFIX, T)                                                                        \
extern "C" __global__ void softmax_rows_##SUFFIX(const float* s, T* p, float* lse, int n, int qn,      \
                                                  int lq, int qs) {                                   \
    long long row = blockIdx.x;                                                                        \
    const float* sr = s + row * n;                                                                     \
    T* pr = p + row * n;                                                                               \
    const float neg_inf = __int_as_float(0xff800000);                                                  \
    float m = neg_inf, l = 0.0f, lse_row;                                                              \
    if ((n & 3) == 0 && n <= ROW_REGS * (int)blockDim.x) {                                             \
        const float4* s4 = (const float4*)sr;                                                          \
        int n4 = n >> 2;                                                                               \
        float4 v[ROW_REGS / 4];                                                                        \
        _Pragma("unroll")                                                                              \
        for (int r = 0; r < ROW_REGS / 4; r++) {                                                       \
            int j = threadIdx.x + r * blockDim.x;                                                      \
            if (j < n4) { v[r] = s4[j]; m = fmaxf(m, max4(v[r])); }                                    \
        }                                                                                              \
        m = block_max(m);                                                                              \
        _Pragma("unroll")                                                                              \
        for (int r = 0; r < ROW_REGS / 4; r++) {                                                       \
            int j = threadIdx.x + r * blockDim.x;                                                      \
            if (j < n4) l += expf(v[r].x - m) + expf(v[r].y - m) + expf(v[r].z - m) + expf(v[r].w - m); \
        }                                                                                              \
        l = block_sum(l);                                                                              \
        lse_row = m + logf(l);                                                                         \
        _Pragma("unroll")                                                                              \
        for (int r = 0; r < ROW_REGS / 4; r++) {                                                       \
            int j = threadIdx.x + r * blockDim.x;                                                      \
            if (j < n4) store4_##SUFFIX(pr + 4 * j, expf(v[r].x - lse_row), expf(v[r].y - lse_row),    \
                                        expf(v[r].z - lse_row), expf(v[r].w - lse_row));             \
        }                                                                                              \
    } else {                                                                                           \
        for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, sr[j]);                         \
        m = block_max(m);                                                                              \
        for (int j = threadIdx.x; j < n; j += blockDim.x) l += expf(sr[j] - m);                        \
        l = block_sum(l);                                                                              \
        lse_row = m + logf(l);                                                                         \
        for (int j = threadIdx.x; j < n; j += blockDim.x) pr[j] = store_##SUFFIX(expf(sr[j] - lse_row)); \
    }                                                                                                  \
    if (threadIdx.x == 0) {                                                                            \
        long long bh = row / qn, i = row % qn;                                                         \
        lse[bh * lq + qs + i] = lse_row;                                                               \
    }                                                                                                  \
}

// One block per score row of a query tile, backward: p = exp(s - lse), ds = p (dp - delta) scale, both
// in the storage type (s and dp f32, same layout as softmax_rows).
#define ATTENTION_DS(SUFFIX, T)                                                                        \
extern "C" __global__ void attention_ds_##SUFFIX(const float* s, const float* dp, const float* lse,    \
                                                  const float* delta, T* p, T* ds, int n, int qn,     \
                                                  int lq, int qs, float scale) {                      \
    long long row = blockIdx.x;                                                                        \
    long long bh = row / qn, i = row % qn;                                                             \
    float lse_row = lse[bh * lq + qs + i];                                                             \
    float delta_row = delta[bh * lq + qs + i];                                                         \
    const float* sr = s + row * n;                                                                     \
    const float* dpr = dp + row * n;                                                                   \
    if ((n & 3) == 0) {                                                                                \
        const float4* s4 = (const float4*)sr;                                                          \
        const float4* dp4 = (const float4*)dpr;                                                        \
        for (int j = threadIdx.x; j < (n >> 2); j += blockDim.x) {                                     \
            float4 a = s4[j], g = dp4[j];                                                              \
            float p0 = expf(a.x - lse_row), p1 = expf(a.y - lse_row);                                  \
            float p2 = expf(a.z - lse_row), p3 = expf(a.w - lse_row);                                  \
            store4_##SUFFIX(p + row * n + 4 * j, p0, p1, p2, p3);                                      \
            store4_##SUFFIX(ds + row * n + 4 * j, p0 * (g.x - delta_row) * scale,                      \
                            p1 * (g.y - delta_row) * scale, p2 * (g.z - delta_row) * scale,            \
                            p3 * (g.w - delta_row) * scale);                                           \
        }                                                                                              \
    } else {                                                                                           \
        for (int j = threadIdx.x; j < n; j += blockDim.x) {                                            \
            float pv = expf(sr[j] - lse_row);                                                          \
            p[row * n + j] = store_##SUFFIX(pv);                                                       \
            ds[row * n + j] = store_##SUFFIX(pv * (dpr[j] - delta_row) * scale);                       \
        }                                                                                              \
    }                                                                                                  \
}

// delta[r] = sum_d dout[r, d] out[r, d] over rows of width d; one warp per row.
#define ATTENTION_DELTA(SUFFIX, T)                                                                     \
extern "C" __global__ void attention_delta_##SUFFIX(const T* dout, const T* out, float* delta,         \
                                                     long long rows, int d) {                         \
    long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);                    \
    if (row >= rows) return;                                                                           \
    int lane = threadIdx.x & 31;                                                                       \
    float acc = 0.0f;                                                                                  \
    for (int j = lane; j < d; j += 32)                                                                 \
        acc += load_##SUFFIX(dout[row * d + j]) * load_##SUFFIX(out[row * d + j]);                     \
    acc = warp_sum(acc);                                                                               \
    if (lane == 0) delta[row] = acc;                                                                   \
}

#define ALL(SUFFIX, T) SOFTMAX_ROWS(SUFFIX, T) ATTENTION_DS(SUFFIX, T) ATTENTION_DELTA(SUFFIX, T)
ALL(f32, float)
ALL(f16, u16)
ALL(bf16, u16)

// ---- Quantized base weights (src/cuda/quant.rs; the host twin is src/quant/quantizer.rs) ----
// Kinds: 0 qfloat8 (quanto), 1 float8 (torchao), 2 qint8 (quanto), 3 int8 (torchao), 4 uintN (torchao uintx).

// x to the nearest float8 e4m3fn code, ties to even, saturating at +-448 (the references clamp first), from
// the bits; NaN gives the NaN code.
__device__ __forceinline__ unsigned int e4m3_code(float x) {
    if (x != x) return 0x7fu;
    unsigned int sign = (__float_as_uint(x) >> 24) & 0x80u;
    float a = fminf(fabsf(x), 448.0f);
    if (a < 0.015625f) return sign | (unsigned int)__float2int_rn(a * 512.0f);  // subnormals: k * 2^-9
    unsigned int b = __float_as_uint(a);
    int e = (int)(b >> 23) - 127;                  // -6 ..= 8
    unsigned int keep = (b & 0x7fffffu) >> 20, rest = b & 0xfffffu;
    if (rest > 0x80000u || (rest == 0x80000u && (keep & 1u))) keep += 1u;
    if (keep == 8u) { keep = 0u; e += 1; }
    return sign | ((unsigned int)(e + 7) << 3) | keep;
}
// The value of an e4m3fn code; the NaN codes read as 0, as the host dequantization does.
__device__ __forceinline__ float e4m3_value(unsigned int c) {
    unsigned int e = (c >> 3) & 15u, m = c & 7u;
    float mag = (c & 0x7fu) == 0x7fu ? 0.0f
              : e == 0u ? (float)m * 0.001953125f
              : __uint_as_float(((e + 120u) << 23) | (m << 20));
    return (c & 0x80u) ? -mag : mag;
}

// One block per (group, row) of w [rows, in]: the group's scale (and zero point), then its codes, with every
// intermediate rounded to the weight's type as PyTorch computes it. Codes are one byte each, or (packed) two
// per byte, low nibble first. scales / zeros: [rows, groups] f32.
#define QUANTIZE_ROWS(SUFFIX, T)                                                                       \
extern "C" __global__ void quantize_rows_##SUFFIX(const T* w, unsigned char* codes, float* scales,     \
                                                   float* zeros, int in, int group, int groups,        \
                                                   int kind, int bits, int packed) {                   \
    int g = blockIdx.x;                                                                                \
    long long row = blockIdx.y;                                                                        \
    int start = g * group, len = min(group, in - start);                                               \
    const T* src = w + row * in + start;                                                               \
    float amax = 0.0f, mx = 0.0f, mn = 0.0f;                                                           \
    for (int i = threadIdx.x; i < len; i += blockDim.x) {                                              \
        float v = load_##SUFFIX(src[i]);                                                               \
        amax = fmaxf(amax, fabsf(v)); mx = fmaxf(mx, v); mn = fminf(mn, v);                            \
    }                                                                                                  \
    amax = block_max(amax); mx = block_max(mx); mn = -block_max(-mn);                                  \
    const float eps = R_##SUFFIX(1.1920929e-07f);                                                      \
    float scale, mul = 0.0f, zero = 0.0f, qmax = (float)((1 << bits) - 1);                             \
    bool divide = false;                                                                               \
    if (kind == 0)      { scale = R_##SUFFIX(amax / 448.0f); divide = true; }                          \
    else if (kind == 1) { scale = fmaxf(R_##SUFFIX(amax / 448.0f), eps); }                             \
    else if (kind == 2) { scale = R_##SUFFIX(amax / 127.0f); divide = true; }                          \
    else if (kind == 3) { scale = fmaxf(R_##SUFFIX(amax / 127.5f), eps); }                             \
    else {                                                                                             \
        scale = fmaxf(R_##SUFFIX(R_##SUFFIX(mx - mn) / qmax), eps);                                    \
        zero = fminf(fmaxf(-rintf(R_##SUFFIX(mn / scale)), 0.0f), qmax);                               \
    }                                                                                                  \
    if (!divide) mul = R_##SUFFIX(1.0f / scale);                                                       \
    if (threadIdx.x == 0) {                                                                            \
        scales[row * groups + g] = scale;                                                              \
        if (kind == 4) zeros[row * groups + g] = zero;                                                 \
    }                                                                                                  \
    int step = packed ? 2 : 1;                                                                         \
    for (int i = threadIdx.x * step; i < len; i += blockDim.x * step) {                                \
        unsigned int c[2];                                                                             \
        for (int j = 0; j < step; ++j) {                                                               \
            float x = load_##SUFFIX(src[i + j]);                                                       \
            float q = divide ? (scale == 0.0f ? 0.0f : R_##SUFFIX(x / scale)) : R_##SUFFIX(x * mul);  \
            /* NaN (0 * inf from a float16 1/eps) gives the NaN code / 0, as the host's casts do */   \
            if (kind <= 1) c[j] = e4m3_code(q);                                                        \
            else if (kind <= 3) c[j] = q != q ? 0u : (unsigned int)(unsigned char)(signed char)(int)    \
                                       fminf(fmaxf(rintf(q), -128.0f), 127.0f);                        \
            else c[j] = (unsigned int)fminf(fmaxf(rintf(q) + zero, 0.0f), qmax);                       \
        }                                                                                              \
        if (packed) codes[(row * in + start + i) / 2] = (unsigned char)(c[0] | (c[1] << 4));           \
        else codes[row * in + start + i] = (unsigned char)c[0];                                        \
    }                                                                                                  \
}

// out[r, i] = (code - zero) * scale of its group, in the weight's type; n = rows * in elements, one per
// thread (grid-stride). scales / zeros: [rows, groups] in the weight's type.
#define DEQUANTIZE(SUFFIX, T)                                                                          \
extern "C" __global__ void dequantize_##SUFFIX(const unsigned char* codes, const T* scales,            \
                                                const T* zeros, T* out, long long n, int in,           \
                                                int group, int groups, int kind, int packed) {         \
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;                    \
         idx += (long long)gridDim.x * blockDim.x) {                                                   \
        long long row = idx / in;                                                                      \
        int col = (int)(idx - row * in);                                                               \
        unsigned int c = packed ? (codes[idx >> 1] >> ((col & 1) * 4)) & 15u : codes[idx];             \
        long long g = row * groups + col / group;                                                      \
        float v = kind <= 1 ? e4m3_value(c) : kind <= 3 ? (float)(signed char)c                        \
                : (float)c - load_##SUFFIX(zeros[g]);                                                  \
        out[idx] = store_##SUFFIX(v * load_##SUFFIX(scales[g]));                                       \
    }                                                                                                  \
}

#define R_f32(x) (x)
#define R_f16(x) load_f16(store_f16(x))
#define R_bf16(x) load_bf16(store_bf16(x))
QUANTIZE_ROWS(f32, float) QUANTIZE_ROWS(f16, u16) QUANTIZE_ROWS(bf16, u16)
DEQUANTIZE(f32, float) DEQUANTIZE(f16, u16) DEQUANTIZE(bf16, u16)

// ---- Fused normalizations (src/cuda/norm.rs; the compositions they reproduce: src/fused_norm.rs) ----

// rope(RMSNorm(x) w) per row of d values, one warp per row: rows = B·H·S, row r rotated by table row
// offset + r % seq. The normalized value is rounded to the storage type before the rotation, as the
// composition's cast does.
#define RMS_ROPE(SUFFIX, T)                                                                            \
extern "C" __global__ void rms_rope_##SUFFIX(const T* x, const T* w, const float* cs, const float* sn, \
                                             T* out, long long rows, int seq, int offset, int d,       \
                                             float eps) {                                              \
    long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);                    \
    if (row >= rows) return;                                                                           \
    int lane = threadIdx.x & 31;                                                                       \
    const T* xr = x + row * d;                                                                         \
    T* orow = out + row * d;                                                                           \
    long long t = (long long)(offset + (int)(row % seq)) * d;                                          \
    float ss = 0.0f;                                                                                   \
    for (int i = lane; i < d; i += 32) { float v = load_##SUFFIX(xr[i]); ss += v * v; }                \
    float rms = sqrtf(warp_sum(ss) / (float)d + eps);                                                  \
    for (int i = 2 * lane; i < d; i += 64) {                                                           \
        float y0 = R_##SUFFIX((load_##SUFFIX(xr[i]) / rms) * load_##SUFFIX(w[i]));                     \
        float y1 = R_##SUFFIX((load_##SUFFIX(xr[i + 1]) / rms) * load_##SUFFIX(w[i + 1]));             \
        orow[i] = store_##SUFFIX(y0 * cs[t + i] - y1 * sn[t + i]);                                     \
        orow[i + 1] = store_##SUFFIX(y1 * cs[t + i + 1] + y0 * sn[t + i + 1]);                         \
    }                                                                                                  \
}                                                                                                      \
/* dx of the above: dy = Rᵀ g (the inverse rotation), dx = w dy / rms - x <x, w dy> / (d rms³). */    \
extern "C" __global__ void rms_rope_backward_##SUFFIX(const T* x, const T* w, const float* cs,        \
                                                      const float* sn, const T* g, T* dx,              \
                                                      long long rows, int seq, int offset, int d,      \
                                                      float eps) {                                     \
    long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);                    \
    if (row >= rows) return;                                                                           \
    int lane = threadIdx.x & 31;                                                                       \
    const T* xr = x + row * d;                                                                         \
    const T* gr = g + row * d;                                                                         \
    T* dr = dx + row * d;                                                                              \
    long long t = (long long)(offset + (int)(row % seq)) * d;                                          \
    float ss = 0.0f, dot = 0.0f;                                                                       \
    for (int i = 2 * lane; i < d; i += 64) {                                                           \
        float x0 = load_##SUFFIX(xr[i]), x1 = load_##SUFFIX(xr[i + 1]);                                \
        float g0 = load_##SUFFIX(gr[i]), g1 = load_##SUFFIX(gr[i + 1]);                                \
        float dy0 = g0 * cs[t + i] + g1 * sn[t + i + 1], dy1 = g1 * cs[t + i + 1] - g0 * sn[t + i];    \
        ss += x0 * x0 + x1 * x1;                                                                       \
        dot += x0 * load_##SUFFIX(w[i]) * dy0 + x1 * load_##SUFFIX(w[i + 1]) * dy1;                    \
    }                                                                                                  \
    float rms = sqrtf(warp_sum(ss) / (float)d + eps);                                                  \
    float k = warp_sum(dot) / ((float)d * rms * rms * rms);                                            \
    for (int i = 2 * lane; i < d; i += 64) {                                                           \
        float x0 = load_##SUFFIX(xr[i]), x1 = load_##SUFFIX(xr[i + 1]);                                \
        float g0 = load_##SUFFIX(gr[i]), g1 = load_##SUFFIX(gr[i + 1]);                                \
        float dy0 = g0 * cs[t + i] + g1 * sn[t + i + 1], dy1 = g1 * cs[t + i + 1] - g0 * sn[t + i];    \
        dr[i] = store_##SUFFIX(load_##SUFFIX(w[i]) * dy0 / rms - x0 * k);                              \
        dr[i + 1] = store_##SUFFIX(load_##SUFFIX(w[i + 1]) * dy1 / rms - x1 * k);                      \
    }                                                                                                  \
}

// (1 + scale) LayerNorm(x) + shift, one block per row of x [B·S, d]; shift/scale [B, d]. Roundings as the
// composition: LayerNorm output, 1 + scale, the product, the sum, each to the storage type.
#define MOD_LAYER_NORM(SUFFIX, T)                                                                      \
__device__ __forceinline__ void row_stats_##SUFFIX(const T* xr, int d, float eps, float* mean,          \
                                                   float* sigma) {                                     \
    float sum = 0.0f;                                                                                  \
    for (int i = threadIdx.x; i < d; i += blockDim.x) sum += load_##SUFFIX(xr[i]);                     \
    float m = block_sum(sum) / (float)d, sq = 0.0f;                                                    \
    for (int i = threadIdx.x; i < d; i += blockDim.x) { float c = load_##SUFFIX(xr[i]) - m; sq += c * c; } \
    *mean = m;                                                                                         \
    *sigma = sqrtf(block_sum(sq) / (float)d + eps);                                                    \
}                                                                                                      \
extern "C" __global__ void modulated_layer_norm_##SUFFIX(const T* x, const T* shift, const T* scale,  \
                                                         T* out, int seq, int d, float eps) {          \
    long long row = blockIdx.x, b = row / seq;                                                         \
    const T* xr = x + row * d;                                                                         \
    float mean, sigma;                                                                                 \
    row_stats_##SUFFIX(xr, d, eps, &mean, &sigma);                                                     \
    for (int i = threadIdx.x; i < d; i += blockDim.x) {                                                \
        float xh = R_##SUFFIX((load_##SUFFIX(xr[i]) - mean) / sigma);                                  \
        float s1 = R_##SUFFIX(load_##SUFFIX(scale[b * d + i]) + 1.0f);                                 \
        out[row * d + i] = store_##SUFFIX(R_##SUFFIX(xh * s1) + load_##SUFFIX(shift[b * d + i]));      \
    }                                                                                                  \
}                                                                                                      \
/* dx = (dxh - mean(dxh) - xh mean(dxh xh)) / sigma with dxh = g (1 + scale). */                        \
extern "C" __global__ void modulated_layer_norm_backward_##SUFFIX(const T* x, const T* scale,         \
                                                                  const T* g, T* dx, int seq, int d,   \
                                                                  float eps) {                         \
    long long row = blockIdx.x, b = row / seq;                                                         \
    const T* xr = x + row * d;                                                                         \
    const T* gr = g + row * d;                                                                         \
    float mean, sigma;                                                                                 \
    row_stats_##SUFFIX(xr, d, eps, &mean, &sigma);                                                     \
    float m1 = 0.0f, m2 = 0.0f;                                                                        \
    for (int i = threadIdx.x; i < d; i += blockDim.x) {                                                \
        float xh = (load_##SUFFIX(xr[i]) - mean) / sigma;                                              \
        float dxh = load_##SUFFIX(gr[i]) * R_##SUFFIX(load_##SUFFIX(scale[b * d + i]) + 1.0f);         \
        m1 += dxh; m2 += dxh * xh;                                                                     \
    }                                                                                                  \
    m1 = block_sum(m1) / (float)d;                                                                     \
    m2 = block_sum(m2) / (float)d;                                                                     \
    for (int i = threadIdx.x; i < d; i += blockDim.x) {                                                \
        float xh = (load_##SUFFIX(xr[i]) - mean) / sigma;                                              \
        float dxh = load_##SUFFIX(gr[i]) * R_##SUFFIX(load_##SUFFIX(scale[b * d + i]) + 1.0f);         \
        dx[row * d + i] = store_##SUFFIX((dxh - m1 - xh * m2) / sigma);                                \
    }                                                                                                  \
}

RMS_ROPE(f32, float) RMS_ROPE(f16, u16) RMS_ROPE(bf16, u16)
MOD_LAYER_NORM(f32, float) MOD_LAYER_NORM(f16, u16) MOD_LAYER_NORM(bf16, u16)

// ---- Fused gates (src/cuda/gates.rs; the host twin: src/fused_gates/host.rs) ----

// silu(t[r, start + i]) * t[r, start + n + i] over rows of `width`, out [rows, n]; silu rounded to the storage
// type before the product, as the composition does. Grid-stride over rows * n.
#define SWIGLU(SUFFIX, T)                                                                              \
extern "C" __global__ void swiglu_##SUFFIX(const T* t, T* out, long long rows, int width, int start,   \
                                           int n) {                                                    \
    long long total = rows * n;                                                                        \
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;                \
         idx += (long long)gridDim.x * blockDim.x) {                                                   \
        long long r = idx / n;                                                                         \
        int i = (int)(idx - r * n);                                                                    \
        float g = load_##SUFFIX(t[r * width + start + i]), u = load_##SUFFIX(t[r * width + start + n + i]); \
        out[idx] = store_##SUFFIX(R_##SUFFIX(g * (1.0f / (1.0f + expf(-g)))) * u);                     \
    }                                                                                                  \
}                                                                                                      \
/* dt [rows, width]: g u silu'(gate) on the gate range, g silu(gate) on the up range, zero elsewhere. */ \
extern "C" __global__ void swiglu_backward_##SUFFIX(const T* t, const T* grad, T* dt, long long rows,  \
                                                    int width, int start, int n) {                     \
    long long total = rows * width;                                                                    \
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;                \
         idx += (long long)gridDim.x * blockDim.x) {                                                   \
        long long r = idx / width;                                                                     \
        int c = (int)(idx - r * width), i = c - start;                                                 \
        float v = 0.0f;                                                                                \
        if (i >= 0 && i < 2 * n) {                                                                     \
            int j = i < n ? i : i - n;                                                                 \
            float gate = load_##SUFFIX(t[r * width + start + j]), s = 1.0f / (1.0f + expf(-gate));     \
            float g = load_##SUFFIX(grad[r * n + j]);                                                  \
            v = i < n ? g * load_##SUFFIX(t[r * width + start + n + j]) * s * (1.0f + gate * (1.0f - s)) \
                      : g * gate * s;                                                                  \
        }                                                                                              \
        dt[idx] = store_##SUFFIX(v);                                                                   \
    }                                                                                                  \
}

// x + gate * y (has_x) or gate * y, x and y [B·S, d], gate [B, d]; the product rounded before the sum.
#define GATED_RESIDUAL(SUFFIX, T)                                                                      \
extern "C" __global__ void gated_residual_##SUFFIX(const T* x, const T* gate, const T* y, T* out,     \
                                                   long long total, int seq, int d, int has_x) {       \
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;                \
         idx += (long long)gridDim.x * blockDim.x) {                                                   \
        long long r = idx / d;                                                                         \
        int c = (int)(idx - r * d);                                                                    \
        float v = load_##SUFFIX(gate[(r / seq) * d + c]) * load_##SUFFIX(y[idx]);                      \
        out[idx] = store_##SUFFIX(has_x ? load_##SUFFIX(x[idx]) + R_##SUFFIX(v) : v);                  \
    }                                                                                                  \
}

SWIGLU(f32, float) SWIGLU(f16, u16) SWIGLU(bf16, u16)
GATED_RESIDUAL(f32, float) GATED_RESIDUAL(f16, u16) GATED_RESIDUAL(bf16, u16)
