//! GPU code run without a GPU: every fixture, compiled once for every GPU target, runs on
//! each target's emulated GPU (`kiln_codegen::llvm::emulate`: the code object's optimized
//! LLVM IR JIT-compiled for this CPU, with thread ids, barriers, lane exchanges and matrix
//! instructions — `mma.sync`, `wgmma` with its shared-memory descriptors, MFMA, WMMA —
//! emulated as the vendors document them) through the runtime's GPU device, and reproduces
//! PyTorch's outputs; compiled without FMA contraction, the f32 fixtures' GPU code gives the
//! CPU code's outputs bit for bit. A descriptor that reads the wrong layout, changed in the
//! code, is caught.
#![cfg(feature = "llvm")]

use kiln_codegen::compile::{compile, CompileOptions, Compiled};
use kiln_codegen::llvm::emulate::EmulatedGpu;
use kiln_codegen::plan::{dtype_of, elem_type};
use kiln_codegen::target::Listing;
use kiln_ir::{npz, tensor::compare, Tensor};
use kiln_runtime::exec::Model;
use kiln_runtime::tensor::HostTensor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MODELS: &[&str] =
    &["mlp", "resblock", "encoder", "gpt", "mobile", "dynbatch", "views", "dynseq", "half", "gpt_half"];
const GPU_TARGETS: &[&str] = &["sm_80", "sm_90", "sm_90a", "gfx90a", "gfx942", "gfx1100"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn compile_fixture(model: &str, form: &str, targets: &[&str]) -> Compiled {
    let m = kiln_frontend::load(&fixture(&format!("{model}.t215.{form}.pt2"))).unwrap();
    let opts = CompileOptions { targets: targets.iter().map(|t| t.to_string()).collect(), ..CompileOptions::default() };
    compile(&m.graph, &m.weights, &opts, &mut |_| {}).unwrap_or_else(|e| panic!("{model} ({form}): {e:#}"))
}

/// The fixture compiled for `targets` and written to a temporary artifact.
fn compile_to_artifact(model: &str, form: &str, targets: &[&str], stem: &str) -> (Compiled, PathBuf) {
    let compiled = compile_fixture(model, form, targets);
    let path = temp(&format!("{model}.{form}.{stem}.kiln"));
    compiled.write(&path).unwrap();
    (compiled, path)
}

/// The LLVM IR a code object was generated from.
fn llvm_ir<'a>(compiled: &'a Compiled, target: &str) -> (&'a [u8], &'a str) {
    let code = compiled.code.iter().find(|c| c.target == target).expect("code for the target");
    match code.listings.iter().find(|(stage, _)| *stage == "llvm") {
        Some((_, Listing::Whole(ir))) => (&code.bytes, ir),
        _ => panic!("{target}: no LLVM IR listing"),
    }
}

/// `path` loaded on an emulated `target` GPU that runs `code` as `ir`.
fn load_emulated(path: &Path, target: &str, code: &[u8], ir: &str) -> Model {
    let gpu = EmulatedGpu::new(target).unwrap();
    gpu.add_code(code, ir);
    let device = Arc::new(gpu.into_device().unwrap());
    let m = Model::load_on(path, device).unwrap_or_else(|e| panic!("{target}: {e}"));
    assert_eq!(m.code_target(), target);
    m
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kiln-emulated-{}-{name}", std::process::id()))
}

/// The inputs of the npz `set` for `m`, by input name.
fn inputs(m: &Model, set: &str) -> Vec<HostTensor> {
    let arrays = npz::read_npz(&fixture(set)).unwrap();
    m.signature()
        .inputs
        .iter()
        .map(|i| {
            let t = &arrays.iter().find(|(k, _)| *k == i.name).unwrap_or_else(|| panic!("{set}: no `{}`", i.name)).1;
            HostTensor { dtype: elem_type(t.dtype), shape: t.shape.clone(), data: t.bytes.clone() }
        })
        .collect()
}

/// Runs `m` on the fixture's input sets; returns the outputs that differ from PyTorch's.
fn check_against_pytorch(m: &Model, model: &str, what: &str) -> Vec<String> {
    // The f16 fixtures round differently from PyTorch's kernels (the fixtures' f16 tolerance).
    let (rtol, atol) = if model.ends_with("half") { (1e-2, 1e-2) } else { (1e-4, 1e-5) };
    let sets: &[&str] = if ["dynbatch", "dynseq"].contains(&model) { &["in", "in2"] } else { &["in"] };
    let mut bad = Vec::new();
    for set in sets {
        let got = match m.run(&inputs(m, &format!("{model}.t215.{set}.npz"))) {
            Ok(got) => got,
            Err(e) => {
                bad.push(format!("{what} {set}: {e}"));
                continue;
            }
        };
        let torch = npz::read_npz(&fixture(&format!("{model}.t215.{}.npz", set.replace("in", "out")))).unwrap();
        for (i, h) in got.into_iter().enumerate() {
            let g = Tensor { dtype: dtype_of(h.dtype), shape: h.shape, bytes: h.data };
            match compare(&g, &torch[i].1, rtol, atol) {
                Some(c) if c.bad == 0 => {}
                other => bad.push(format!("{what} {set} output {i}: {other:?}")),
            }
        }
    }
    bad
}

#[test]
fn every_fixture_runs_on_every_emulated_gpu_and_matches_pytorch() {
    let mut bad = Vec::new();
    for model in MODELS {
        for form in ["aten", "core"] {
            let (compiled, path) = compile_to_artifact(model, form, GPU_TARGETS, "all");
            for target in GPU_TARGETS {
                let (code, ir) = llvm_ir(&compiled, target);
                let m = load_emulated(&path, target, code, ir);
                bad.extend(check_against_pytorch(&m, model, &format!("{model} ({form}) on emulated {target}")));
            }
            let _ = std::fs::remove_file(&path);
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The emulator reads `wgmma`'s operands through the descriptors as the PTX ISA defines them:
/// with the leading and stride byte offsets of kiln's descriptors swapped in the code (which
/// `ptxas` would still assemble), the f16 fixture's products come out wrong.
#[test]
fn a_wgmma_descriptor_with_the_wrong_layout_is_caught() {
    let (compiled, path) = compile_to_artifact("half", "aten", &["sm_90a"], "descriptor");
    let (code, ir) = llvm_ir(&compiled, "sm_90a");
    // kiln's descriptors: stride byte offset 512 (32 << 32), leading byte offset 128 (8 << 16).
    let (right, swapped) = ((32u64 << 32) | (8 << 16), (8u64 << 32) | (32 << 16));
    assert!(ir.contains(&format!(", {right}")), "the descriptors' constant is in the IR");
    let good = load_emulated(&path, "sm_90a", code, ir);
    assert_eq!(check_against_pytorch(&good, "half", "as compiled"), Vec::<String>::new());
    let wrong = ir.replace(&format!(", {right}"), &format!(", {swapped}"));
    let m = load_emulated(&path, "sm_90a", code, &wrong);
    assert!(!check_against_pytorch(&m, "half", "swapped").is_empty(), "a wrong descriptor went unnoticed");
    let _ = std::fs::remove_file(&path);
}

/// Without FMA contraction the GPU code computes every element as the CPU code does, in the
/// same order (what `kiln run --compare-steps` relies on): on every emulated GPU, each f32
/// fixture's outputs equal the CPU code's bit for bit.
#[test]
fn without_contraction_emulated_gpus_give_the_cpu_codes_outputs_bit_for_bit() {
    let mut differ = Vec::new();
    for model in MODELS.iter().filter(|m| !m.ends_with("half")) {
        let m = kiln_frontend::load(&fixture(&format!("{model}.t215.aten.pt2"))).unwrap();
        let targets: Vec<String> = ["x86_64"].iter().chain(GPU_TARGETS).map(|t| t.to_string()).collect();
        let opts = CompileOptions { targets, fp_contract: false, ..CompileOptions::default() };
        let compiled = compile(&m.graph, &m.weights, &opts, &mut |_| {}).unwrap();
        let path = temp(&format!("{model}.exact.kiln"));
        compiled.write(&path).unwrap();
        let cpu = Model::load(&path).unwrap();
        let sets: &[&str] = if ["dynbatch", "dynseq"].contains(model) { &["in", "in2"] } else { &["in"] };
        for target in GPU_TARGETS {
            let (code, ir) = llvm_ir(&compiled, target);
            let gpu = load_emulated(&path, target, code, ir);
            for set in sets {
                let x = inputs(&cpu, &format!("{model}.t215.{set}.npz"));
                if gpu.run(&x).unwrap() != cpu.run(&x).unwrap() {
                    differ.push(format!("{model} {set} on emulated {target}"));
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    assert!(differ.is_empty(), "outputs differ from the CPU code's: {}", differ.join(", "));
}

/// Shared-memory accesses are checked for races: with one barrier of a tiled kernel removed
/// from the code, the emulated run fails and names the shared variable and the threads —
/// as a race, or, when a reading thread runs before the thread that writes the byte, as a
/// read of a byte the block has not written (which of the two depends on the threads' timing).
#[test]
fn a_missing_barrier_is_reported_as_a_race() {
    let (compiled, path) = compile_to_artifact("gpt", "aten", &["sm_80"], "race");
    let (code, ir) = llvm_ir(&compiled, "sm_80");
    let barrier = "tail call void @llvm.nvvm.barrier0()";
    let first = ir.find(barrier).expect("a barrier in the code");
    let without = format!("{}{}", &ir[..first], &ir[first + barrier.len()..]);
    let m = load_emulated(&path, "sm_80", code, &without);
    let bad = check_against_pytorch(&m, "gpt", "without a barrier").join("\n");
    let reported =
        bad.contains("with no barrier between (a race)") || bad.contains("a missing barrier before the write");
    assert!(reported && bad.contains("_shared"), "{bad}");
    let _ = std::fs::remove_file(&path);
}

/// A shared-memory read of a byte no thread of the block wrote is reported (on a GPU it reads
/// what the last block left there, as the emulator would too): with a tile's store removed
/// from the code, the emulated run fails and names the variable.
#[test]
fn a_read_of_shared_memory_the_block_never_wrote_is_reported() {
    let (compiled, path) = compile_to_artifact("gpt", "aten", &["sm_80"], "unwritten");
    let (code, ir) = llvm_ir(&compiled, "sm_80");
    let store = ir
        .lines()
        .find(|l| l.trim_start().starts_with("store float") && l.contains("addrspace(3)"))
        .expect("a store to shared memory");
    let m = load_emulated(&path, "sm_80", code, &ir.replacen(store, "", 1));
    let bad = check_against_pytorch(&m, "gpt", "without a store").join("\n");
    assert!(bad.contains("which no thread of the block has written") && bad.contains("_shared"), "{bad}");
    let _ = std::fs::remove_file(&path);
}
