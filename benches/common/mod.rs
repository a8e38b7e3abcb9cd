//! Helpers shared by the benches: fixture paths, compiling a fixture into an artifact, and
//! reading a fixture's inputs as host tensors in the model's input order.

#![allow(dead_code)]

use kiln_codegen::compile::{compile, CompileOptions};
use kiln_codegen::plan::elem_type;
use kiln_ir::npz;
use kiln_runtime::manifest::Signature;
use kiln_runtime::tensor::HostTensor;
use std::path::{Path, PathBuf};

/// The fixture models the benches measure (PyTorch 2.15, default export IR).
pub const MODELS: &[&str] = &["gpt", "resblock"];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The `.pt2` archive of a fixture model.
pub fn archive(model: &str) -> PathBuf {
    fixture(&format!("{model}.t215.aten.pt2"))
}

/// A path for a bench's scratch files (under the target directory, which git ignores).
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-bench");
    std::fs::create_dir_all(&dir).expect("creating the bench scratch folder");
    dir.join(name)
}

/// Reads, compiles (default options: x86-64, Cranelift, optimized) and writes `path`.
pub fn compile_to(archive: &Path, path: &Path) {
    let model = kiln_frontend::load(archive).unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
    let compiled = compile(&model.graph, &model.weights, &CompileOptions::default(), &mut |_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
    compiled.write(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The fixture's inputs (`<model>.t215.in.npz`), ordered as the signature's inputs by name.
pub fn inputs(model: &str, sig: &Signature) -> Vec<HostTensor> {
    let arrays = npz::read_npz(&fixture(&format!("{model}.t215.in.npz"))).expect("reading the fixture inputs");
    sig.inputs
        .iter()
        .map(|spec| {
            let (_, t) = arrays
                .iter()
                .find(|(k, _)| *k == spec.name)
                .unwrap_or_else(|| panic!("{model}: no input `{}`", spec.name));
            HostTensor { dtype: elem_type(t.dtype), shape: t.shape.clone(), data: t.bytes.clone() }
        })
        .collect()
}
