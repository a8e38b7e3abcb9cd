/* Kernels with kiln's calling convention for the CpuDevice unit tests (runtime/src/device/cpu.rs):
 * buffer base addresses, the symbols' values, and [start, end) of the outermost parallel loop.
 * Compiled by regen.sh into the committed device_pic.o. */

/* out[i] = syms[0] * x[i] + y[i] */
void kiln_axpy(void *const *bufs, const long *syms, long start, long end) {
    const float *x = bufs[0], *y = bufs[1];
    float *out = bufs[2];
    float a = (float)syms[0];
    for (long i = start; i < end; i++)
        out[i] = a * x[i] + y[i];
}

/* hits[i] += 1: shows which iterations ran, and how often. */
void kiln_count(void *const *bufs, const long *syms, long start, long end) {
    int *hits = bufs[0];
    (void)syms;
    for (long i = start; i < end; i++)
        hits[i] += 1;
}
