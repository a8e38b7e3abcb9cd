/* Test kernels for runtime::loader (runtime/tests/loader.rs). Compiled by regen.sh into the
 * committed kernels_*.o objects so that the tests need no C compiler. */

/* Provided by the test program at load time through the `externs` resolver. */
extern float kiln_test_extern(float x);

/* out[i] = a[i] + b[i] for i in [start, end). */
void kiln_add(const float *a, const float *b, float *out, long start, long end) {
    for (long i = start; i < end; i++)
        out[i] = a[i] + b[i];
}

/* Calls the extern twice: kiln_test_extern(x) + kiln_test_extern(x + 1). */
float kiln_call_extern(float x) {
    return kiln_test_extern(x) + kiln_test_extern(x + 1.0f);
}

/* Reads a table in .rodata. */
static const float table[8] = {1.5f, 2.5f, 4.0f, 8.0f, 16.0f, 32.0f, 64.0f, 128.0f};

float kiln_table(long i) {
    return table[i & 7];
}

/* A mutable global in .data and one in .bss. */
static float counter = 10.0f;
static long calls;

float kiln_bump(float by) {
    calls++;
    counter += by;
    return counter;
}

long kiln_calls(void) {
    return calls;
}

/* A global (so, under -fpic, preemptible) variable: -fpic code reaches it through the GOT. */
float kiln_scale = 3.0f;

float kiln_scaled(float x) {
    return x * kiln_scale;
}

/* Calls another global function of this object (under -fpic, a PLT32 call to a defined symbol). */
float kiln_table_sum(void) {
    return kiln_table(1) + kiln_table(2);
}
