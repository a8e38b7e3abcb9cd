//! # The Cranelift backend: kernel IR → Cranelift IR → native code
//!
//! Each [`Kernel`] becomes one exported function with the C calling convention
//!
//! ```c
//! void kernel(uint8_t *const *bufs, const int64_t *syms, int64_t start, int64_t end);
//! ```
//!
//! `bufs[i]` is the base address of `kernel.buffers[i]`, `syms[j]` the value of graph symbol
//! `j` (`Expr::Sym(SymId(j))`). The kernel's first statement is its outermost (parallel) loop;
//! the function runs iterations `max(start, 0) .. min(end, extent)` of it, so any set of calls
//! whose ranges cover `0..extent` computes the kernel (see [`crate::kernel`]). Each buffer must
//! be aligned to its element size (vector accesses need no more).
//!
//! ## Targets
//!
//! [`compile_object`] writes an ELF relocatable for `x86_64-unknown-linux-gnu` or
//! `aarch64-unknown-linux-gnu`. The x86-64 baseline is x86-64-v2 (SSE4.2 + POPCNT, Cranelift's
//! `nehalem` preset): SSE4.1 is what lets `floor`/`ceil`/`nearest` compile to `roundss`
//! instead of libm calls. [`X86Level::V3`] adds AVX, AVX2, FMA, BMI1/2 and LZCNT (Cranelift
//! never fuses a multiply and an add by itself, so results do not depend on the level). The code
//! references no symbol at all — no libm, no probestack, no data objects: constants live in
//! each function's constant pool — so a loader needs no externs; [`define_kernel`] checks it.
//!
//! ## Semantics
//!
//! The generated code computes exactly what [`crate::kernel::eval`] computes (the reference
//! interpreter's scalar semantics), bit for bit, with these documented exceptions where the
//! evaluator reports an error instead of a value:
//! - integer `div`, `//` and `%` by zero give 0 (never trap);
//! - integer `pow` with a negative exponent uses the exponent's bits as an unsigned number;
//! - out-of-bounds loads and stores are not checked (lowering keeps every index in bounds).
//!
//! Values live in registers at their own width (`bool`, `u8`, `i8` as 8-bit, index as 64-bit);
//! f16 and bf16 live as f32 values that are exactly representable in their type, and each
//! operation rounds its f32 result back (`float.rs` explains why that equals the evaluator's
//! computation in f64). Float `//`, `%` (an exact `fmod` by integer long division) and `rsqrt`
//! are computed in f64, like the evaluator. Float `max`/`min` give NaN when either operand is
//! NaN and otherwise `if b > a { b } else { a }` (compare and select: x86's `maxss` differs).
//! The evaluator's own quirks are reproduced: its rounding to f16 goes through f32 (the `half`
//! crate uses F16C where the CPU has it — on a CPU without F16C the evaluator rounds f64 to
//! f16 directly, and f64→f16 casts could then differ from this code by one double rounding);
//! its rounding to bf16 keeps only the upper 32 bits of an f64 before rounding to nearest
//! even; it holds f32 values as f64, so a bitcast of a signaling NaN to i32 sees it quieted.
//! Otherwise NaN payloads and signs are not specified: a NaN is produced exactly where the
//! evaluator produces one.
//!
//! Transcendentals (`exp log log1p expm1 tanh sigmoid erf sin cos`, float `pow`) must have been
//! rewritten by [`crate::kernel::math::expand`]; otherwise [`CraneliftError::Unexpanded`].
//!
//! ## Vectorization
//!
//! Innermost loops marked [`LoopKind::Vector`](crate::kernel::LoopKind) whose bodies are only
//! `let`s and `store`s of f32 elementwise arithmetic over contiguous (`base + i`) or
//! loop-invariant (broadcast) loads become an f32x4 loop plus a scalar remainder loop; see
//! `vector.rs` for what qualifies. Every other loop is scalar. (Loop-invariant loads inside a
//! loop are not hoisted: Cranelift moves only loads marked `can_move`, which could then run
//! ahead of a loop guard on an empty buffer.)

mod float;
mod func;
mod scalar;
mod vector;

use crate::kernel::Kernel;
use cranelift_codegen::ir::{AbiParam, Function, UserFuncName};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_module::{FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};

/// Errors of the Cranelift backend.
#[derive(Debug, thiserror::Error)]
pub enum CraneliftError {
    #[error(
        "kernel `{kernel}`: `{op}` must be rewritten by kernel::math::expand before Cranelift \
         code generation"
    )]
    Unexpanded { kernel: String, op: String },
    #[error("kernel `{kernel}`: {what} is not supported by the Cranelift backend")]
    Unsupported { kernel: String, what: String },
    #[error("kernel `{kernel}` is malformed: {reason}")]
    Malformed { kernel: String, reason: String },
    #[error("unsupported target `{triple}`: {reason}")]
    Target { triple: String, reason: String },
    #[error("kernel `{kernel}`: Cranelift failed: {message}")]
    Codegen { kernel: String, message: String },
    #[error("kernel `{kernel}`: the generated code references external symbols ({symbols})")]
    ExternalReference { kernel: String, symbols: String },
    #[error("writing the object file failed: {0}")]
    Object(String),
}

/// The x86-64 feature level code is compiled for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum X86Level {
    /// x86-64-v2: SSE4.2 and POPCNT (Cranelift's `nehalem` preset).
    #[default]
    V2,
    /// x86-64-v3: v2 plus AVX, AVX2, FMA, BMI1, BMI2 and LZCNT.
    V3,
}

/// Options of [`compile_object`].
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Cranelift's `opt_level=speed` (default) or `none`.
    pub optimize: bool,
    /// Runs Cranelift's IR verifier on every function (cheap; default on).
    pub verify: bool,
    /// Collects Cranelift's disassembly of each function into [`CompiledObject::asm`].
    pub disasm: bool,
    pub x86_level: X86Level,
    /// Position-independent code (default). The code never references a symbol, so this
    /// changes nothing in it; Cranelift's JIT (used by the tests) requires it off.
    pub pic: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { optimize: true, verify: true, disasm: false, x86_level: X86Level::V2, pic: true }
    }
}

/// The result of [`compile_object`].
#[derive(Clone, Debug)]
pub struct CompiledObject {
    /// An ELF relocatable object with one global function per kernel.
    pub bytes: Vec<u8>,
    /// The symbol of each kernel, in kernel order.
    pub symbols: Vec<String>,
    /// The Cranelift IR of each kernel as generated (before Cranelift's optimizations).
    pub clif: Vec<String>,
    /// Cranelift's disassembly (post-register-allocation VCode) of each kernel, when
    /// [`CompileOptions::disasm`] is set.
    pub asm: Option<Vec<String>>,
}

/// Target triples [`compile_object`] accepts.
pub const TRIPLES: &[&str] = &["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

/// Builds the Cranelift ISA for `triple` with kiln's settings.
pub fn target_isa(triple: &str, options: &CompileOptions) -> Result<OwnedTargetIsa, CraneliftError> {
    let err = |reason: String| CraneliftError::Target { triple: triple.to_string(), reason };
    if !TRIPLES.contains(&triple) {
        return Err(err(format!("supported triples are {}", TRIPLES.join(", "))));
    }
    let mut flags = settings::builder();
    let set =
        |f: &mut settings::Builder, k: &str, v: &str| f.set(k, v).map_err(|e| err(format!("setting {k}={v}: {e}")));
    set(&mut flags, "opt_level", if options.optimize { "speed" } else { "none" })?;
    set(&mut flags, "enable_verifier", if options.verify { "true" } else { "false" })?;
    set(&mut flags, "is_pic", if options.pic { "true" } else { "false" })?;
    set(&mut flags, "enable_probestack", "false")?;
    set(&mut flags, "unwind_info", "false")?;
    let mut isa = cranelift_codegen::isa::lookup_by_name(triple).map_err(|e| err(e.to_string()))?;
    if triple.starts_with("x86_64") {
        let presets: &[&str] = match options.x86_level {
            X86Level::V2 => &["nehalem"],
            X86Level::V3 => &["haswell"],
        };
        for p in presets {
            isa.enable(p).map_err(|e| err(format!("enabling {p}: {e}")))?;
        }
    }
    isa.finish(settings::Flags::new(flags)).map_err(|e| err(e.to_string()))
}

/// Compiles `kernels` (transcendentals already expanded) into one relocatable object for
/// `triple` (one of [`TRIPLES`]).
pub fn compile_object(
    kernels: &[Kernel],
    triple: &str,
    options: &CompileOptions,
) -> Result<CompiledObject, CraneliftError> {
    let isa = target_isa(triple, options)?;
    let builder = ObjectBuilder::new(isa, "kiln", forbidden_libcall_names())
        .map_err(|e| CraneliftError::Object(e.to_string()))?;
    let mut module = ObjectModule::new(builder);
    let mut symbols = Vec::new();
    let mut clif = Vec::new();
    let mut asm = Vec::new();
    for k in kernels {
        let d = define(&mut module, k, options.disasm)?;
        symbols.push(d.symbol);
        clif.push(d.clif);
        asm.push(d.disasm.unwrap_or_default());
    }
    let bytes = module.finish().emit().map_err(|e| CraneliftError::Object(e.to_string()))?;
    Ok(CompiledObject { bytes, symbols, clif, asm: options.disasm.then_some(asm) })
}

/// One kernel defined in a module.
#[derive(Clone, Debug)]
pub struct DefinedKernel {
    pub id: FuncId,
    pub symbol: String,
    pub clif: String,
    pub disasm: Option<String>,
}

/// Declares and defines `kernel` as an exported function of `module` (an object module, or a
/// JIT module in tests); returns its id. Its symbol is `kernel.name` sanitized plus a suffix
/// that makes it unique in the module.
pub fn define_kernel<M: Module>(module: &mut M, kernel: &Kernel) -> Result<FuncId, CraneliftError> {
    Ok(define(module, kernel, false)?.id)
}

/// [`define_kernel`] returning the symbol, the generated CLIF and optionally the disassembly.
pub fn define<M: Module>(module: &mut M, kernel: &Kernel, disasm: bool) -> Result<DefinedKernel, CraneliftError> {
    let symbol = unique_symbol(module, &kernel.name);
    let mut sig = module.make_signature();
    let ptr = module.target_config().pointer_type();
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(cranelift_codegen::ir::types::I64));
    sig.params.push(AbiParam::new(cranelift_codegen::ir::types::I64));
    let codegen = |message: String| CraneliftError::Codegen { kernel: kernel.name.clone(), message };
    let id = module.declare_function(&symbol, Linkage::Export, &sig).map_err(|e| codegen(e.to_string()))?;
    let mut func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    let mut fctx = FunctionBuilderContext::new();
    func::build(&mut func, &mut fctx, kernel, module.target_config())?;
    let clif = func.display().to_string();
    let mut ctx = Context::for_function(func);
    ctx.set_disasm(disasm);
    module.define_function(id, &mut ctx).map_err(|e| {
        codegen(match &e {
            cranelift_module::ModuleError::Compilation(cranelift_codegen::CodegenError::Verifier(errors)) => {
                format!("verifier: {errors}\n{clif}")
            }
            other => format!("{other:?}"),
        })
    })?;
    let compiled = ctx.compiled_code().ok_or_else(|| codegen("no compiled code".into()))?;
    if !compiled.buffer.relocs().is_empty() {
        let names: Vec<String> = compiled.buffer.relocs().iter().map(|r| format!("{:?}", r.target)).collect();
        return Err(CraneliftError::ExternalReference { kernel: kernel.name.clone(), symbols: names.join(", ") });
    }
    let disasm = compiled.vcode.clone();
    Ok(DefinedKernel { id, symbol, clif, disasm })
}

/// Libcall names that cannot resolve: the code must never need one (checked after each
/// function anyway).
fn forbidden_libcall_names() -> Box<dyn Fn(cranelift_codegen::ir::LibCall) -> String + Send + Sync> {
    Box::new(|lc| format!("kiln_forbidden_libcall_{lc:?}"))
}

/// `name` with characters outside `[A-Za-z0-9_]` replaced by `_`, a leading `kiln_`, and the
/// first suffix `_N` not yet declared in `module`.
fn unique_symbol<M: Module>(module: &M, name: &str) -> String {
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let base = format!("kiln_{clean}");
    (0..).map(|i| format!("{base}_{i}")).find(|s| module.get_name(s).is_none()).expect("some suffix is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_triples_are_typed_errors() {
        let e = target_isa("riscv64gc-unknown-linux-gnu", &CompileOptions::default())
            .err()
            .expect("riscv64 is not a kiln target");
        assert!(matches!(e, CraneliftError::Target { .. }), "{e}");
        for t in TRIPLES {
            target_isa(t, &CompileOptions::default()).unwrap();
        }
        let v3 = CompileOptions { x86_level: X86Level::V3, ..CompileOptions::default() };
        target_isa(TRIPLES[0], &v3).unwrap();
    }
}
