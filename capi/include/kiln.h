/*
 * kiln.h: the C API of the kiln runtime.
 *
 * Loads a compiled model (a `.kiln` artifact written by `kiln compile`), describes its
 * signature, and runs it. Link with the library built by `cargo build --release -p kiln-capi`:
 * target/release/libkiln.so (shared) or target/release/libkiln.a (static; then also link
 * -lpthread -ldl -lm). See examples/c/run_model.c.
 *
 * Conventions
 *
 * - Every function that can fail returns a kiln_status: KILN_OK (0) on success, otherwise an
 *   error code, and then kiln_last_error() describes the failure. On failure, output
 *   parameters are left unchanged.
 * - Null pointers, out-of-range indices and malformed tensor descriptions are reported as
 *   KILN_ERROR_INVALID_ARGUMENT, never undefined behaviour, wherever kiln can check them.
 *   What kiln cannot check is stated with each function (e.g. that a data pointer really points
 *   to `bytes` readable bytes).
 * - No Rust panic ever crosses this API: a bug inside kiln is caught and reported as
 *   KILN_ERROR_INTERNAL (the default panic hook may also print a line to stderr).
 * - Strings are NUL-terminated UTF-8. Tensor data is dense, row-major, in native byte order
 *   (little-endian on every supported machine).
 * - Thread safety: a kiln_model may be used from several threads at once (kiln_model_run
 *   included; each run has its own scratch memory and outputs). A kiln_outputs belongs to the
 *   caller that received it. kiln_last_error() is per thread.
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------------------------------------------- */
/* Status codes and element types                                                            */
/* ----------------------------------------------------------------------------------------- */

/* The result of a call: KILN_OK or one of the errors below. */
typedef int32_t kiln_status;

enum {
    KILN_OK = 0,
    /* A null pointer, an index out of range, an unknown dtype, a negative dim, a byte count
     * that does not match the shape, misaligned data. */
    KILN_ERROR_INVALID_ARGUMENT = 1,
    /* The artifact cannot be read, is corrupt or of another format version, or has no code
     * for this machine. */
    KILN_ERROR_LOAD = 2,
    /* The inputs do not match the model's signature (count, dtype, rank, shape, a size
     * outside a symbolic dim's exported range). */
    KILN_ERROR_INPUT = 3,
    /* Running failed on the device (e.g. out of memory). */
    KILN_ERROR_RUN = 4,
    /* A bug in kiln, caught at the API boundary. */
    KILN_ERROR_INTERNAL = 5
};

/* Element types (the values of the `dtype` fields). */
typedef int32_t kiln_dtype;

enum {
    KILN_DTYPE_F32 = 0,
    KILN_DTYPE_F64 = 1,
    KILN_DTYPE_F16 = 2,  /* IEEE binary16, as uint16_t bits */
    KILN_DTYPE_BF16 = 3, /* bfloat16, as uint16_t bits (the high half of an f32) */
    KILN_DTYPE_I64 = 4,
    KILN_DTYPE_I32 = 5,
    KILN_DTYPE_I16 = 6,
    KILN_DTYPE_I8 = 7,
    KILN_DTYPE_U8 = 8,
    KILN_DTYPE_BOOL = 9  /* one byte per element, 0 or 1 */
};

/* ----------------------------------------------------------------------------------------- */
/* Types                                                                                     */
/* ----------------------------------------------------------------------------------------- */

/* A loaded model. Opaque; created by kiln_model_load, destroyed by kiln_model_free. */
typedef struct kiln_model kiln_model;

/* The outputs of one run. Opaque; created by kiln_model_run, destroyed by kiln_outputs_free. */
typedef struct kiln_outputs kiln_outputs;

/* A tensor: an input the caller passes to kiln_model_run, or an output kiln_outputs_get
 * describes. */
typedef struct kiln_tensor {
    kiln_dtype dtype;      /* a KILN_DTYPE_* value */
    size_t rank;           /* number of dims */
    const int64_t *shape;  /* `rank` sizes, each >= 0; may be NULL when rank == 0 */
    const void *data;      /* `bytes` bytes, aligned to the element size; may be NULL when bytes == 0 */
    size_t bytes;          /* product(shape) * element size */
} kiln_tensor;

/* One input or output of a model's signature. The pointers are owned by the model and stay
 * valid until kiln_model_free. */
typedef struct kiln_tensor_info {
    const char *name;      /* the name in the exported program */
    kiln_dtype dtype;
    size_t rank;
    const int64_t *shape;  /* `rank` sizes; -1 for a symbolic dim (see kiln_dim) */
} kiln_tensor_info;

/* One dim of an input or output. `expr` is owned by the model (valid until kiln_model_free). */
typedef struct kiln_dim {
    int64_t size;          /* the size, or -1 when the dim is symbolic */
    const char *expr;      /* the size as text: "16", "batch", "2*batch + 1" (symbol names as exported) */
    int64_t min;           /* smallest allowed size: `size` when static; -1 when unknown */
    int64_t max;           /* largest allowed size: `size` when static; -1 when unbounded or unknown */
} kiln_dim;

/* ----------------------------------------------------------------------------------------- */
/* Library                                                                                   */
/* ----------------------------------------------------------------------------------------- */

/* The kiln version, e.g. "0.1.0". A static string; never NULL. */
const char *kiln_version(void);

/* A description of the most recent failed call on the calling thread ("" when none failed
 * yet). Successful calls leave it unchanged. The string is owned by kiln and valid until the
 * next call into kiln on the same thread; copy it to keep it. Never NULL. */
const char *kiln_last_error(void);

/* The name of a dtype ("f32", "bf16", "bool", ...), or NULL for an unknown value. Static. */
const char *kiln_dtype_name(kiln_dtype dtype);

/* The size in bytes of one element of `dtype`, or 0 for an unknown value. */
size_t kiln_dtype_size(kiln_dtype dtype);

/* ----------------------------------------------------------------------------------------- */
/* Models                                                                                    */
/* ----------------------------------------------------------------------------------------- */

/* Loads the artifact at `path` for this machine's CPU and stores the model in *out_model.
 * `threads` is the number of worker threads for parallel loops (0: one per core). The file is
 * memory-mapped and its weights are used in place: do not modify or truncate it while the
 * model is loaded (kiln compile replaces files by renaming, which is safe).
 * Errors: KILN_ERROR_INVALID_ARGUMENT (path or out_model NULL), KILN_ERROR_LOAD (missing
 * file, corrupt artifact, unsupported format version, no code for this machine). */
kiln_status kiln_model_load(const char *path, uint32_t threads, kiln_model **out_model);

/* Frees a model and everything it owns (names, shapes, dim texts). NULL is a no-op. The model
 * must not be in use by another thread, and outputs of its runs stay valid (they are
 * independent of it). Freeing twice is undefined behaviour. */
void kiln_model_free(kiln_model *model);

/* The number of inputs / outputs of the model's signature. */
kiln_status kiln_model_num_inputs(const kiln_model *model, size_t *out_count);
kiln_status kiln_model_num_outputs(const kiln_model *model, size_t *out_count);

/* Describes input / output `index` (0-based, in signature order). */
kiln_status kiln_model_input(const kiln_model *model, size_t index, kiln_tensor_info *out_info);
kiln_status kiln_model_output(const kiln_model *model, size_t index, kiln_tensor_info *out_info);

/* Describes dim `dim` of input / output `index`: its size or, for a symbolic dim, its
 * expression and allowed range. Inputs of one run must agree on every symbol's value. */
kiln_status kiln_model_input_dim(const kiln_model *model, size_t index, size_t dim, kiln_dim *out_dim);
kiln_status kiln_model_output_dim(const kiln_model *model, size_t index, size_t dim, kiln_dim *out_dim);

/* Runs the model once. `inputs` points to `num_inputs` tensors in signature order, whose
 * dtypes and shapes must match the signature (symbolic dims take any size in their range).
 * kiln reads the input data during the call only and never writes it; it cannot check that
 * each `data` really holds `bytes` readable bytes. On success *out_outputs receives the
 * outputs, owned by the caller until kiln_outputs_free.
 * May be called from several threads at once on the same model.
 * Errors: KILN_ERROR_INVALID_ARGUMENT (NULL model or out_outputs, NULL inputs with
 * num_inputs > 0, a malformed tensor), KILN_ERROR_INPUT (wrong count, dtype, rank or shape),
 * KILN_ERROR_RUN. */
kiln_status kiln_model_run(const kiln_model *model, const kiln_tensor *inputs, size_t num_inputs,
                           kiln_outputs **out_outputs);

/* ----------------------------------------------------------------------------------------- */
/* Outputs                                                                                   */
/* ----------------------------------------------------------------------------------------- */

/* The number of tensors in `outputs` (the model's number of outputs). */
kiln_status kiln_outputs_count(const kiln_outputs *outputs, size_t *out_count);

/* Describes output `index`: dtype, rank, concrete shape, data and byte count. The shape and
 * data pointers are owned by `outputs` and valid until kiln_outputs_free; the data is
 * 8-byte aligned and may be read (not freed) by the caller. */
kiln_status kiln_outputs_get(const kiln_outputs *outputs, size_t index, kiln_tensor *out_tensor);

/* Frees the outputs of a run. NULL is a no-op; freeing twice is undefined behaviour. */
void kiln_outputs_free(kiln_outputs *outputs);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */
