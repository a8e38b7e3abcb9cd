//! The C API called from Rust: the signature queries, runs (also from several threads at once,
//! and outputs outliving their model), and bad calls — NULL pointers, missing and corrupt
//! files, wrong input count, dtype, shape and byte count, out-of-range indices — each giving
//! an error code and a message that names the problem, with output parameters untouched.

mod common;

use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

use common::{last_error, tensor};
use kiln::*;

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32 * 0.25 - 1.0).to_le_bytes()).collect()
}

/// Runs `model` on `inputs`; returns the status and the outputs (null on failure).
fn run(model: *const KilnModel, inputs: &[KilnTensor]) -> (KilnStatus, *mut KilnOutputs) {
    let mut out = null_mut();
    let status = unsafe { kiln_model_run(model, inputs.as_ptr(), inputs.len(), &mut out) };
    (status, out)
}

/// Output `i` of a run: its shape and bytes.
fn output(outputs: *const KilnOutputs, i: usize) -> (Vec<i64>, Vec<u8>) {
    let mut t = tensor(-1, &[], &[]);
    assert_eq!(unsafe { kiln_outputs_get(outputs, i, &mut t) }, KILN_OK, "{}", last_error());
    assert_eq!(t.data as usize % 8, 0, "output data is 8-byte aligned");
    unsafe {
        (
            std::slice::from_raw_parts(t.shape, t.rank).to_vec(),
            std::slice::from_raw_parts(t.data.cast::<u8>(), t.bytes).to_vec(),
        )
    }
}

/// Asserts `status` is `code` and the last error mentions every part of `mentions`.
fn assert_error(status: KilnStatus, code: KilnStatus, mentions: &[&str]) {
    let msg = last_error();
    assert_eq!(status, code, "status {status}, expected {code}; message: {msg}");
    for m in mentions {
        assert!(msg.contains(m), "the error does not mention `{m}`: {msg}");
    }
}

fn c_str(p: *const std::ffi::c_char) -> String {
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string()
}

#[test]
fn signature_of_a_dynamic_model() {
    let (_dir, model) = common::load_fixture("dynbatch.t215.aten.pt2", 1);
    let (mut n_in, mut n_out) = (0, 0);
    unsafe {
        assert_eq!(kiln_model_num_inputs(model, &mut n_in), KILN_OK);
        assert_eq!(kiln_model_num_outputs(model, &mut n_out), KILN_OK);
    }
    assert_eq!((n_in, n_out), (1, 1));
    let mut info = KilnTensorInfo { name: null(), dtype: -1, rank: 0, shape: null() };
    assert_eq!(unsafe { kiln_model_input(model, 0, &mut info) }, KILN_OK);
    assert_eq!((c_str(info.name), info.dtype, info.rank), ("x".to_string(), 0, 3));
    assert_eq!(unsafe { std::slice::from_raw_parts(info.shape, info.rank) }, [-1, 4, 8]);
    let mut dim = KilnDim { size: 0, expr: null(), min: 0, max: 0 };
    assert_eq!(unsafe { kiln_model_input_dim(model, 0, 0, &mut dim) }, KILN_OK);
    assert_eq!((dim.size, dim.min, dim.max), (-1, 1, 64));
    let batch = c_str(dim.expr);
    assert!(batch.starts_with('s'), "{batch}");
    assert_eq!(unsafe { kiln_model_input_dim(model, 0, 2, &mut dim) }, KILN_OK);
    assert_eq!((dim.size, c_str(dim.expr), dim.min, dim.max), (8, "8".to_string(), 8, 8));
    assert_eq!(unsafe { kiln_model_output_dim(model, 0, 0, &mut dim) }, KILN_OK);
    assert_eq!(c_str(dim.expr), batch, "the output's batch is the same symbol");
    assert_eq!(unsafe { kiln_model_output(model, 0, &mut info) }, KILN_OK);
    assert_eq!(unsafe { std::slice::from_raw_parts(info.shape, info.rank) }, [-1, 6]);

    // Two batch sizes from one model.
    for batch in [1, 5] {
        let (shape, data) = ([batch, 4, 8], f32_bytes(batch as usize * 32));
        let (status, outputs) = run(model, &[tensor(KILN_DTYPE_F32, &shape, &data)]);
        assert_eq!(status, KILN_OK, "{}", last_error());
        let mut count = 0;
        assert_eq!(unsafe { kiln_outputs_count(outputs, &mut count) }, KILN_OK);
        assert_eq!(count, 1);
        let (shape, bytes) = output(outputs, 0);
        assert_eq!((shape, bytes.len()), (vec![batch, 6], batch as usize * 24));
        unsafe { kiln_outputs_free(outputs) };
    }
    unsafe { kiln_model_free(model) };
}

#[test]
fn runs_from_several_threads_and_outputs_outlive_the_model() {
    let (_dir, model) = common::load_fixture("encoder.t215.aten.pt2", 2);
    let data = f32_bytes(2 * 8 * 32);
    let shape = [2i64, 8, 32];
    let reference = {
        let (status, outputs) = run(model, &[tensor(KILN_DTYPE_F32, &shape, &data)]);
        assert_eq!(status, KILN_OK, "{}", last_error());
        let r = (output(outputs, 0), output(outputs, 1));
        unsafe { kiln_outputs_free(outputs) };
        r
    };
    let shared = model as usize; // kiln_model may be used from several threads at once.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    let (status, outputs) = run(shared as *const KilnModel, &[tensor(KILN_DTYPE_F32, &shape, &data)]);
                    assert_eq!(status, KILN_OK, "{}", last_error());
                    assert_eq!((output(outputs, 0), output(outputs, 1)), reference);
                    unsafe { kiln_outputs_free(outputs) };
                }
            });
        }
    });
    let (status, outputs) = run(model, &[tensor(KILN_DTYPE_F32, &shape, &data)]);
    assert_eq!(status, KILN_OK);
    unsafe { kiln_model_free(model) };
    assert_eq!((output(outputs, 0), output(outputs, 1)), reference, "outputs stay valid after kiln_model_free");
    unsafe { kiln_outputs_free(outputs) };
}

#[test]
fn bad_loads() {
    let mut model = std::ptr::NonNull::<KilnModel>::dangling().as_ptr(); // must stay untouched on failure
    let sentinel = model;
    let path = CString::new("/nonexistent/kiln/model.kiln").unwrap();
    unsafe {
        assert_error(kiln_model_load(null(), 0, &mut model), KILN_ERROR_INVALID_ARGUMENT, &["path is NULL"]);
        assert_error(
            kiln_model_load(path.as_ptr(), 0, null_mut()),
            KILN_ERROR_INVALID_ARGUMENT,
            &["out_model is NULL"],
        );
        assert_error(
            kiln_model_load(path.as_ptr(), 0, &mut model),
            KILN_ERROR_LOAD,
            &["/nonexistent/kiln/model.kiln", "No such file"],
        );
    }
    assert_eq!(model, sentinel);

    let dir = tempfile::tempdir().unwrap();
    let good = common::compile_fixture("mlp.t215.aten.pt2", dir.path());
    let mut bytes = std::fs::read(&good).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x40; // inside the last section: the x86_64 code object
    let corrupt = dir.path().join("corrupt.kiln");
    std::fs::write(&corrupt, &bytes).unwrap();
    let not_kiln = dir.path().join("empty.kiln");
    std::fs::write(&not_kiln, b"").unwrap();
    for (p, mentions) in [(&corrupt, &["corrupt", "checksum", "code object"][..]), (&not_kiln, &["empty"])] {
        let c = CString::new(p.to_str().unwrap()).unwrap();
        assert_error(unsafe { kiln_model_load(c.as_ptr(), 0, &mut model) }, KILN_ERROR_LOAD, mentions);
    }
    assert_eq!(model, sentinel);
    unsafe { kiln_model_free(null_mut()) };
    unsafe { kiln_outputs_free(null_mut()) };
}

#[test]
fn bad_queries() {
    let (_dir, model) = common::load_fixture("mlp.t215.aten.pt2", 1);
    let mut n = 99usize;
    let mut info = KilnTensorInfo { name: null(), dtype: -1, rank: 0, shape: null() };
    let mut dim = KilnDim { size: 0, expr: null(), min: 0, max: 0 };
    unsafe {
        assert_error(kiln_model_num_inputs(null(), &mut n), KILN_ERROR_INVALID_ARGUMENT, &["model is NULL"]);
        assert_error(kiln_model_num_outputs(model, null_mut()), KILN_ERROR_INVALID_ARGUMENT, &["out_count is NULL"]);
        assert_error(kiln_model_input(model, 1, &mut info), KILN_ERROR_INVALID_ARGUMENT, &["input index 1", "has 1"]);
        assert_error(kiln_model_output(model, 7, &mut info), KILN_ERROR_INVALID_ARGUMENT, &["output index 7"]);
        assert_error(kiln_model_input(model, 0, null_mut()), KILN_ERROR_INVALID_ARGUMENT, &["out_info is NULL"]);
        assert_error(kiln_model_input_dim(model, 0, 2, &mut dim), KILN_ERROR_INVALID_ARGUMENT, &["dim 2", "rank 2"]);
        assert_error(kiln_outputs_count(null(), &mut n), KILN_ERROR_INVALID_ARGUMENT, &["outputs is NULL"]);
    }
    assert_eq!((n, info.dtype, dim.size), (99, -1, 0), "outputs untouched on failure");
    assert!(kiln_dtype_name(10).is_null() && kiln_dtype_name(-1).is_null());
    assert_eq!((kiln_dtype_size(0), kiln_dtype_size(3), kiln_dtype_size(99)), (4, 2, 0));
    assert_eq!(c_str(kiln_version()), env!("CARGO_PKG_VERSION"));
    unsafe { kiln_model_free(model) };
}

#[test]
fn bad_runs() {
    let (_dir, model) = common::load_fixture("mlp.t215.aten.pt2", 1);
    let good_shape = [4i64, 16];
    let data = f32_bytes(64);
    let good = tensor(KILN_DTYPE_F32, &good_shape, &data);
    let (status, outputs) = run(model, &[good]);
    assert_eq!(status, KILN_OK, "{}", last_error());
    unsafe { kiln_outputs_free(outputs) };

    let short = f32_bytes(48);
    let (wrong_shape, negative) = ([3i64, 16], [-4i64, 16]);
    let with = |f: &dyn Fn(&mut KilnTensor)| {
        let mut t = good;
        f(&mut t);
        t
    };
    let cases: Vec<(&str, Vec<KilnTensor>, KilnStatus, Vec<&str>)> = vec![
        ("no inputs", vec![], KILN_ERROR_INPUT, vec!["expected 1 inputs, got 0"]),
        ("two inputs", vec![good, good], KILN_ERROR_INPUT, vec!["expected 1 inputs, got 2"]),
        (
            "wrong shape",
            vec![tensor(KILN_DTYPE_F32, &wrong_shape, &short)],
            KILN_ERROR_INPUT,
            vec!["`x`", "shape [3, 16], expected [4, 16]"],
        ),
        (
            "wrong rank",
            vec![with(&|t| t.rank = 1)],
            KILN_ERROR_INVALID_ARGUMENT,
            vec!["`x`", "256 bytes", "[4] tensor"],
        ),
        (
            "wrong dtype",
            vec![with(&|t| t.dtype = KILN_DTYPE_I32)],
            KILN_ERROR_INPUT,
            vec!["`x`", "dtype I32, expected F32"],
        ),
        ("unknown dtype", vec![with(&|t| t.dtype = 42)], KILN_ERROR_INVALID_ARGUMENT, vec!["`x`", "unknown dtype 42"]),
        ("byte count", vec![with(&|t| t.bytes = 100)], KILN_ERROR_INVALID_ARGUMENT, vec!["100 bytes", "has 256"]),
        (
            "negative dim",
            vec![tensor(KILN_DTYPE_F32, &negative, &data)],
            KILN_ERROR_INVALID_ARGUMENT,
            vec!["negative dim -4"],
        ),
        ("null shape", vec![with(&|t| t.shape = null())], KILN_ERROR_INVALID_ARGUMENT, vec!["shape is NULL"]),
        ("null data", vec![with(&|t| t.data = null())], KILN_ERROR_INVALID_ARGUMENT, vec!["data is NULL"]),
        (
            "misaligned data",
            vec![with(&|t| t.data = unsafe { t.data.cast::<u8>().add(1) }.cast())],
            KILN_ERROR_INVALID_ARGUMENT,
            vec!["not aligned"],
        ),
    ];
    for (what, inputs, code, mentions) in cases {
        let (status, outputs) = run(model, &inputs);
        assert!(outputs.is_null(), "{what}: outputs set on failure");
        let msg = last_error();
        assert_eq!(status, code, "{what}: {msg}");
        for m in mentions {
            assert!(msg.contains(m), "{what}: the error does not mention `{m}`: {msg}");
        }
    }
    let mut out = null_mut();
    unsafe {
        assert_error(kiln_model_run(null(), &good, 1, &mut out), KILN_ERROR_INVALID_ARGUMENT, &["model is NULL"]);
        assert_error(kiln_model_run(model, null(), 1, &mut out), KILN_ERROR_INVALID_ARGUMENT, &["inputs is NULL"]);
        assert_error(
            kiln_model_run(model, &good, 1, null_mut()),
            KILN_ERROR_INVALID_ARGUMENT,
            &["out_outputs is NULL"],
        );
    }
    let (_, outputs) = run(model, &[good]);
    let mut t = good;
    unsafe {
        assert_error(
            kiln_outputs_get(outputs, 1, &mut t),
            KILN_ERROR_INVALID_ARGUMENT,
            &["output index 1", "there are 1"],
        )
    };
    unsafe { kiln_outputs_free(outputs) };
    unsafe { kiln_model_free(model) };
}

#[test]
fn a_size_outside_the_exported_range_is_an_input_error() {
    let (_dir, model) = common::load_fixture("dynbatch.t215.aten.pt2", 1);
    let (shape, data) = ([65i64, 4, 8], f32_bytes(65 * 32));
    let (status, _) = run(model, &[tensor(KILN_DTYPE_F32, &shape, &data)]);
    assert_error(status, KILN_ERROR_INPUT, &["size 65 is outside the exported range [1, 64]"]);
    unsafe { kiln_model_free(model) };
}
