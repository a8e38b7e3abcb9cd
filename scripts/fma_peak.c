/* Measures one core's f32 FMA peak with AVX2 (8 independent accumulator chains of 8-wide
 * fused multiply-adds), for comparing kiln's matmul GFLOP/s with what the core can do.
 *
 *   cc -O2 -mavx2 -mfma scripts/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    const long iters = 200000000L;
    __m256 a = _mm256_set1_ps(1.0000001f), b = _mm256_set1_ps(0.9999999f);
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double t = now();
        for (long i = 0; i < iters / 8; i++) {
            c0 = _mm256_fmadd_ps(a, c0, b); c1 = _mm256_fmadd_ps(a, c1, b);
            c2 = _mm256_fmadd_ps(a, c2, b); c3 = _mm256_fmadd_ps(a, c3, b);
            c4 = _mm256_fmadd_ps(a, c4, b); c5 = _mm256_fmadd_ps(a, c5, b);
            c6 = _mm256_fmadd_ps(a, c6, b); c7 = _mm256_fmadd_ps(a, c7, b);
        }
        double s = now() - t;
        double gflops = (double)iters * 8 /* lanes */ * 2 /* flops per fma */ / s / 1e9;
        if (gflops > best) best = gflops;
    }
    __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                               _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    float out[8];
    _mm256_storeu_ps(out, sum);
    printf("f32 AVX2 FMA peak, one core: %.1f GFLOP/s (checksum %g)\n", best, out[0]);
    return 0;
}
