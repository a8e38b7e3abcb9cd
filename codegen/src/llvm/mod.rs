//! The MLIR→LLVM backend (cargo feature `llvm`; needs LLVM 19 and MLIR 19).
//!
//! kernel IR → MLIR text ([`mlir`]) → parsed and verified by MLIR (`melior`) → the pass
//! pipeline [`PIPELINE`] down to the LLVM dialect → LLVM IR (MLIR's translation) → `inkwell`:
//! the `default<O3>` LLVM pipeline and a target machine (x86-64-v3: AVX2 and FMA) → an ELF
//! relocatable object, loaded by the same runtime as the Cranelift objects. LLVM's loop
//! vectorizer turns the kernels' innermost loops into 256-bit vector code. Functions carry
//! `no-builtins`, so loops are never turned into `memset`/`memcpy` calls: the only external
//! symbol an object may reference is `fmod` (float `%`), which the runtime provides.
//!
//! Everything up to the LLVM IR is target-neutral; the x86-64 specifics are the target machine
//! below. The NVPTX and AMDGPU targets will reuse [`mlir`] and [`PIPELINE`]'s structure.

pub mod mlir;

use crate::kernel::Kernel;
use crate::target::{kernel_symbols, Backend, CodeObject, CodegenError, Listing};
use inkwell::attributes::AttributeLoc;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetTriple};
use melior::dialect::DialectRegistry;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::{
    parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes,
};
use std::sync::Once;

/// The MLIR pass pipeline from kiln's MLIR to the LLVM dialect.
pub const PIPELINE: &str = "builtin.module(arith-expand,convert-scf-to-cf,convert-math-to-llvm,convert-arith-to-llvm,convert-cf-to-llvm,convert-func-to-llvm,reconcile-unrealized-casts)";

pub struct LlvmBackend;

fn backend_error(reason: String) -> CodegenError {
    CodegenError::Backend { backend: "llvm".into(), reason }
}

/// The MLIR module of `kernels` (before the pipeline), with each kernel's symbol.
pub fn mlir_module(kernels: &[Kernel]) -> Result<String, CodegenError> {
    let symbols = kernel_symbols(kernels);
    let mut text = String::from("module {\n");
    for (k, sym) in kernels.iter().zip(&symbols) {
        let f = mlir::kernel_function(k, sym).map_err(|reason| CodegenError::Kernel {
            backend: "llvm".into(),
            kernel: k.name.clone(),
            reason,
        })?;
        text.push_str(&f);
    }
    text.push_str("}\n");
    Ok(text)
}

static REGISTER: Once = Once::new();

/// Compiles MLIR text to an x86-64 object; returns (object, the MLIR after the pipeline, the
/// LLVM IR after `default<O3>`, the assembly when `listings`).
fn compile_mlir(text: &str, listings: bool) -> Result<(Vec<u8>, String, String, Option<String>), CodegenError> {
    REGISTER.call_once(register_all_passes);
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let context = melior::Context::new();
    context.append_dialect_registry(&registry);
    context.load_all_available_dialects();
    register_all_llvm_translations(&context);
    let diagnostics = std::sync::Mutex::new(Vec::<String>::new());
    let id = context.attach_diagnostic_handler(|d| {
        diagnostics.lock().unwrap().push(d.to_string());
        true
    });
    let parsed = Module::parse(&context, text);
    let mut module = parsed.ok_or_else(|| {
        backend_error(format!("MLIR did not parse: {}\n{text}", diagnostics.lock().unwrap().join("; ")))
    })?;
    if !module.as_operation().verify() {
        return Err(backend_error(format!(
            "MLIR verification failed: {}\n{text}",
            diagnostics.lock().unwrap().join("; ")
        )));
    }
    let pm = PassManager::new(&context);
    parse_pass_pipeline(pm.as_operation_pass_manager(), PIPELINE)
        .map_err(|e| backend_error(format!("pass pipeline: {e}")))?;
    pm.run(&mut module)
        .map_err(|e| backend_error(format!("MLIR pipeline failed: {e}: {}", diagnostics.lock().unwrap().join("; "))))?;
    context.detach_diagnostic_handler(id);
    let lowered = module.as_operation().to_string();

    let ictx = inkwell::context::Context::create();
    // SAFETY: the module was translated by MLIR into inkwell's own context; the LLVM and MLIR
    // C types are the same pointers.
    let raw = unsafe { mlir_sys::mlirTranslateModuleToLLVMIR(module.as_operation().to_raw(), ictx.raw() as *mut _) };
    if raw.is_null() {
        return Err(backend_error("translating the LLVM dialect to LLVM IR failed".into()));
    }
    let m = unsafe { inkwell::module::Module::new(raw as *mut _) };
    let no_builtins = ictx.create_string_attribute("no-builtins", "");
    for f in m.get_functions() {
        f.add_attribute(AttributeLoc::Function, no_builtins);
    }
    Target::initialize_x86(&InitializationConfig::default());
    let triple = TargetTriple::create("x86_64-unknown-linux-gnu");
    let target = Target::from_triple(&triple).map_err(|e| backend_error(e.to_string()))?;
    let tm = target
        .create_target_machine(
            &triple,
            "x86-64-v3",
            "+avx2,+fma",
            inkwell::OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Small,
        )
        .ok_or_else(|| backend_error("no x86-64 target machine".into()))?;
    m.set_triple(&triple);
    m.set_data_layout(&tm.get_target_data().get_data_layout());
    m.run_passes("default<O3>", &tm, inkwell::passes::PassBuilderOptions::create())
        .map_err(|e| backend_error(format!("LLVM passes: {e}")))?;
    let ir = m.print_to_string().to_string();
    let asm = if listings {
        let buf = tm.write_to_memory_buffer(&m, FileType::Assembly).map_err(|e| backend_error(e.to_string()))?;
        Some(String::from_utf8_lossy(buf.as_slice()).into_owned())
    } else {
        None
    };
    let obj = tm.write_to_memory_buffer(&m, FileType::Object).map_err(|e| backend_error(e.to_string()))?;
    Ok((obj.as_slice().to_vec(), lowered, ir, asm))
}

impl Backend for LlvmBackend {
    fn name(&self) -> &'static str {
        "llvm"
    }

    fn targets(&self) -> &'static [&'static str] {
        &["x86_64"]
    }

    fn compile(&self, kernels: &[Kernel], target: &str, listings: bool) -> Result<CodeObject, CodegenError> {
        if target != "x86_64" {
            return Err(CodegenError::UnsupportedTarget {
                backend: self.name().into(),
                target: target.into(),
                supported: self.targets().join(", "),
            });
        }
        let text = mlir_module(kernels)?;
        let (bytes, lowered, ir, asm) = compile_mlir(&text, listings)?;
        Ok(CodeObject {
            target: target.into(),
            format: "elf-relocatable".into(),
            bytes,
            symbols: kernel_symbols(kernels),
            cpu_features: vec!["avx2".into(), "fma".into()],
            listings: [
                ("mlir", Listing::Whole(format!("// as built\n{text}\n// after {PIPELINE}\n{lowered}"))),
                ("llvm", Listing::Whole(ir)),
            ]
            .into_iter()
            .chain(asm.map(|a| ("asm", Listing::Whole(a))))
            .collect(),
        })
    }
}
