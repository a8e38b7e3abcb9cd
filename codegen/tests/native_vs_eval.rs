//! The native backends against the kernel IR evaluator, bit for bit: every fixture (lowered
//! and with kiln's transcendental expansions) compiled (Cranelift: JIT; llvm, with the cargo
//! feature: an object without FMA contraction, loaded by the runtime's loader) and run on host
//! buffers, and
//! hand-made kernels covering every non-transcendental op on every dtype, casts, selects, NaN
//! and overflow cases, loops and accumulators, symbols, and the vectorized path. Each kernel
//! is called over its range in pieces (some reaching outside `0..extent`, some empty) to check
//! the `[start, end)` contract. Every hand-made kernel is checked on Cranelift and, with the
//! feature, on llvm.

#![cfg(target_arch = "x86_64")]

use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use kiln_codegen::cranelift::{self as cl, CompileOptions, CraneliftError, X86Level};
use kiln_codegen::kernel::eval::run_program;
use kiln_codegen::kernel::{
    lower_graph, Access, BufferKind, BufferParam, Expr, Kernel, Launch, LoopKind, PlanBuffer, Program, ScalarType,
    Stmt, VarId,
};
use kiln_ir::interp::scalar::{self, Num};
use kiln_ir::{npz, BinaryOp, DType, Dim, Graph, SymId, Tensor, TensorType, UnaryOp, ValueId, WeightStore};
use std::path::PathBuf;

#[path = "common/attention.rs"]
mod attention;

type KernelFn = unsafe extern "C" fn(*const *mut u8, *const i64, i64, i64);

#[derive(Clone, Copy, Debug)]
enum Isa {
    /// x86-64-v2, what `compile_object` produces by default.
    V2,
    /// x86-64-v3 (AVX2, FMA).
    V3,
    /// Whatever this machine has, as Cranelift detects it.
    Native,
    /// The llvm backend (x86-64-v3) without FMA contraction.
    #[cfg(feature = "llvm")]
    Llvm,
}

struct Jit {
    /// What owns the code (a `JITModule` or a `LoadedCode`).
    _code: Box<dyn std::any::Any>,
    fns: Vec<KernelFn>,
    /// Per kernel: the CLIF, or the MLIR function for llvm.
    clif: Vec<String>,
}

/// Whether this machine can run the llvm backend's x86-64-v3 code.
#[cfg(feature = "llvm")]
fn llvm_runs_here() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// The llvm backend's object for `kernels`, loaded by the runtime's loader.
#[cfg(feature = "llvm")]
fn llvm_jit(kernels: &[Kernel]) -> Jit {
    use kiln_codegen::target::{Backend, CodegenOptions};
    extern "C" fn fmod(a: f64, b: f64) -> f64 {
        a % b
    }
    extern "C" fn fmodf(a: f32, b: f32) -> f32 {
        a % b
    }
    let opts = CodegenOptions { fp_contract: false, ..CodegenOptions::default() };
    let obj = kiln_codegen::llvm::LlvmBackend.compile(kernels, "x86_64", &opts).unwrap_or_else(|e| panic!("{e}"));
    let externs = |name: &str| match name {
        "fmod" => Some(fmod as *const () as usize),
        "fmodf" => Some(fmodf as *const () as usize),
        _ => None,
    };
    let code = kiln_runtime::loader::LoadedCode::load(&obj.bytes, &externs).unwrap_or_else(|e| panic!("{e}"));
    let fns = obj
        .symbols
        .iter()
        .map(|s| {
            let p = code.symbol(s).unwrap_or_else(|| panic!("no symbol {s}"));
            // SAFETY: every kernel function has this signature (see `llvm::mlir`).
            unsafe { std::mem::transmute::<*const u8, KernelFn>(p) }
        })
        .collect();
    let clif = kiln_codegen::llvm::mlir_functions(kernels, false).unwrap();
    Jit { _code: Box::new(code), fns, clif }
}

fn jit(kernels: &[Kernel], isa: Isa) -> Result<Jit, CraneliftError> {
    let target = match isa {
        #[cfg(feature = "llvm")]
        Isa::Llvm => return Ok(llvm_jit(kernels)),
        Isa::V2 | Isa::V3 => {
            let opts = CompileOptions {
                pic: false,
                x86_level: if matches!(isa, Isa::V3) { X86Level::V3 } else { X86Level::V2 },
                ..CompileOptions::default()
            };
            cl::target_isa("x86_64-unknown-linux-gnu", &opts)?
        }
        Isa::Native => {
            let mut flags = settings::builder();
            flags.set("opt_level", "speed").unwrap();
            flags.set("is_pic", "false").unwrap();
            cranelift_native::builder().unwrap().finish(settings::Flags::new(flags)).unwrap()
        }
    };
    let mut module = JITModule::new(JITBuilder::with_isa(target, cranelift_module::default_libcall_names()));
    let mut ids = Vec::new();
    let mut clif = Vec::new();
    for k in kernels {
        let d = cl::define(&mut module, k, false)?;
        ids.push(d.id);
        clif.push(d.clif);
    }
    module.finalize_definitions().unwrap();
    let fns = ids
        .iter()
        .map(|&id| {
            let p = module.get_finalized_function(id);
            // SAFETY: every kernel is defined with this signature (see `cranelift::define`).
            unsafe { std::mem::transmute::<*const u8, KernelFn>(p) }
        })
        .collect();
    Ok(Jit { _code: Box::new(module), fns, clif })
}

/// Symbol values from input dims that are bare symbols (as `run_program` binds them).
fn bind_syms(g: &Graph, inputs: &[Tensor]) -> Vec<i64> {
    let mut syms = vec![0i64; g.symbols.len()];
    for (&v, t) in g.inputs().iter().zip(inputs) {
        for (d, &n) in g.ty(v).shape.iter().zip(&t.shape) {
            if let Some(s) = d.as_symbol() {
                syms[s.0 as usize] = n as i64;
            }
        }
    }
    syms
}

/// Pieces of `0..n` the kernel is called with: out-of-range ends (clamped by the kernel),
/// empty and inverted ranges, and three chunks that cover it.
fn pieces(n: i64) -> Vec<(i64, i64)> {
    let (a, b) = (n / 3, 2 * n / 3);
    vec![(5, 2), (-7, a), (a, a), (b, a), (a, b), (b, n + 9), (n, n + 3)]
}

/// A test-only executor: plan buffers in 8-byte-aligned host memory, launches in order.
fn run_jit(g: &Graph, prog: &Program, weights: &WeightStore, inputs: &[Tensor], jit: &Jit) -> Vec<Tensor> {
    let syms = bind_syms(g, inputs);
    let value_of = |s: SymId| syms.get(s.0 as usize).copied();
    let mut store: Vec<Vec<u64>> = Vec::new();
    let mut shapes = Vec::new();
    for b in &prog.buffers {
        let shape: Vec<usize> = b.shape.iter().map(|d| d.eval(&value_of).unwrap() as usize).collect();
        let n = shape.iter().product::<usize>() * b.dtype.size_bytes();
        let init = match b.kind {
            BufferKind::Input(i) => inputs[i].bytes.clone(),
            BufferKind::Weight(_) => weights.get(&b.name).unwrap().bytes.clone(),
            BufferKind::Computed => vec![if b.dtype.is_float() { 0xff } else { 0 }; n],
        };
        assert_eq!(init.len(), n, "buffer {}", b.name);
        let mut words = vec![0u64; n.div_ceil(8).max(1)];
        bytes_mut(&mut words)[..n].copy_from_slice(&init);
        store.push(words);
        shapes.push(shape);
    }
    for launch in &prog.launches {
        let f = jit.fns[launch.kernel];
        let ptrs: Vec<*mut u8> = launch.args.iter().map(|&a| store[a].as_mut_ptr() as *mut u8).collect();
        let extent = launch.range.eval(&value_of).unwrap();
        for (s, e) in pieces(extent) {
            // SAFETY: the buffers have the sizes the kernel indexes (lowering keeps indices in
            // bounds), the symbols are bound, and the function has this signature.
            unsafe { f(ptrs.as_ptr(), syms.as_ptr(), s, e) };
        }
    }
    prog.outputs
        .iter()
        .map(|&o| {
            let b = &prog.buffers[o];
            let n = shapes[o].iter().product::<usize>() * b.dtype.size_bytes();
            Tensor::from_bytes(b.dtype, shapes[o].clone(), bytes_mut(&mut store[o])[..n].to_vec()).unwrap()
        })
        .collect()
}

fn bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: u8 has no alignment or validity requirements.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8) }
}

/// Bit-identical comparison (any NaN matches any NaN).
fn differences(got: &Tensor, want: &Tensor) -> Option<String> {
    if got.dtype != want.dtype || got.shape != want.shape {
        return Some(format!("{} {:?} vs {} {:?}", got.dtype, got.shape, want.dtype, want.shape));
    }
    let mut bad = Vec::new();
    if got.dtype.is_float() {
        for (i, (a, b)) in got.to_f64().iter().zip(want.to_f64()).enumerate() {
            if a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()) {
                bad.push(format!("[{i}] {a:e} vs {b:e}"));
            }
        }
    } else {
        for (i, (a, b)) in got.to_i64().iter().zip(want.to_i64()).enumerate() {
            if *a != b {
                bad.push(format!("[{i}] {a} vs {b}"));
            }
        }
    }
    (!bad.is_empty()).then(|| {
        let n = bad.len();
        bad.truncate(6);
        format!("{n} elements differ (got vs evaluator): {}", bad.join(", "))
    })
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const MODELS: &[&str] = &["mlp", "resblock", "encoder", "gpt", "mobile", "dynbatch", "views", "dynseq"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn inputs_for(g: &Graph, file: &str) -> Vec<Tensor> {
    let arrays = npz::read_npz(&fixture(file)).unwrap();
    g.inputs().iter().map(|&v| arrays.iter().find(|(k, _)| *k == g.value(v).name).unwrap().1.clone()).collect()
}

/// The fused attention graphs (see `common/attention.rs`), compiled for `isa`, give the
/// evaluator's outputs bit for bit.
fn check_attention(isa: Isa) {
    for (g, inputs) in attention::cases() {
        let mut prog = lower_graph(&g).unwrap();
        prog.kernels = prog.kernels.iter().map(kiln_codegen::kernel::math::expand).collect();
        let j = jit(&prog.kernels, isa).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        let want = run_program(&g, &prog, &WeightStore::default(), &inputs).unwrap();
        let got = run_jit(&g, &prog, &WeightStore::default(), &inputs, &j);
        if let Some(d) = differences(&got[0], &want[0]) {
            panic!("{} ({isa:?}): {d}", g.name);
        }
    }
}

#[test]
fn fused_attention_matches_the_evaluator_bit_for_bit() {
    check_attention(Isa::V2);
    check_attention(Isa::V3);
    #[cfg(feature = "llvm")]
    if llvm_runs_here() {
        check_attention(Isa::Llvm);
    }
}

fn check_fixtures(models: &[&str], isa: Isa) -> (usize, usize) {
    let mut bad = Vec::new();
    let (mut kernels, mut vectorized) = (0, 0);
    for m in models {
        for form in ["aten", "core"] {
            let model = kiln_frontend::load(&fixture(&format!("{m}.t215.{form}.pt2"))).unwrap();
            let mut prog = lower_graph(&model.graph).unwrap();
            prog.kernels = prog.kernels.iter().map(kiln_codegen::kernel::math::expand).collect();
            let j = jit(&prog.kernels, isa).unwrap_or_else(|e| panic!("{m}.{form}: {e}"));
            kernels += j.clif.len();
            vectorized += j.clif.iter().filter(|c| c.contains("f32x4")).count();
            let sets: &[&str] = if ["dynbatch", "dynseq"].contains(m) { &["in", "in2"] } else { &["in"] };
            for set in sets {
                let inputs = inputs_for(&model.graph, &format!("{m}.t215.{set}.npz"));
                let want = run_program(&model.graph, &prog, &model.weights, &inputs).unwrap();
                let got = run_jit(&model.graph, &prog, &model.weights, &inputs, &j);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    if let Some(d) = differences(g, w) {
                        bad.push(format!("{m}.{form}.{set} output {i}: {d}"));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    (kernels, vectorized)
}

#[test]
fn every_fixture_matches_the_evaluator_bit_for_bit() {
    let (kernels, vectorized) = check_fixtures(MODELS, Isa::V2);
    eprintln!("{kernels} kernels, {vectorized} with an f32x4 loop");
    assert!(vectorized > 0);
}

#[test]
fn fixtures_match_with_avx2_and_native_isas() {
    check_fixtures(&["mlp", "encoder", "views"], Isa::V3);
    check_fixtures(&["resblock", "dynseq"], Isa::Native);
}

#[cfg(feature = "llvm")]
#[test]
fn every_fixture_matches_the_evaluator_bit_for_bit_with_llvm() {
    if !llvm_runs_here() {
        eprintln!("skipped: this CPU lacks AVX2/FMA, which the llvm backend's x86-64 code needs");
        return;
    }
    check_fixtures(MODELS, Isa::Llvm);
}

#[test]
fn unexpanded_transcendentals_are_a_typed_error() {
    let model = kiln_frontend::load(&fixture("mlp.t215.aten.pt2")).unwrap();
    let prog = lower_graph(&model.graph).unwrap();
    let errors: Vec<String> = prog
        .kernels
        .iter()
        .filter_map(|k| jit(std::slice::from_ref(k), Isa::V2).err())
        .map(|e| {
            assert!(matches!(e, CraneliftError::Unexpanded { .. }), "{e}");
            e.to_string()
        })
        .collect();
    assert!(errors.iter().any(|e| e.contains("tanh")), "{errors:?}");
}

// ---------------------------------------------------------------------------------------------
// Hand-made kernels
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Kb {
    buffers: Vec<BufferParam>,
    vars: Vec<(String, ScalarType)>,
}

impl Kb {
    fn buf(&mut self, dtype: DType, access: Access, len: Dim) -> u32 {
        self.buffers.push(BufferParam { name: format!("b{}", self.buffers.len()), dtype, access, len });
        self.buffers.len() as u32 - 1
    }

    fn var(&mut self, t: ScalarType) -> VarId {
        self.vars.push((format!("v{}", self.vars.len()), t));
        VarId(self.vars.len() as u32 - 1)
    }

    fn kernel(self, name: &str, body: Vec<Stmt>) -> Kernel {
        Kernel { name: name.into(), buffers: self.buffers, vars: self.vars, body, fused: vec![], gpu_form: None }
    }
}

fn var(v: VarId) -> Expr {
    Expr::Var(v)
}

fn ld(buf: u32, index: Expr) -> Expr {
    Expr::load(buf, index)
}

fn lp(var: VarId, extent: Expr, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop { var, extent, kind, body }
}

fn store(buf: u32, index: Expr, value: Expr) -> Stmt {
    Stmt::Store { buf, index, value }
}

/// Runs `k` with the evaluator and the JIT and compares its written buffers. `data` holds the
/// contents of its read buffers (in buffer order), `syms` the symbol values, `range` the
/// extent of its outer loop. Returns the CLIF.
fn check(k: &Kernel, data: &[Tensor], syms: &[i64], range: Dim, isa: Isa) -> String {
    let mut g = Graph::new("t");
    let mut inputs = Vec::new();
    for (j, &s) in syms.iter().enumerate() {
        let id = g.symbols.intern(&format!("s{j}"), 0, None);
        g.add_input(&format!("in{j}"), TensorType::new(DType::U8, vec![Dim::symbol(id)]));
        inputs.push(Tensor::from_bytes(DType::U8, vec![s as usize], vec![0; s as usize]).unwrap());
    }
    let mut weights = WeightStore::default();
    let mut data = data.iter();
    let mut buffers = Vec::new();
    let mut outputs = Vec::new();
    for (i, b) in k.buffers.iter().enumerate() {
        let kind = match b.access {
            Access::Read => {
                let t = data.next().expect("data for every read buffer").clone();
                assert_eq!(t.dtype, b.dtype);
                weights.insert(b.name.clone(), t);
                BufferKind::Weight(i)
            }
            Access::Write => {
                outputs.push(i);
                BufferKind::Computed
            }
            Access::Shared => panic!("CPU kernels have no shared memory"),
        };
        buffers.push(PlanBuffer {
            value: ValueId(i as u32),
            name: b.name.clone(),
            dtype: b.dtype,
            shape: vec![b.len.clone()],
            kind,
        });
    }
    let prog = Program {
        kernels: vec![k.clone()],
        buffers,
        launches: vec![Launch { kernel: 0, args: (0..k.buffers.len()).collect(), range }],
        outputs,
    };
    let want = run_program(&g, &prog, &weights, &inputs).unwrap_or_else(|e| panic!("{e}"));
    let compare = |isa: Isa| {
        let j = jit(&prog.kernels, isa).unwrap_or_else(|e| panic!("{e}"));
        let got = run_jit(&g, &prog, &weights, &inputs, &j);
        for (o, (g, w)) in got.iter().zip(&want).enumerate() {
            if let Some(d) = differences(g, w) {
                panic!("kernel `{}` ({isa:?}) output {o}: {d}\n{}", k.name, j.clif[0]);
            }
        }
        j.clif[0].clone()
    };
    #[cfg(feature = "llvm")]
    if llvm_runs_here() {
        compare(Isa::Llvm);
    }
    compare(isa)
}

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn float_specials() -> Vec<f64> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        3.0,
        -7.0,
        7.25,
        0.1,
        1.0 / 3.0,
        -2.0 / 3.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        65504.0,
        65520.0,
        6.1e-5,
        3e-8,
        1e-40,
        f32::MAX as f64,
        f32::MIN_POSITIVE as f64,
        1.0e300,
        5e-324,
        300.0,
        -129.5,
        1e19,
    ];
    // bf16 rounding boundaries: exact ties and values just above them.
    v.extend([1.0 + 2f64.powi(-8), 1.0 + 2f64.powi(-8) + 2f64.powi(-22), 3.0 + 2f64.powi(-7)]);
    v
}

fn int_specials(d: DType) -> Vec<i64> {
    let (min, max) = match d {
        DType::I64 => (i64::MIN, i64::MAX),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::I16 => (i16::MIN as i64, i16::MAX as i64),
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        DType::U8 => (0, 255),
        _ => (0, 1),
    };
    let mut v = vec![0, 1, -1, 2, -2, 3, -7, 7, 100, -100, min, max, min + 1, max - 1];
    if d == DType::Bool {
        v = vec![0, 1];
    }
    v.into_iter().map(|x| kiln_ir::tensor::wrap_to(d, x)).collect()
}

/// `n` values of `d`: specials, then random bit patterns (and moderate numbers for floats).
fn values(d: DType, specials: &[Num], n: usize, rng: &mut Rng) -> Tensor {
    let mut bytes = Vec::new();
    let w = d.size_bytes();
    let push_num = |bytes: &mut Vec<u8>, x: Num| {
        let t = match x {
            Num::F(f) => Tensor::from_f64(d, vec![1], &[f]),
            Num::I(i) => Tensor::from_i64(d, vec![1], &[i]),
        };
        bytes.extend_from_slice(&t.bytes);
    };
    for &x in specials.iter().take(n) {
        push_num(&mut bytes, x);
    }
    while bytes.len() / w < n {
        let r = rng.next();
        if d.is_float() && r.is_multiple_of(3) {
            // A moderate value with few significant bits (ties, halves, small integers).
            let m = (rng.next() % 4001) as f64 - 2000.0;
            let e = (rng.next() % 7) as i32 - 3;
            push_num(&mut bytes, Num::F(m * 2f64.powi(e)));
        } else if d == DType::Bool {
            bytes.push((r & 1) as u8);
        } else {
            bytes.extend_from_slice(&r.to_le_bytes()[..w]);
        }
    }
    Tensor::from_bytes(d, vec![n], bytes).unwrap()
}

fn specials(d: DType) -> Vec<Num> {
    if d.is_float() {
        float_specials().into_iter().map(Num::F).collect()
    } else {
        int_specials(d).into_iter().map(Num::I).collect()
    }
}

/// Operands `(a, b)`: every pair of specials, then random values.
fn pairs(d: DType, random: usize, rng: &mut Rng) -> (Tensor, Tensor) {
    let s = specials(d);
    let a: Vec<Num> = s.iter().flat_map(|&x| s.iter().map(move |_| x)).collect();
    let b: Vec<Num> = s.iter().flat_map(|_| s.iter().copied()).collect();
    let n = a.len() + random;
    (values(d, &a, n, rng), values(d, &b, n, rng))
}

/// Every f16 or bf16 bit pattern.
fn all_halves(d: DType) -> Tensor {
    let bytes = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    Tensor::from_bytes(d, vec![65536], bytes).unwrap()
}

/// `out[i] = f(a[i], b[i], ...)` over `n` elements.
fn elementwise(name: &str, ins: &[DType], out: DType, n: usize, f: impl Fn(&[Expr]) -> Expr) -> Kernel {
    let mut kb = Kb::default();
    let len = Dim::constant(n as i64);
    let bufs: Vec<u32> = ins.iter().map(|&d| kb.buf(d, Access::Read, len.clone())).collect();
    let o = kb.buf(out, Access::Write, len);
    let i = kb.var(ScalarType::Index);
    let args: Vec<Expr> = bufs.iter().map(|&b| ld(b, var(i))).collect();
    let body = vec![lp(i, Expr::Int(n as i64), LoopKind::Parallel, vec![store(o, var(i), f(&args))])];
    kb.kernel(name, body)
}

fn result_dtype(d: DType, comparison_or_isnan: bool) -> DType {
    if comparison_or_isnan {
        DType::Bool
    } else {
        d
    }
}

const UNARY: &[UnaryOp] = &[
    UnaryOp::Neg,
    UnaryOp::Abs,
    UnaryOp::Sqrt,
    UnaryOp::Rsqrt,
    UnaryOp::Reciprocal,
    UnaryOp::Floor,
    UnaryOp::Ceil,
    UnaryOp::Round,
    UnaryOp::Relu,
    UnaryOp::Sign,
    UnaryOp::Not,
    UnaryOp::IsNan,
];

const BINARY: &[BinaryOp] = &[
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::FloorDiv,
    BinaryOp::Rem,
    BinaryOp::Pow,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Eq,
    BinaryOp::Ne,
    BinaryOp::Lt,
    BinaryOp::Le,
    BinaryOp::Gt,
    BinaryOp::Ge,
    BinaryOp::And,
    BinaryOp::Or,
    BinaryOp::Xor,
];

fn range(n: usize) -> Dim {
    Dim::constant(n as i64)
}

#[test]
fn unary_ops_on_every_dtype() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for &d in &DType::ALL {
        let data = if matches!(d, DType::F16 | DType::BF16) {
            all_halves(d)
        } else {
            let s = specials(d);
            values(d, &s, 3000, &mut rng)
        };
        let n = data.numel();
        for &op in UNARY {
            let out = result_dtype(d, op == UnaryOp::IsNan);
            let k = elementwise(&format!("{}_{d}", op.name()), &[d], out, n, |a| Expr::unary(op, a[0].clone()));
            if scalar::unary(op, d, specials(d)[1]).is_err() {
                let e = jit(&[k], Isa::V2).err().expect("rejected like the evaluator");
                assert!(matches!(e, CraneliftError::Unsupported { .. }), "{e}");
                continue;
            }
            check(&k, std::slice::from_ref(&data), &[], range(n), Isa::V2);
        }
    }
}

#[test]
fn binary_ops_on_every_dtype() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for &d in &DType::ALL {
        let (a, b) = pairs(d, 2000, &mut rng);
        let n = a.numel();
        for &op in BINARY {
            let out = result_dtype(d, op.is_comparison());
            let k = elementwise(&format!("{}_{d}", op.name()), &[d, d], out, n, |x| {
                Expr::binary(op, x[0].clone(), x[1].clone())
            });
            if d.is_float() && op == BinaryOp::Pow {
                let e = jit(&[k], Isa::V2).err().expect("float pow must be expanded");
                assert!(matches!(e, CraneliftError::Unexpanded { .. }), "{e}");
                continue;
            }
            if scalar::binary(op, d, specials(d)[1], specials(d)[1]).is_err() {
                let e = jit(&[k], Isa::V2).err().expect("rejected like the evaluator");
                assert!(matches!(e, CraneliftError::Unsupported { .. }), "{e}");
                continue;
            }
            // The evaluator rejects integer division by zero and negative exponents.
            let mut b = b.clone();
            if !d.is_float() {
                let fix: Vec<i64> = b
                    .to_i64()
                    .into_iter()
                    .map(|y| match op {
                        BinaryOp::Div | BinaryOp::FloorDiv | BinaryOp::Rem if y == 0 => 1,
                        BinaryOp::Pow if y < 0 => y & 127,
                        _ => y,
                    })
                    .collect();
                b = Tensor::from_i64(d, vec![n], &fix);
            }
            check(&k, &[a.clone(), b], &[], range(n), Isa::V2);
        }
    }
}

#[test]
fn integer_division_by_zero_gives_zero() {
    for &d in &[DType::I64, DType::I32, DType::I8, DType::U8] {
        for op in [BinaryOp::Div, BinaryOp::FloorDiv, BinaryOp::Rem] {
            let k = elementwise("div0", &[d, d], d, 4, |x| Expr::binary(op, x[0].clone(), x[1].clone()));
            let j = jit(&[k], Isa::V2).unwrap();
            let mut a = vec![7u64, 0, 0, 0];
            let mut b = vec![0u64; 4];
            let mut o = vec![u64::MAX; 4];
            let ptrs = [a.as_mut_ptr() as *mut u8, b.as_mut_ptr() as *mut u8, o.as_mut_ptr() as *mut u8];
            // SAFETY: three buffers of at least 4 elements of d.
            unsafe { j.fns[0](ptrs.as_ptr(), std::ptr::null(), 0, 4) };
            let bytes = 4 * d.size_bytes();
            assert!(bytes_mut(&mut o)[..bytes].iter().all(|&x| x == 0), "{d} {op:?}");
        }
    }
}

#[test]
fn casts_between_every_pair_of_dtypes() {
    let mut rng = Rng(42);
    for &from in &DType::ALL {
        let data = if matches!(from, DType::F16 | DType::BF16) {
            all_halves(from)
        } else {
            let mut s = specials(from);
            if from.is_float() {
                // Values near f16/bf16 rounding points and the i64 range.
                s.extend([2049.0, 2051.0, 65519.0, 9.2e18, -9.3e18, 1.0 + 2f64.powi(-9)].map(Num::F));
            }
            values(from, &s, 4000, &mut rng)
        };
        let n = data.numel();
        for &to in &DType::ALL {
            let k =
                elementwise(&format!("cast_{from}_{to}"), &[from], to, n, |a| Expr::Cast(to, Box::new(a[0].clone())));
            check(&k, std::slice::from_ref(&data), &[], range(n), Isa::V2);
        }
        // To an index and back (stored into an i64 buffer).
        let k =
            elementwise(&format!("toindex_{from}"), &[from], DType::I64, n, |a| Expr::ToIndex(Box::new(a[0].clone())));
        check(&k, std::slice::from_ref(&data), &[], range(n), Isa::V2);
    }
}

#[test]
fn f64_to_f16_and_bf16_rounding_edge_cases() {
    // Values between f16/bf16 neighbours where rounding through f32 or truncation matters.
    let mut v = Vec::new();
    for base in [1.0f64, 1.5, 1024.0, 2f64.powi(-14), 2f64.powi(-24), 1e-39, 3e38] {
        for k in [1.0, 0.5, 0.25, 2f64.powi(-12), 2f64.powi(-13), 2f64.powi(-30), 2f64.powi(-40)] {
            for ulp in [2f64.powi(-10), 2f64.powi(-7)] {
                v.push(base * (1.0 + ulp * (0.5 + k)));
                v.push(base * (1.0 + ulp * (0.5 - k)));
                v.push(-base * (1.0 + ulp * (0.5 + k)));
            }
        }
    }
    let n = v.len();
    let data = Tensor::from_f64(DType::F64, vec![n], &v);
    for to in [DType::F16, DType::BF16, DType::F32] {
        let k = elementwise("round", &[DType::F64], to, n, |a| Expr::Cast(to, Box::new(a[0].clone())));
        check(&k, std::slice::from_ref(&data), &[], range(n), Isa::V2);
    }
}

#[test]
fn select_bitcast_and_constants() {
    let mut rng = Rng(7);
    let n = 600;
    let cond = values(DType::Bool, &[Num::I(0), Num::I(1)], n, &mut rng);
    for &d in &DType::ALL {
        let s = specials(d);
        let (a, b) = (values(d, &s, n, &mut rng), values(d, &s, n, &mut rng));
        let k = elementwise(&format!("select_{d}"), &[DType::Bool, d, d], d, n, |x| {
            Expr::select(x[0].clone(), x[1].clone(), x[2].clone())
        });
        check(&k, &[cond.clone(), a.clone(), b.clone()], &[], range(n), Isa::V2);
        // Constants are rounded or wrapped to their dtype.
        let k = elementwise(&format!("const_{d}"), &[d], d, n, |x| {
            let c = if d.is_float() { 0.1 } else { 300.0 };
            Expr::select(
                Expr::binary(BinaryOp::Lt, x[0].clone(), Expr::Const(c, d)),
                Expr::Const(1e10, d),
                Expr::Const(-c, d),
            )
        });
        check(&k, std::slice::from_ref(&a), &[], range(n), Isa::V2);
        // A float condition: `f as i64 != 0`.
        if d.is_float() {
            let k = elementwise(&format!("fcond_{d}"), &[d, d], d, n, |x| {
                Expr::select(x[0].clone(), x[0].clone(), x[1].clone())
            });
            check(&k, &[a.clone(), b.clone()], &[], range(n), Isa::V2);
        }
    }
    for (f, i) in [(DType::F32, DType::I32), (DType::F64, DType::I64)] {
        let s = specials(f);
        let a = values(f, &s, n, &mut rng);
        let k = elementwise("bits", &[f], i, n, |x| Expr::Bitcast(i, Box::new(x[0].clone())));
        check(&k, &[a], &[], range(n), Isa::V2);
        let s = specials(i);
        let a = values(i, &s, n, &mut rng);
        let k = elementwise("unbits", &[i], f, n, |x| Expr::Bitcast(f, Box::new(x[0].clone())));
        check(&k, &[a], &[], range(n), Isa::V2);
    }
}

#[test]
fn index_arithmetic_has_floor_semantics() {
    let mut rng = Rng(99);
    let n = 3000;
    let s = specials(DType::I64);
    let a = values(DType::I64, &s, n, &mut rng);
    // Small dividends too, where floor and truncation differ most often.
    let small: Vec<i64> = (0..n as i64).map(|i| i - n as i64 / 2).collect();
    let small = Tensor::from_i64(DType::I64, vec![n], &small);
    let idx = |e: &Expr| Expr::ToIndex(Box::new(e.clone()));
    for op in [BinaryOp::Div, BinaryOp::FloorDiv, BinaryOp::Rem] {
        for c in [1i64, 2, 3, 4, 7, 8, 1024, 1000, -3, -4, i64::MAX] {
            let k = elementwise("idx", &[DType::I64], DType::I64, n, |x| Expr::binary(op, idx(&x[0]), Expr::Int(c)));
            check(&k, std::slice::from_ref(&a), &[], range(n), Isa::V2);
            check(&k, std::slice::from_ref(&small), &[], range(n), Isa::V2);
        }
    }
}

/// A row reduction with an accumulator, a nested serial loop, symbolic extents and lets.
#[test]
fn loops_accumulators_and_symbols() {
    let mut rng = Rng(5);
    let (rows, cols) = (13i64, 29i64);
    for &d in &[DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I8] {
        let mut kb = Kb::default();
        let (r_sym, c_sym) = (Expr::Sym(SymId(0)), Expr::Sym(SymId(1)));
        let len = Dim::constant(rows * cols);
        let x = kb.buf(d, Access::Read, len);
        let out = kb.buf(d, Access::Write, Dim::constant(rows));
        let arg = kb.buf(DType::I64, Access::Write, Dim::constant(rows));
        let (r, c) = (kb.var(ScalarType::Index), kb.var(ScalarType::Index));
        let acc = kb.var(ScalarType::Elem(d));
        let best = kb.var(ScalarType::Index);
        let t = kb.var(ScalarType::Elem(d));
        let at = Expr::add(Expr::mul(var(r), c_sym.clone()), var(c));
        let body = vec![lp(
            r,
            r_sym,
            LoopKind::Parallel,
            vec![
                Stmt::Decl { var: acc, init: Expr::Const(0.0, d) },
                Stmt::Decl { var: best, init: Expr::Int(0) },
                lp(
                    c,
                    c_sym.clone(),
                    LoopKind::Serial,
                    vec![
                        Stmt::Let { var: t, value: ld(x, at) },
                        Stmt::Assign { var: acc, value: Expr::binary(BinaryOp::Add, var(acc), var(t)) },
                        Stmt::Assign {
                            var: best,
                            value: Expr::select(
                                Expr::binary(
                                    BinaryOp::Gt,
                                    var(t),
                                    ld(x, Expr::add(Expr::mul(var(r), c_sym.clone()), var(best))),
                                ),
                                var(c),
                                var(best),
                            ),
                        },
                    ],
                ),
                store(out, var(r), var(acc)),
                store(arg, var(r), var(best)),
            ],
        )];
        let k = kb.kernel(&format!("reduce_{d}"), body);
        let s = specials(d);
        let data = values(d, &s, (rows * cols) as usize, &mut rng);
        let range = Dim::symbol(SymId(0));
        check(&k, &[data], &[rows, cols], range, Isa::V2);
    }
}

/// Builds a value from `(a[r, c], b[c], s[r])`.
type Op3 = fn(Expr, Expr, Expr) -> Expr;
type Build = Box<dyn Fn(Expr, Expr, Expr) -> Expr>;

/// `out[r, c] = f(a[r, c], b[c], s[r])` with the inner loop marked `vector(4)`.
fn vector_kernel(name: &str, cols: i64, f: impl Fn(Expr, Expr, Expr) -> Expr) -> Kernel {
    let rows = 5;
    let mut kb = Kb::default();
    let a = kb.buf(DType::F32, Access::Read, Dim::constant(rows * cols));
    let b = kb.buf(DType::F32, Access::Read, Dim::constant(cols));
    let s = kb.buf(DType::F32, Access::Read, Dim::constant(rows));
    let out = kb.buf(DType::F32, Access::Write, Dim::constant(rows * cols));
    let (r, c) = (kb.var(ScalarType::Index), kb.var(ScalarType::Index));
    let at = Expr::add(Expr::mul(var(r), Expr::Int(cols)), var(c));
    let value = f(ld(a, at.clone()), ld(b, var(c)), ld(s, var(r)));
    let body = vec![lp(
        r,
        Expr::Int(rows),
        LoopKind::Parallel,
        vec![lp(c, Expr::Int(cols), LoopKind::Vector(4), vec![store(out, at, value)])],
    )];
    kb.kernel(name, body)
}

fn vector_data(cols: i64, rng: &mut Rng) -> Vec<Tensor> {
    let s = specials(DType::F32);
    vec![
        values(DType::F32, &s, (5 * cols) as usize, rng),
        values(DType::F32, &s[3..], cols as usize, rng),
        values(DType::F32, &s[9..], 5, rng),
    ]
}

#[test]
fn vectorized_loops_match_the_evaluator() {
    let mut rng = Rng(11);
    let un = |op: UnaryOp| -> Build { Box::new(move |a, _, _| Expr::unary(op, a)) };
    let bin = |op: BinaryOp| -> Build { Box::new(move |a, b, _| Expr::binary(op, a, b)) };
    let mut cases: Vec<(String, Build)> = Vec::new();
    for op in [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Sqrt,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
        UnaryOp::Relu,
        UnaryOp::Reciprocal,
        UnaryOp::Sign,
    ] {
        cases.push((op.name().into(), un(op)));
    }
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min] {
        cases.push((op.name().into(), bin(op)));
        // With a broadcast (uniform) operand on either side, and a constant.
        cases.push((format!("{}_s", op.name()), Box::new(move |a, _, s| Expr::binary(op, s, a))));
        cases.push((
            format!("{}_c", op.name()),
            Box::new(move |a, _, _| Expr::binary(op, a, Expr::Const(0.5, DType::F32))),
        ));
    }
    for op in [BinaryOp::Eq, BinaryOp::Ne, BinaryOp::Lt, BinaryOp::Le, BinaryOp::Gt, BinaryOp::Ge] {
        cases.push((
            format!("select_{}", op.name()),
            Box::new(move |a, b, s| Expr::select(Expr::binary(op, a.clone(), b), a, s)),
        ));
    }
    let masks: [(&str, Op3); 5] = [
        ("isnan", |a, b, _| Expr::select(Expr::unary(UnaryOp::IsNan, a), b, Expr::Const(2.0, DType::F32))),
        ("and_or", |a, b, s| {
            let lt = Expr::binary(BinaryOp::Lt, a.clone(), b.clone());
            let gt = Expr::binary(BinaryOp::Gt, a.clone(), s.clone());
            let ne = Expr::binary(BinaryOp::Ne, b.clone(), s.clone());
            let m = Expr::binary(
                BinaryOp::Or,
                Expr::binary(BinaryOp::And, lt, gt),
                Expr::binary(BinaryOp::Xor, ne, Expr::unary(UnaryOp::Not, Expr::unary(UnaryOp::IsNan, a.clone()))),
            );
            Expr::select(m, a, b)
        }),
        ("uniform_cond", |a, b, s| Expr::select(Expr::binary(BinaryOp::Gt, s, Expr::Const(0.0, DType::F32)), a, b)),
        ("mixed_mask", |a, b, s| {
            let m = Expr::binary(
                BinaryOp::And,
                Expr::binary(BinaryOp::Gt, s, Expr::Const(0.0, DType::F32)),
                Expr::binary(BinaryOp::Le, a.clone(), b.clone()),
            );
            Expr::select(m, b, a)
        }),
        ("chain", |a, b, s| {
            let t = Expr::binary(BinaryOp::Add, Expr::binary(BinaryOp::Mul, a, b), s);
            Expr::unary(UnaryOp::Relu, Expr::Cast(DType::F32, Box::new(t)))
        }),
    ];
    for (name, f) in masks {
        cases.push((name.into(), Box::new(f)));
    }
    for (name, f) in &cases {
        for cols in [1, 3, 4, 7, 8, 13] {
            let k = vector_kernel(name, cols, f);
            let data = vector_data(cols, &mut rng);
            let clif = check(&k, &data, &[], range(5), Isa::V2);
            assert!(clif.contains("f32x4"), "{name} was not vectorized:\n{clif}");
            check(&k, &data, &[], range(5), Isa::V3);
        }
    }
}

#[test]
fn vector_lets_and_fallbacks() {
    let mut rng = Rng(3);
    let cols = 11i64;
    // Lets of every shape inside a vector loop: an affine index, a uniform f32, a varying f32
    // and a mask.
    let mut kb = Kb::default();
    let a = kb.buf(DType::F32, Access::Read, Dim::constant(5 * cols));
    let b = kb.buf(DType::F32, Access::Read, Dim::constant(cols));
    let s = kb.buf(DType::F32, Access::Read, Dim::constant(5));
    let out = kb.buf(DType::F32, Access::Write, Dim::constant(5 * cols));
    let (r, c) = (kb.var(ScalarType::Index), kb.var(ScalarType::Index));
    let at = kb.var(ScalarType::Index);
    let u = kb.var(ScalarType::Elem(DType::F32));
    let t = kb.var(ScalarType::Elem(DType::F32));
    let m = kb.var(ScalarType::Elem(DType::Bool));
    let body = vec![lp(
        r,
        Expr::Int(5),
        LoopKind::Parallel,
        vec![lp(
            c,
            Expr::Int(cols),
            LoopKind::Vector(4),
            vec![
                Stmt::Let { var: at, value: Expr::add(Expr::mul(Expr::Int(cols), var(r)), var(c)) },
                Stmt::Let { var: u, value: Expr::binary(BinaryOp::Mul, ld(s, var(r)), Expr::Const(3.0, DType::F32)) },
                Stmt::Let { var: t, value: Expr::binary(BinaryOp::Sub, ld(a, var(at)), var(u)) },
                Stmt::Let { var: m, value: Expr::binary(BinaryOp::Lt, var(t), ld(b, var(c))) },
                store(out, var(at), Expr::select(var(m), var(t), var(u))),
            ],
        )],
    )];
    let k = kb.kernel("lets", body);
    let data = vector_data(cols, &mut rng);
    let clif = check(&k, &data, &[], range(5), Isa::V2);
    assert!(clif.contains("f32x4"), "{clif}");

    // Not vectorizable: a strided load (2*c), an index used as a number, an f64 op.
    let fallbacks: [(&str, Op3); 2] = [
        ("rsqrt", |a, _, _| Expr::unary(UnaryOp::Rsqrt, a)),
        ("floordiv", |a, b, _| Expr::binary(BinaryOp::FloorDiv, a, b)),
    ];
    for (name, f) in fallbacks {
        let k = vector_kernel(name, cols, f);
        let clif = check(&k, &vector_data(cols, &mut rng), &[], range(5), Isa::V2);
        assert!(!clif.contains("f32x4"), "{name} should stay scalar");
    }
    let mut kb = Kb::default();
    let a = kb.buf(DType::F32, Access::Read, Dim::constant(2 * cols));
    let out = kb.buf(DType::F32, Access::Write, Dim::constant(cols));
    let c = kb.var(ScalarType::Index);
    let r = kb.var(ScalarType::Index);
    let body = vec![lp(
        r,
        Expr::Int(1),
        LoopKind::Parallel,
        vec![lp(
            c,
            Expr::Int(cols),
            LoopKind::Vector(4),
            vec![store(
                out,
                var(c),
                Expr::binary(
                    BinaryOp::Add,
                    ld(a, Expr::mul(Expr::Int(2), var(c))),
                    Expr::Cast(DType::F32, Box::new(var(c))),
                ),
            )],
        )],
    )];
    let k = kb.kernel("strided", body);
    let s = specials(DType::F32);
    let data = values(DType::F32, &s, (2 * cols) as usize, &mut rng);
    let clif = check(&k, &[data], &[], range(1), Isa::V2);
    assert!(!clif.contains("f32x4"), "strided loads stay scalar");
}

/// `out[i] = a[i] + 1` called on one piece at a time: exactly `max(start, 0)..min(end, n)` is
/// written (checked against sentinels, with guard elements around the buffer), for the scalar
/// and the vectorized loop.
#[test]
fn start_end_write_exactly_their_range() {
    const GUARD: usize = 8;
    for n in [0i64, 1, 2, 3, 4, 5, 10, 101] {
        for kind in [LoopKind::Parallel, LoopKind::Vector(4)] {
            let mut kb = Kb::default();
            let a = kb.buf(DType::F32, Access::Read, Dim::constant(n));
            let o = kb.buf(DType::F32, Access::Write, Dim::constant(n));
            let i = kb.var(ScalarType::Index);
            let inc = Expr::binary(BinaryOp::Add, ld(a, var(i)), Expr::Const(1.0, DType::F32));
            let body = vec![lp(i, Expr::Int(n), kind, vec![store(o, var(i), inc)])];
            let k = kb.kernel("piece", body);
            let j = jit(&[k], Isa::V2).unwrap();
            let vectorized = j.clif[0].contains("f32x4");
            assert_eq!(vectorized, kind != LoopKind::Parallel);
            let n = n as usize;
            let input: Vec<f32> = (0..n).map(|x| x as f32).collect();
            let mut ranges = pieces(n as i64);
            ranges.extend([(0, n as i64), (-100, 100), (1, n as i64 - 1), (2, 3)]);
            for (s, e) in ranges {
                let mut out = vec![-5.0f32; n + 2 * GUARD];
                let mut inp = input.clone();
                let ptrs = [inp.as_mut_ptr() as *mut u8, out[GUARD..].as_mut_ptr() as *mut u8];
                // SAFETY: two f32 buffers of n elements.
                unsafe { j.fns[0](ptrs.as_ptr(), std::ptr::null(), s, e) };
                let (lo, hi) = (s.clamp(0, n as i64) as usize, e.clamp(0, n as i64) as usize);
                for (x, &v) in out.iter().enumerate() {
                    let written = x >= GUARD + lo && x < GUARD + hi;
                    let want = if written { (x - GUARD) as f32 + 1.0 } else { -5.0 };
                    assert_eq!(v, want, "n={n} {kind:?} piece ({s}, {e}) element {x}");
                }
            }
        }
    }
}

/// Every op kernel above also compiles for aarch64 (cross-compiled; not run here), with no
/// external symbol.
#[test]
fn every_op_compiles_for_aarch64() {
    let mut ks = Vec::new();
    for &d in &DType::ALL {
        for &op in UNARY {
            if scalar::unary(op, d, specials(d)[1]).is_ok() {
                ks.push(elementwise("u", &[d], result_dtype(d, op == UnaryOp::IsNan), 8, |a| {
                    Expr::unary(op, a[0].clone())
                }));
            }
        }
        for &op in BINARY {
            if scalar::binary(op, d, specials(d)[1], specials(d)[1]).is_ok() && !(d.is_float() && op == BinaryOp::Pow) {
                ks.push(elementwise("b", &[d, d], result_dtype(d, op.is_comparison()), 8, |x| {
                    Expr::binary(op, x[0].clone(), x[1].clone())
                }));
            }
        }
        for &to in &DType::ALL {
            ks.push(elementwise("c", &[d], to, 8, |a| Expr::Cast(to, Box::new(a[0].clone()))));
        }
        ks.push(elementwise("s", &[DType::Bool, d, d], d, 8, |x| {
            Expr::select(x[0].clone(), x[1].clone(), x[2].clone())
        }));
    }
    for op in [BinaryOp::Add, BinaryOp::Max, BinaryOp::Min, BinaryOp::Lt] {
        ks.push(vector_kernel("v", 13, move |a, b, s| {
            Expr::select(Expr::binary(BinaryOp::Ne, a.clone(), s), Expr::binary(op, a.clone(), b), a)
        }));
    }
    for op in [UnaryOp::Relu, UnaryOp::Round, UnaryOp::Sign, UnaryOp::Sqrt, UnaryOp::IsNan] {
        ks.push(vector_kernel("w", 13, move |a, b, _| {
            Expr::select(Expr::unary(UnaryOp::IsNan, b), Expr::unary(op, a.clone()), a)
        }));
    }
    let obj = cl::compile_object(&ks, "aarch64-unknown-linux-gnu", &CompileOptions::default()).unwrap();
    assert_eq!(obj.symbols.len(), ks.len());
    assert!(obj.clif.iter().filter(|c| c.contains("f32x4")).count() >= 7);
}

#[test]
fn malformed_kernels_are_typed_errors() {
    let mut kb = Kb::default();
    let o = kb.buf(DType::F32, Access::Write, Dim::constant(1));
    let k = kb.kernel("no_loop", vec![store(o, Expr::Int(0), Expr::Const(1.0, DType::F32))]);
    let e = jit(&[k], Isa::V2).err().unwrap();
    assert!(matches!(e, CraneliftError::Malformed { .. }), "{e}");
}
