//! The MLIR→LLVM backend (cargo feature `llvm`; needs LLVM 19 and MLIR 19).
//!
//! kernel IR → MLIR text ([`mlir`]) → parsed and verified by MLIR (`melior`) → an MLIR pass
//! pipeline down to the LLVM dialect → LLVM IR (MLIR's translation) → `inkwell`: the
//! `default<O3>` LLVM pipeline and a target machine → an ELF relocatable object, loaded by the
//! same runtime as the Cranelift objects. On x86-64, LLVM's loop and SLP vectorizers turn the
//! kernels' innermost loops into 256-bit AVX2 code, and float multiplies and adds are marked
//! `contract` so that they become FMAs. Functions carry `no-builtins`, so loops are never turned
//! into `memset`/`memcpy` calls: the only external symbol an object may reference is `fmod`
//! (float `%`), which the runtime provides.
//!
//! What is target-specific is one [`LlvmTarget`] value (the MLIR pass pipeline, the LLVM triple,
//! CPU and features, the kernel ABI and the code object's format) and nothing else: [`lower`]
//! runs every target through the same stages. The GPU targets ([`gpu`]: NVPTX sm_80/sm_90/sm_90a,
//! AMDGPU gfx90a/gfx942/gfx1100) build `gpu.func` kernels in a `gpu.module`, lower it with
//! `convert-gpu-to-nvvm` / `convert-gpu-to-rocdl`, and compile its body to PTX text or to an
//! AMDGPU object that `ld.lld` links into an HSA code object. A failure at any stage names the kernel, the stage and keeps
//! the MLIR module that failed ([`CodegenError::Stage`]), which `kiln compile --emit mlir` prints.

pub mod emulate;
pub mod gpu;
pub mod mlir;

use crate::kernel::Kernel;
use crate::target::{kernel_symbols, Backend, CodeObject, CodegenError, CodegenOptions, Listing};
use inkwell::attributes::AttributeLoc;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetTriple};
use melior::dialect::DialectRegistry;
use melior::ir::block::BlockLike;
use melior::ir::{Location, Module, RegionLike};
use melior::pass::PassManager;
use melior::utility::{
    parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes,
};
use mlir::KernelAbi;
use std::sync::{Mutex, Once};

/// Everything that differs between the targets of the MLIR→LLVM path.
#[derive(Clone, Copy, Debug)]
pub struct LlvmTarget {
    /// kiln's name of the target (`--target`).
    pub name: &'static str,
    /// The MLIR pass pipeline from kiln's MLIR to the LLVM dialect.
    pub pipeline: &'static str,
    pub triple: &'static str,
    pub cpu: &'static str,
    pub features: &'static str,
    /// Features the runtime must find on the CPU before it loads the code.
    pub cpu_features: &'static [&'static str],
    /// Registers the LLVM code generator of the target.
    pub initialize: fn(),
    /// How kernels are called: CPU functions, or GPU kernels in a `gpu.module` (whose lowered
    /// body is what LLVM compiles).
    pub abi: KernelAbi,
    /// What the code object is.
    pub format: ObjectFormat,
}

/// The kind of code object a target's code becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectFormat {
    /// An ELF relocatable object, loaded by the runtime's own ELF loader (CPUs).
    ElfRelocatable,
    /// PTX text, JIT-compiled by the CUDA driver when the module is loaded (NVIDIA).
    Ptx,
    /// An HSA code object: the AMDGPU object linked by `ld.lld -shared`, loaded with
    /// `hipModuleLoadData` (AMD).
    Hsaco,
}

impl ObjectFormat {
    /// The format's name in the artifact's manifest.
    pub fn name(self) -> &'static str {
        match self {
            ObjectFormat::ElfRelocatable => "elf-relocatable",
            ObjectFormat::Ptx => "ptx",
            ObjectFormat::Hsaco => "hsaco",
        }
    }
}

/// The host-CPU pipeline: structured control flow, `math` and `arith` to the LLVM dialect.
pub const CPU_PIPELINE: &str = "builtin.module(arith-expand,convert-scf-to-cf,convert-math-to-llvm,convert-arith-to-llvm,convert-cf-to-llvm,convert-func-to-llvm,reconcile-unrealized-casts)";

/// x86-64-v3: AVX2 and FMA, the baseline of every x86-64 CPU since 2013–2015.
pub const X86_64: LlvmTarget = LlvmTarget {
    name: "x86_64",
    pipeline: CPU_PIPELINE,
    triple: "x86_64-unknown-linux-gnu",
    cpu: "x86-64-v3",
    features: "+avx2,+fma",
    cpu_features: &["avx2", "fma"],
    initialize: || Target::initialize_x86(&InitializationConfig::default()),
    abi: KernelAbi::Cpu,
    format: ObjectFormat::ElfRelocatable,
};

/// Every target of the backend: the CPU, then the GPUs.
pub const TARGETS: &[LlvmTarget] = &[X86_64, gpu::SM_80, gpu::SM_90, gpu::SM_90A, gpu::GFX90A, gpu::GFX942, gpu::GFX1100];

/// The backend. With [`CodegenOptions::fp_contract`] (the default) float multiplies and adds
/// may be fused into FMAs; without it every operation rounds like the evaluator and the
/// Cranelift backend, bit for bit.
pub struct LlvmBackend;

/// A stage of the MLIR→LLVM path, as named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LowerStage {
    /// Kernel IR → MLIR text.
    Build,
    /// Parsing and verifying the MLIR module.
    Verify,
    /// The MLIR pass pipeline to the LLVM dialect.
    Pipeline,
    /// The LLVM dialect → LLVM IR.
    Translate,
    /// LLVM's optimizer and code generator.
    Codegen,
    /// Linking the code object (`ld.lld`, AMD GPUs).
    Link,
}

impl LowerStage {
    pub fn name(self) -> &'static str {
        match self {
            LowerStage::Build => "building MLIR",
            LowerStage::Verify => "MLIR verification",
            LowerStage::Pipeline => "the MLIR pass pipeline",
            LowerStage::Translate => "translation to LLVM IR",
            LowerStage::Codegen => "LLVM code generation",
            LowerStage::Link => "linking the code object",
        }
    }
}

/// The products of [`lower`].
pub struct Lowered {
    /// The code object: an ELF object, PTX text or an HSA code object (see [`ObjectFormat`]).
    pub object: Vec<u8>,
    /// The module after the MLIR pipeline (LLVM dialect).
    pub lowered_mlir: String,
    /// The LLVM IR after `default<O3>`.
    pub llvm_ir: String,
    /// The assembly, when asked for.
    pub asm: Option<String>,
}

/// The MLIR function of each kernel (before the pipeline), in kernel order, for CPU targets.
pub fn mlir_functions(kernels: &[Kernel], contract: bool) -> Result<Vec<String>, CodegenError> {
    mlir_functions_for(kernels, contract, KernelAbi::Cpu)
}

/// The MLIR function of each kernel (before the pipeline), in kernel order, for `abi`.
/// On GPUs each kernel is scheduled first ([`crate::kernel::gpu_schedule::schedule`]): one
/// thread per element where that is sound.
pub fn mlir_functions_for(kernels: &[Kernel], contract: bool, abi: KernelAbi) -> Result<Vec<String>, CodegenError> {
    kernels
        .iter()
        .zip(kernel_symbols(kernels))
        .map(|(k, sym)| {
            let scheduled;
            let (k, threads_per_item) = match abi {
                KernelAbi::Cpu => (k, kiln_ir::Dim::constant(1)),
                KernelAbi::Gpu { matrix, .. } => {
                    let layout = matrix.unwrap_or(crate::kernel::MmaLayout::Nvidia16x8);
                    scheduled = crate::kernel::gpu_schedule::schedule_for(k, layout);
                    let per_item = scheduled.grid.threads_per_item().cloned().unwrap_or(kiln_ir::Dim::constant(1));
                    (&scheduled.kernel, per_item)
                }
            };
            mlir::kernel_function_for(k, &sym, contract, abi, &threads_per_item).map_err(|reason| CodegenError::Stage {
                backend: "llvm".into(),
                kernel: k.name.clone(),
                stage: LowerStage::Build.name(),
                reason,
                module: String::new(),
            })
        })
        .collect()
}

/// The MLIR module of `kernels` (before the pipeline) for the CPU, with FMA contraction.
pub fn mlir_module(kernels: &[Kernel]) -> Result<String, CodegenError> {
    Ok(module_of(&mlir_functions(kernels, true)?, KernelAbi::Cpu))
}

/// The module holding `functions`: a plain module on CPUs; on GPUs a `gpu.module @kiln`
/// inside a module marked `gpu.container_module`.
fn module_of<S: AsRef<str>>(functions: &[S], abi: KernelAbi) -> String {
    let gpu = matches!(abi, KernelAbi::Gpu { .. });
    let mut text = String::from(if gpu {
        "module attributes {gpu.container_module} {\n  gpu.module @kiln {\n"
    } else {
        "module {\n"
    });
    for f in functions {
        text.push_str(f.as_ref());
    }
    text.push_str(if gpu { "  }\n}\n" } else { "}\n" });
    text
}

/// The version of the LLVM kiln is linked with (`(19, 1, 7)` from Debian's packages).
pub fn llvm_version() -> (u32, u32, u32) {
    inkwell::support::get_llvm_version()
}

static REGISTER: Once = Once::new();

/// Lowers the MLIR functions `functions` (named by `kernels`, in the same order) for `target`.
/// On failure, finds the first kernel whose function alone fails the same stage and reports it
/// with its module; a failure no single kernel reproduces is reported for the whole module.
pub fn lower(
    kernels: &[&str],
    functions: &[String],
    target: &LlvmTarget,
    listings: bool,
) -> Result<Lowered, CodegenError> {
    lower_module(&module_of(functions, target.abi), target, listings).map_err(|(stage, reason)| {
        let culprit = kernels.iter().zip(functions).find_map(|(name, f)| {
            let alone = module_of(&[f], target.abi);
            match lower_module(&alone, target, false) {
                Err((s, r)) if s == stage => Some((name.to_string(), r, alone)),
                _ => None,
            }
        });
        let (kernel, reason, module) =
            culprit.unwrap_or_else(|| ("(the whole module)".into(), reason, module_of(functions, target.abi)));
        CodegenError::Stage { backend: "llvm".into(), kernel, stage: stage.name(), reason, module }
    })
}

type StageResult<T> = Result<T, (LowerStage, String)>;

/// Every stage from MLIR text to an object, for one module.
fn lower_module(text: &str, target: &LlvmTarget, listings: bool) -> StageResult<Lowered> {
    REGISTER.call_once(register_all_passes);
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let context = melior::Context::new();
    context.append_dialect_registry(&registry);
    context.load_all_available_dialects();
    register_all_llvm_translations(&context);
    let diagnostics = Mutex::new(Vec::<String>::new());
    let id = context.attach_diagnostic_handler(|d| {
        diagnostics.lock().unwrap().push(d.to_string());
        true
    });
    let said = || diagnostics.lock().unwrap().join("; ");
    let verify = |reason: &str| (LowerStage::Verify, format!("{reason}: {}", said()));
    let mut module = Module::parse(&context, text).ok_or_else(|| verify("the module does not parse"))?;
    if !module.as_operation().verify() {
        return Err(verify("the module does not verify"));
    }
    let pm = PassManager::new(&context);
    parse_pass_pipeline(pm.as_operation_pass_manager(), target.pipeline)
        .map_err(|e| (LowerStage::Pipeline, format!("bad pipeline `{}`: {e}", target.pipeline)))?;
    pm.run(&mut module).map_err(|e| (LowerStage::Pipeline, format!("{e}: {}", said())))?;
    context.detach_diagnostic_handler(id);
    let lowered_mlir = module.as_operation().to_string();

    // On GPUs LLVM compiles the body of the lowered `gpu.module`: its functions move into a
    // module of their own.
    let translated = match target.abi {
        KernelAbi::Cpu => module,
        KernelAbi::Gpu { .. } => gpu_module_body(&context, &module)
            .ok_or_else(|| (LowerStage::Translate, "the lowered module holds no `gpu.module`".to_string()))?,
    };
    let ictx = inkwell::context::Context::create();
    // SAFETY: MLIR translates the module into inkwell's own context; the LLVM C types MLIR and
    // inkwell use are the same pointers.
    let raw =
        unsafe { mlir_sys::mlirTranslateModuleToLLVMIR(translated.as_operation().to_raw(), ictx.raw() as *mut _) };
    if raw.is_null() {
        return Err((LowerStage::Translate, "MLIR could not translate the LLVM dialect to LLVM IR".into()));
    }
    // SAFETY: `raw` is a fresh module owned by `ictx`, handed over to inkwell here.
    let m = unsafe { inkwell::module::Module::new(raw as *mut _) };
    let (object, llvm_ir, asm) =
        optimize_and_emit(&m, &ictx, target, listings).map_err(|e| (LowerStage::Codegen, e))?;
    let object = match target.format {
        ObjectFormat::Hsaco => gpu::link_hsaco(&object).map_err(|e| (LowerStage::Link, e))?,
        ObjectFormat::ElfRelocatable | ObjectFormat::Ptx => object,
    };
    Ok(Lowered { object, lowered_mlir, llvm_ir, asm })
}

/// A new module holding copies of the operations of the first `gpu.module` in `module`, with
/// kiln's definitions ([`gpu::device_function`]) in place of declared device-library functions.
fn gpu_module_body<'c>(context: &'c melior::Context, module: &Module<'c>) -> Option<Module<'c>> {
    let mut op = module.body().first_operation();
    while let Some(o) = op {
        if o.name().as_string_ref().as_str() == Ok("gpu.module") {
            let out = Module::new(Location::unknown(context));
            let mut inner = o.region(0).ok()?.first_block()?.first_operation();
            while let Some(i) = inner {
                let name = i.name().as_string_ref().as_str().unwrap_or_default().to_string();
                let declared = (name == "llvm.func" && i.region(0).ok()?.first_block().is_none())
                    .then(|| i.attribute("sym_name").ok())
                    .flatten()
                    .and_then(|a| melior::ir::attribute::StringAttribute::try_from(a).ok())
                    .and_then(|a| gpu::device_function(a.value()));
                if let Some(definition) = declared {
                    let parsed = Module::parse(context, &format!("module {{\n{definition}\n}}"))?;
                    out.body().append_operation((*parsed.body().first_operation()?).clone());
                } else if !name.starts_with("gpu.") {
                    out.body().append_operation((*i).clone());
                }
                inner = next_in_block(i);
            }
            return Some(out);
        }
        op = next_in_block(o);
    }
    None
}

/// The operation after `op` in its block, borrowed for as long as `op` (melior's own
/// `next_in_block` borrows only for as long as the reference to `op`).
fn next_in_block<'c, 'a>(op: melior::ir::OperationRef<'c, 'a>) -> Option<melior::ir::OperationRef<'c, 'a>> {
    // SAFETY: the next operation lives in the same block as `op`, as long as `op` does.
    unsafe { melior::ir::OperationRef::from_option_raw(mlir_sys::mlirOperationGetNextInBlock(op.to_raw())) }
}

/// `default<O3>` and the target machine: (object, LLVM IR, assembly when `listings`).
fn optimize_and_emit(
    m: &inkwell::module::Module,
    ictx: &inkwell::context::Context,
    target: &LlvmTarget,
    listings: bool,
) -> Result<(Vec<u8>, String, Option<String>), String> {
    let no_builtins = ictx.create_string_attribute("no-builtins", "");
    for f in m.get_functions() {
        f.add_attribute(AttributeLoc::Function, no_builtins);
    }
    (target.initialize)();
    let triple = TargetTriple::create(target.triple);
    let llvm_target = Target::from_triple(&triple).map_err(|e| e.to_string())?;
    let tm = llvm_target
        .create_target_machine(
            &triple,
            target.cpu,
            target.features,
            inkwell::OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Small,
        )
        .ok_or_else(|| format!("LLVM has no target machine for {} ({})", target.triple, target.cpu))?;
    m.set_triple(&triple);
    m.set_data_layout(&tm.get_target_data().get_data_layout());
    m.run_passes("default<O3>", &tm, inkwell::passes::PassBuilderOptions::create()).map_err(|e| e.to_string())?;
    let ir = m.print_to_string().to_string();
    if target.format == ObjectFormat::Ptx {
        // The code object is the assembly: PTX text.
        let buf = tm.write_to_memory_buffer(m, FileType::Assembly).map_err(|e| e.to_string())?;
        let ptx = String::from_utf8_lossy(buf.as_slice()).into_owned();
        return Ok((ptx.clone().into_bytes(), ir, Some(ptx)));
    }
    let asm = if listings {
        // Code generation rewrites the module it runs on (AMDGPU's control-flow annotations
        // cannot be selected twice): the listing and the object each come from a copy, made
        // alike, so that the listing shows the object's code.
        let buf = tm.write_to_memory_buffer(&m.clone(), FileType::Assembly).map_err(|e| e.to_string())?;
        Some(String::from_utf8_lossy(buf.as_slice()).into_owned())
    } else {
        None
    };
    let obj = tm.write_to_memory_buffer(&m.clone(), FileType::Object).map_err(|e| e.to_string())?;
    Ok((obj.as_slice().to_vec(), ir, asm))
}

impl Backend for LlvmBackend {
    fn name(&self) -> &'static str {
        "llvm"
    }

    fn targets(&self) -> &'static [&'static str] {
        &["x86_64", "sm_80", "sm_90", "sm_90a", "gfx90a", "gfx942", "gfx1100"]
    }

    fn compile(&self, kernels: &[Kernel], target: &str, opts: &CodegenOptions) -> Result<CodeObject, CodegenError> {
        let Some(t) = TARGETS.iter().find(|t| t.name == target) else {
            return Err(CodegenError::UnsupportedTarget {
                backend: self.name().into(),
                target: target.into(),
                supported: self.targets().join(", "),
            });
        };
        // Without matrix instructions a GPU target runs the same tiles per thread.
        let mut chosen = *t;
        if let KernelAbi::Gpu { private_space, matrix: Some(_) } = t.abi {
            if !opts.matrix_instructions {
                chosen.abi = KernelAbi::Gpu { private_space, matrix: None };
            }
        }
        let t = &chosen;
        let functions = mlir_functions_for(kernels, opts.fp_contract, t.abi)?;
        let names: Vec<&str> = kernels.iter().map(|k| k.name.as_str()).collect();
        let out = lower(&names, &functions, t, opts.listings)?;
        let built = module_of(&functions, t.abi);
        // The assembly's stage name: `ptx` and `amdgcn` on GPUs, `asm` on CPUs.
        let asm_stage = match t.format {
            ObjectFormat::ElfRelocatable => "asm",
            ObjectFormat::Ptx => "ptx",
            ObjectFormat::Hsaco => "amdgcn",
        };
        Ok(CodeObject {
            target: target.into(),
            format: t.format.name().into(),
            bytes: out.object,
            symbols: kernel_symbols(kernels),
            cpu_features: t.cpu_features.iter().map(|f| f.to_string()).collect(),
            listings: [
                (
                    "mlir",
                    Listing::Whole(format!("// as built\n{built}\n// after {}\n{}", t.pipeline, out.lowered_mlir)),
                ),
                ("llvm", Listing::Whole(out.llvm_ir)),
            ]
            .into_iter()
            .chain(out.asm.map(|a| (asm_stage, Listing::Whole(a))))
            .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "  func.func @ok(%a: i64) -> i64 {\n    return %a : i64\n  }\n";
    /// Parses, but does not verify: the returned type is not the function's result type.
    const BAD: &str = "  func.func @bad(%a: i64) -> i32 {\n    return %a : i64\n  }\n";

    #[test]
    fn a_failing_kernel_is_named_with_its_stage_and_module() {
        let funcs = [GOOD.to_string(), BAD.to_string()];
        let e = lower(&["first", "second"], &funcs, &X86_64, false).err().expect("the module is invalid");
        let CodegenError::Stage { kernel, stage, reason, module, .. } = &e else { panic!("{e}") };
        assert_eq!(kernel, "second");
        assert_eq!(*stage, LowerStage::Verify.name());
        assert!(module.contains("@bad") && !module.contains("@ok"), "{module}");
        assert!(!reason.is_empty());
        let shown = e.to_string();
        assert!(shown.contains("second") && shown.contains("verification"), "{shown}");
    }

    #[test]
    fn a_valid_module_lowers_to_an_object() {
        let out = lower(&["first"], &[GOOD.to_string()], &X86_64, true).unwrap();
        assert!(out.object.starts_with(b"\x7fELF"));
        assert!(out.lowered_mlir.contains("llvm.func @ok"));
        assert!(out.asm.unwrap().contains("ok:"));
    }
}
