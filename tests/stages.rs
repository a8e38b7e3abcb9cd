//! Snapshots of every compiler stage's text for every fixture model (graph after the passes,
//! fusion report, the e-graph rules behind each kernel, kernel IR, Cranelift IR, x86-64
//! assembly; with the `llvm` feature the MLIR as built for every fixture, and the MLIR after
//! the pipeline, LLVM IR and assembly of the small fixtures), and determinism: compiling the
//! same archive twice gives byte-identical artifacts.

use kiln_codegen::compile::{compile, CompileOptions, Stage};
use std::collections::BTreeSet;

const MODELS: &[&str] = &["mlp", "resblock", "encoder", "gpt", "mobile", "dynbatch", "views", "dynseq"];

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn compile_fixture(model: &str, emit: &[Stage]) -> kiln_codegen::compile::Compiled {
    compile_fixture_with(model, emit, kiln_codegen::target::DEFAULT_BACKEND)
}

fn compile_fixture_with(model: &str, emit: &[Stage], backend: &str) -> kiln_codegen::compile::Compiled {
    let m = kiln_frontend::load(std::path::Path::new(&fixture(&format!("{model}.t215.aten.pt2")))).unwrap();
    let opts = CompileOptions {
        emit: emit.iter().copied().collect::<BTreeSet<_>>(),
        backend: backend.into(),
        ..CompileOptions::default()
    };
    compile(&m.graph, &m.weights, &opts, &mut |_| {}).unwrap_or_else(|e| panic!("{model}: {e}"))
}

#[test]
fn every_stage_of_every_fixture_matches_its_snapshot() {
    let stages = [Stage::Opt, Stage::Fusion, Stage::Explain, Stage::Kernel, Stage::Clif, Stage::Asm];
    for m in MODELS {
        let compiled = compile_fixture(m, &stages);
        assert_eq!(compiled.listings.len(), stages.len(), "{m}: every requested stage is listed");
        for (stage, text) in &compiled.listings {
            insta::assert_snapshot!(format!("{m}.{}", stage.name()), text);
        }
    }
}

#[test]
fn compiling_twice_gives_identical_artifacts() {
    for m in MODELS {
        let mut bytes = Vec::new();
        for run in 0..2 {
            let path = std::env::temp_dir().join(format!("kiln-stages-{}-{m}.{run}.kiln", std::process::id()));
            compile_fixture(m, &[]).write(&path).unwrap();
            bytes.push(std::fs::read(&path).unwrap());
            let _ = std::fs::remove_file(&path);
        }
        assert!(bytes[0] == bytes[1], "{m}: two compiles differ");
    }
}

/// The MLIR the `llvm` backend builds from every fixture's kernels (before its pass pipeline),
/// snapshotted like the other stages.
#[cfg(feature = "llvm")]
#[test]
fn every_fixture_mlir_matches_its_snapshot() {
    for m in MODELS {
        let compiled = compile_fixture(m, &[]);
        let kernels: Vec<_> = compiled.program.kernels.iter().map(kiln_codegen::kernel::math::expand).collect();
        let text = kiln_codegen::llvm::mlir_module(&kernels).unwrap_or_else(|e| panic!("{m}: {e}"));
        insta::assert_snapshot!(format!("{m}.mlir"), text);
    }
}

/// The LLVM version the `llvm-*` snapshots were made with: LLVM's optimizer and code generator
/// change their output between releases, so another version skips these snapshots.
#[cfg(feature = "llvm")]
const SNAPSHOT_LLVM: (u32, u32, u32) = (19, 1, 7);

/// What the `llvm` backend makes of the small fixtures after its MLIR pipeline, after LLVM's
/// `default<O3>`, and as x86-64 assembly (mlp: small matmuls, which LLVM unrolls fully, and a
/// fused elementwise kernel; dynbatch: a dynamic extent; views: index arithmetic and gathers),
/// and the assembly of two gpt kernels: its first matmul (the Q/K/V projections merged into
/// one by the e-graph), whose inner loop is 8-wide `vfmadd` on `ymm` registers, and `gelu`, a
/// matmul with its bias and tanh-GELU epilogue fused. The
/// larger fixtures' MLIR as built is snapshotted above; their lowered forms follow from it and
/// would add megabytes of text.
#[cfg(feature = "llvm")]
#[test]
fn llvm_stages_of_the_small_fixtures_match_their_snapshots() {
    let version = kiln_codegen::llvm::llvm_version();
    if version != SNAPSHOT_LLVM {
        eprintln!("skipped: the llvm-* snapshots were made with LLVM {SNAPSHOT_LLVM:?}; this build links {version:?}");
        return;
    }
    for m in ["mlp", "dynbatch", "views"] {
        let compiled = compile_fixture_with(m, &[Stage::Mlir, Stage::Llvm, Stage::Asm], "llvm");
        for (stage, text) in &compiled.listings {
            insta::assert_snapshot!(format!("{m}.llvm-{}", stage.name()), text);
        }
    }
    let gpt = compile_fixture_with("gpt", &[Stage::Asm], "llvm");
    let asm = &gpt.listings[0].1;
    // The first matmul kernel (the merged Q/K/V projection) and the GELU kernel.
    let matmul = asm.lines().find(|l| l.starts_with("kiln_") && l.contains("matmul")).expect("a matmul kernel");
    let focus: Vec<&str> =
        [matmul.trim_end_matches(':'), "kiln_gelu_0"].iter().map(|f| asm_function(asm, f)).collect();
    insta::assert_snapshot!("gpt.llvm-asm-matmul-and-gelu", focus.join("\n"));
}

/// The assembly of function `name`: from its label to its `.size` directive.
#[cfg(feature = "llvm")]
fn asm_function<'a>(asm: &'a str, name: &str) -> &'a str {
    let start = asm.find(&format!("\n{name}:\n")).unwrap_or_else(|| panic!("no function {name}"));
    let end = asm[start..].find("\t.size").map_or(asm.len(), |e| start + e);
    &asm[start + 1..end]
}
