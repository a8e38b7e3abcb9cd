//! Helpers shared by the C API tests: compiling a fixture into an artifact, and calling the C
//! API from Rust.

#![allow(dead_code)]

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use kiln::*;
use kiln_codegen::compile::{compile, CompileOptions};

/// A fixture of the workspace's `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// Compiles `tests/fixtures/<archive>` for this machine into `<dir>/<archive>.kiln`.
pub fn compile_fixture(archive: &str, dir: &Path) -> PathBuf {
    let model = kiln_frontend::load(&fixture(archive)).unwrap_or_else(|e| panic!("{archive}: {e}"));
    let compiled = compile(&model.graph, &model.weights, &CompileOptions::default(), &mut |_| {})
        .unwrap_or_else(|e| panic!("{archive}: {e}"));
    let path = dir.join(format!("{archive}.kiln"));
    compiled.write(&path).unwrap();
    path
}

/// Compiles a fixture into a new temporary folder and loads it through the C API with
/// `threads` workers. The folder must outlive the model.
pub fn load_fixture(archive: &str, threads: u32) -> (tempfile::TempDir, *mut KilnModel) {
    let dir = tempfile::tempdir().unwrap();
    let model = load(&compile_fixture(archive, dir.path()), threads);
    (dir, model)
}

/// `kiln_last_error()` as a string.
pub fn last_error() -> String {
    unsafe { CStr::from_ptr(kiln_last_error()) }.to_string_lossy().into_owned()
}

/// Loads a model through the C API, panicking on failure.
pub fn load(path: &Path, threads: u32) -> *mut KilnModel {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut model = std::ptr::null_mut();
    let status = unsafe { kiln_model_load(c.as_ptr(), threads, &mut model) };
    assert_eq!(status, KILN_OK, "{}", last_error());
    model
}

/// A tensor description borrowing `shape` and `data`.
pub fn tensor(dtype: i32, shape: &[i64], data: &[u8]) -> KilnTensor {
    KilnTensor { dtype, rank: shape.len(), shape: shape.as_ptr(), data: data.as_ptr().cast(), bytes: data.len() }
}
