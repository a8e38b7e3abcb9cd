/*
 * run_model.c: load a compiled kiln model from C, print its signature, run it on
 * deterministic inputs and print its outputs.
 *
 *   cargo build --release -p kiln-capi
 *   cc -std=c99 -Wall -Icapi/include examples/c/run_model.c -Ltarget/release -lkiln \
 *      -Wl,-rpath,$PWD/target/release -o run_model
 *   ./run_model model.kiln [THREADS]
 *
 * (or link target/release/libkiln.a statically, adding -lpthread -ldl -lm).
 *
 * Inputs are deterministic so that the printout can be checked (capi/tests/c_example.rs
 * compares it with the Rust runtime): element j of input i is
 *     floats:   ((31*j + 17*i) % 23 - 11) / 8   (exact in every float type)
 *     integers: (31*j + 17*i) % 10
 *     bool:     (j + i) % 2
 * and a symbolic dim takes the smallest size >= 2 in its range (inputs must have dims that are
 * a plain symbol or a constant). For each output it prints the shape, the FNV-1a hash of its
 * bytes, the sum of its elements (in index order, as double) and its first values.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

#define MAX_RANK 16

/* Prints the last error and exits when a kiln call fails. */
static void check(kiln_status status, const char *what) {
    if (status != KILN_OK) {
        fprintf(stderr, "error: %s failed (status %d): %s\n", what, (int)status, kiln_last_error());
        exit(1);
    }
}

static uint16_t f32_to_f16_exact(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
    if ((b & 0x7fffffff) == 0) return sign;
    int exp = (int)((b >> 23) & 0xff) - 127 + 15; /* normal values only: kiln's inputs are */
    return (uint16_t)(sign | (exp << 10) | ((b >> 13) & 0x3ff));
}

static double f16_to_double(uint16_t h) {
    int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    double v = exp == 0    ? man / 1024.0 / 16384.0
               : exp == 31 ? (man ? NAN : INFINITY)
                           : (1.0 + man / 1024.0) * (double)(1 << exp) / 32768.0;
    return (h & 0x8000) ? -v : v;
}

static double bf16_to_double(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* Writes element j of input i. */
static void fill(kiln_dtype dtype, void *data, size_t j, size_t i) {
    long k = (long)((31 * j + 17 * i) % 23) - 11;
    double v = k / 8.0;
    long n = (long)((31 * j + 17 * i) % 10);
    float f = (float)v;
    uint16_t h;
    switch (dtype) {
    case KILN_DTYPE_F32: ((float *)data)[j] = f; break;
    case KILN_DTYPE_F64: ((double *)data)[j] = v; break;
    case KILN_DTYPE_F16: ((uint16_t *)data)[j] = f32_to_f16_exact(f); break;
    case KILN_DTYPE_BF16: memcpy(&h, (char *)&f + 2, 2); ((uint16_t *)data)[j] = h; break;
    case KILN_DTYPE_I64: ((int64_t *)data)[j] = n; break;
    case KILN_DTYPE_I32: ((int32_t *)data)[j] = (int32_t)n; break;
    case KILN_DTYPE_I16: ((int16_t *)data)[j] = (int16_t)n; break;
    case KILN_DTYPE_I8: ((int8_t *)data)[j] = (int8_t)n; break;
    case KILN_DTYPE_U8: ((uint8_t *)data)[j] = (uint8_t)n; break;
    case KILN_DTYPE_BOOL: ((uint8_t *)data)[j] = (uint8_t)((j + i) % 2); break;
    }
}

/* Element j of an output, as a double. */
static double value(kiln_dtype dtype, const void *data, size_t j) {
    switch (dtype) {
    case KILN_DTYPE_F32: return ((const float *)data)[j];
    case KILN_DTYPE_F64: return ((const double *)data)[j];
    case KILN_DTYPE_F16: return f16_to_double(((const uint16_t *)data)[j]);
    case KILN_DTYPE_BF16: return bf16_to_double(((const uint16_t *)data)[j]);
    case KILN_DTYPE_I64: return (double)((const int64_t *)data)[j];
    case KILN_DTYPE_I32: return ((const int32_t *)data)[j];
    case KILN_DTYPE_I16: return ((const int16_t *)data)[j];
    case KILN_DTYPE_I8: return ((const int8_t *)data)[j];
    default: return ((const uint8_t *)data)[j]; /* u8, bool */
    }
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Prints `name: dtype[d0, d1, ...]` with symbolic dims by name. */
static void print_signature_entry(const kiln_model *m, int output, size_t index) {
    kiln_tensor_info info;
    check(output ? kiln_model_output(m, index, &info) : kiln_model_input(m, index, &info), "describing a tensor");
    printf("  %s %zu %s: %s[", output ? "output" : "input ", index, info.name, kiln_dtype_name(info.dtype));
    for (size_t d = 0; d < info.rank; d++) {
        kiln_dim dim;
        check(output ? kiln_model_output_dim(m, index, d, &dim) : kiln_model_input_dim(m, index, d, &dim), "describing a dim");
        printf("%s%s", d ? ", " : "", dim.expr);
        if (dim.size < 0 && dim.min < 0) printf(" (range unknown)");
        else if (dim.size < 0 && dim.max < 0) printf(" in [%" PRId64 ", inf]", dim.min);
        else if (dim.size < 0) printf(" in [%" PRId64 ", %" PRId64 "]", dim.min, dim.max);
    }
    printf("]\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s MODEL.kiln [THREADS]\n", argv[0]);
        return 2;
    }
    uint32_t threads = argc == 3 ? (uint32_t)strtoul(argv[2], NULL, 10) : 0;
    printf("kiln %s\n", kiln_version());

    kiln_model *model = NULL;
    check(kiln_model_load(argv[1], threads, &model), "loading the model");
    size_t n_in, n_out;
    check(kiln_model_num_inputs(model, &n_in), "counting inputs");
    check(kiln_model_num_outputs(model, &n_out), "counting outputs");
    printf("signature\n");
    for (size_t i = 0; i < n_in; i++) print_signature_entry(model, 0, i);
    for (size_t i = 0; i < n_out; i++) print_signature_entry(model, 1, i);

    /* Inputs: choose sizes for symbolic dims, allocate, fill. */
    kiln_tensor *inputs = calloc(n_in ? n_in : 1, sizeof *inputs);
    int64_t (*shapes)[MAX_RANK] = calloc(n_in ? n_in : 1, sizeof *shapes);
    void **buffers = calloc(n_in ? n_in : 1, sizeof *buffers);
    printf("inputs\n");
    for (size_t i = 0; i < n_in; i++) {
        kiln_tensor_info info;
        check(kiln_model_input(model, i, &info), "describing an input");
        if (info.rank > MAX_RANK) {
            fprintf(stderr, "error: input %s has rank %zu > %d\n", info.name, info.rank, MAX_RANK);
            return 1;
        }
        size_t count = 1;
        for (size_t d = 0; d < info.rank; d++) {
            kiln_dim dim;
            check(kiln_model_input_dim(model, i, d, &dim), "describing a dim");
            int64_t size = dim.size;
            if (size < 0) {
                if (dim.min < 0) {
                    fprintf(stderr, "error: input %s: cannot choose a size for dim `%s`\n", info.name, dim.expr);
                    return 1;
                }
                size = dim.min > 2 ? dim.min : 2;
                if (dim.max >= 0 && size > dim.max) size = dim.max;
            }
            shapes[i][d] = size;
            count *= (size_t)size;
        }
        size_t bytes = count * kiln_dtype_size(info.dtype);
        buffers[i] = malloc(bytes ? bytes : 1); /* malloc's alignment suits every dtype */
        for (size_t j = 0; j < count; j++) fill(info.dtype, buffers[i], j, i);
        inputs[i] = (kiln_tensor){info.dtype, info.rank, shapes[i], buffers[i], bytes};
        printf("  %s: %s[", info.name, kiln_dtype_name(info.dtype));
        for (size_t d = 0; d < info.rank; d++) printf("%s%" PRId64, d ? ", " : "", shapes[i][d]);
        printf("]\n");
    }

    kiln_outputs *outputs = NULL;
    check(kiln_model_run(model, inputs, n_in, &outputs), "running the model");

    size_t count;
    check(kiln_outputs_count(outputs, &count), "counting outputs");
    printf("outputs\n");
    for (size_t i = 0; i < count; i++) {
        kiln_tensor_info info;
        kiln_tensor t;
        check(kiln_model_output(model, i, &info), "describing an output");
        check(kiln_outputs_get(outputs, i, &t), "reading an output");
        size_t n = t.bytes / kiln_dtype_size(t.dtype);
        double sum = 0;
        for (size_t j = 0; j < n; j++) sum += value(t.dtype, t.data, j);
        printf("  %s: %s[", info.name, kiln_dtype_name(t.dtype));
        for (size_t d = 0; d < t.rank; d++) printf("%s%" PRId64, d ? ", " : "", t.shape[d]);
        printf("] bytes=%zu fnv1a=%016" PRIx64 " sum=%.17g\n", t.bytes, fnv1a(t.data, t.bytes), sum);
        printf("    first:");
        for (size_t j = 0; j < n && j < 8; j++) printf(" %.9g", value(t.dtype, t.data, j));
        printf("\n");
    }

    kiln_outputs_free(outputs);
    for (size_t i = 0; i < n_in; i++) free(buffers[i]);
    free(buffers);
    free(shapes);
    free(inputs);
    kiln_model_free(model);
    return 0;
}
