//! kiln's transcendental expansions against the reference semantics (f64 math rounded once):
//! maximum error in ulps over dense grids of inputs, including special values.

use kiln_codegen::kernel::eval::run_program;
use kiln_codegen::kernel::math::expand;
use kiln_codegen::kernel::{
    Access, BufferKind, BufferParam, Expr, Kernel, Launch, LoopKind, PlanBuffer, Program,
    ScalarType, Stmt, VarId,
};
use kiln_ir::{BinaryOp, DType, Dim, Graph, Tensor, TensorType, UnaryOp, WeightStore};

/// A one-kernel program `y[i] = op(x[i])` over `n` elements, and its graph signature.
fn program(op: UnaryOp, dtype: DType, n: usize, expanded: bool) -> (Graph, Program) {
    let len = Dim::constant(n as i64);
    let kernel = Kernel {
        name: "k".into(),
        buffers: vec![
            BufferParam {
                name: "x".into(),
                dtype,
                access: Access::Read,
                len: len.clone(),
            },
            BufferParam {
                name: "y".into(),
                dtype,
                access: Access::Write,
                len: len.clone(),
            },
        ],
        vars: vec![("i".into(), ScalarType::Index)],
        body: vec![Stmt::Loop {
            var: VarId(0),
            extent: Expr::Int(n as i64),
            kind: LoopKind::Parallel,
            body: vec![Stmt::Store {
                buf: 1,
                index: Expr::Var(VarId(0)),
                value: Expr::unary(op, Expr::load(0, Expr::Var(VarId(0)))),
            }],
        }],
        fused: vec![],
        gpu_form: None,
    };
    let kernel = if expanded { expand(&kernel) } else { kernel };
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(dtype, vec![len.clone()]));
    let y = g
        .add_node(kiln_ir::Op::Unary(UnaryOp::Neg), vec![x], "y", None)
        .unwrap();
    g.add_output("y", y);
    let buffers = vec![
        PlanBuffer {
            value: x,
            name: "x".into(),
            dtype,
            shape: vec![len.clone()],
            kind: BufferKind::Input(0),
        },
        PlanBuffer {
            value: y,
            name: "y".into(),
            dtype,
            shape: vec![len.clone()],
            kind: BufferKind::Computed,
        },
    ];
    let prog = Program {
        kernels: vec![kernel],
        buffers,
        launches: vec![Launch {
            kernel: 0,
            args: vec![0, 1],
            range: len,
        }],
        outputs: vec![1],
    };
    (g, prog)
}

fn ulps_f32(a: f64, b: f64) -> u64 {
    let (a, b) = (a as f32, b as f32);
    if a.is_nan() && b.is_nan() || a == b {
        return 0;
    }
    if a.is_nan() || b.is_nan() || a.is_infinite() || b.is_infinite() {
        return u64::MAX;
    }
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i64::from(i32::MIN) - i64::from(i)
        } else {
            i64::from(i)
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

fn max_ulps(op: UnaryOp, inputs: &[f64]) -> (u64, f64) {
    let x = Tensor::from_f64(DType::F32, vec![inputs.len()], inputs);
    let (g, reference) = program(op, DType::F32, inputs.len(), false);
    let (_, expanded) = program(op, DType::F32, inputs.len(), true);
    let want =
        run_program(&g, &reference, &WeightStore::default(), &[x.clone()]).unwrap()[0].to_f64();
    let got = run_program(&g, &expanded, &WeightStore::default(), &[x]).unwrap()[0].to_f64();
    let mut worst = (0, 0.0);
    for ((w, g), &i) in want.iter().zip(&got).zip(inputs) {
        let u = ulps_f32(*w, *g);
        if u > worst.0 {
            worst = (u, i);
        }
    }
    worst
}

fn grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n)
        .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
        .collect();
    v.extend([
        0.0,
        -0.0,
        1e-8,
        -1e-8,
        1e-30,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ]);
    v
}

#[test]
fn f32_transcendentals_are_within_their_stated_bounds() {
    let cases: &[(UnaryOp, Vec<f64>, u64)] = &[
        (UnaryOp::Exp, grid(-110.0, 90.0, 20001), 4),
        (
            UnaryOp::Log,
            [
                grid(1e-6, 10.0, 10001),
                grid(0.0, 1e30, 2001),
                vec![1e-40, 1e-44, -1.0],
            ]
            .concat(),
            4,
        ),
        (UnaryOp::Expm1, grid(-20.0, 20.0, 20001), 4),
        (UnaryOp::Log1p, grid(-0.999, 20.0, 20001), 4),
        (UnaryOp::Tanh, grid(-12.0, 12.0, 20001), 4),
        (UnaryOp::Sigmoid, grid(-30.0, 30.0, 20001), 4),
        (UnaryOp::Erf, grid(-6.0, 6.0, 20001), 1),
        (UnaryOp::Sin, grid(-1000.0, 1000.0, 20001), 1),
        (UnaryOp::Cos, grid(-1000.0, 1000.0, 20001), 1),
    ];
    let mut report = Vec::new();
    for (op, inputs, bound) in cases {
        let (ulps, at) = max_ulps(*op, inputs);
        report.push(format!("{}: max {ulps} ulp (at {at})", op.name()));
        assert!(
            ulps <= *bound,
            "{} is off by {ulps} ulp at {at} (bound {bound})",
            op.name()
        );
    }
    println!("{}", report.join("\n"));
}

/// How many steps of a half-precision type (`mantissa` stored bits, smallest normal exponent
/// `min_exp`) lie between `a` and `b`: their difference over the spacing at the larger.
fn ulps_half(a: f64, b: f64, mantissa: i32, min_exp: i32) -> u64 {
    if a.is_nan() && b.is_nan() || a == b {
        return 0;
    }
    if a.is_nan() || b.is_nan() || a.is_infinite() || b.is_infinite() {
        return u64::MAX;
    }
    let larger = a.abs().max(b.abs());
    let exponent = (larger.log2().floor() as i32).max(min_exp);
    let spacing = 2f64.powi(exponent - mantissa);
    ((a - b).abs() / spacing).round() as u64
}

/// The largest error in steps of `dtype` (f16 or bf16) of the expanded `op` against the
/// reference, over `inputs` (rounded to `dtype` first).
fn max_ulps_half(op: UnaryOp, dtype: DType, inputs: &[f64]) -> (u64, f64) {
    let (mantissa, min_exp) = if dtype == DType::F16 { (10, -14) } else { (7, -126) };
    let x = Tensor::from_f64(dtype, vec![inputs.len()], inputs);
    let (g, reference) = program(op, dtype, inputs.len(), false);
    let (_, expanded) = program(op, dtype, inputs.len(), true);
    let want = run_program(&g, &reference, &WeightStore::default(), &[x.clone()]).unwrap()[0].to_f64();
    let got = run_program(&g, &expanded, &WeightStore::default(), &[x.clone()]).unwrap()[0].to_f64();
    let mut worst = (0, 0.0);
    for ((w, g), i) in want.iter().zip(&got).zip(x.to_f64()) {
        let u = ulps_half(*w, *g, mantissa, min_exp);
        if u > worst.0 {
            worst = (u, i);
        }
    }
    worst
}

/// f16 and bf16 results (computed in f32 — erf included — and rounded once) are within one
/// step of their type of the reference (the function in f64, rounded once).
#[test]
fn half_precision_transcendentals_are_within_one_step() {
    let ops = [
        (UnaryOp::Exp, grid(-17.0, 11.0, 4001)),
        (UnaryOp::Log, grid(1e-4, 1000.0, 4001)),
        (UnaryOp::Expm1, grid(-10.0, 10.0, 4001)),
        (UnaryOp::Log1p, grid(-0.99, 100.0, 4001)),
        (UnaryOp::Tanh, grid(-8.0, 8.0, 4001)),
        (UnaryOp::Sigmoid, grid(-20.0, 20.0, 4001)),
        (UnaryOp::Erf, grid(-5.0, 5.0, 8001)),
        (UnaryOp::Sin, grid(-100.0, 100.0, 4001)),
        (UnaryOp::Cos, grid(-100.0, 100.0, 4001)),
    ];
    let mut report = Vec::new();
    for dtype in [DType::F16, DType::BF16] {
        for (op, inputs) in &ops {
            let (ulps, at) = max_ulps_half(*op, dtype, inputs);
            report.push(format!("{dtype} {}: max {ulps} step (at {at})", op.name()));
            assert!(ulps <= 1, "{dtype} {} is off by {ulps} steps at {at}", op.name());
        }
    }
    println!("{}", report.join("\n"));
}

fn max_rel_f64(op: UnaryOp, inputs: &[f64]) -> (f64, f64) {
    let x = Tensor::from_f64(DType::F64, vec![inputs.len()], inputs);
    let (g, reference) = program(op, DType::F64, inputs.len(), false);
    let (_, expanded) = program(op, DType::F64, inputs.len(), true);
    let want =
        run_program(&g, &reference, &WeightStore::default(), &[x.clone()]).unwrap()[0].to_f64();
    let got = run_program(&g, &expanded, &WeightStore::default(), &[x]).unwrap()[0].to_f64();
    let mut worst = (0.0, 0.0);
    for ((w, g), &i) in want.iter().zip(&got).zip(inputs) {
        let err = if w == g || (w.is_nan() && g.is_nan()) {
            0.0
        } else if w.is_finite() && g.is_finite() {
            (w - g).abs() / w.abs().max(f64::MIN_POSITIVE)
        } else {
            f64::INFINITY
        };
        if err > worst.0 {
            worst = (err, i);
        }
    }
    worst
}

#[test]
fn f64_transcendentals_are_within_their_stated_bounds() {
    let cases: &[(UnaryOp, Vec<f64>, f64)] = &[
        (UnaryOp::Exp, grid(-700.0, 700.0, 20001), 1e-14),
        (
            UnaryOp::Log,
            [grid(1e-6, 10.0, 10001), grid(0.0, 1e300, 2001)].concat(),
            1e-14,
        ),
        (UnaryOp::Expm1, grid(-20.0, 20.0, 20001), 1e-14),
        (UnaryOp::Log1p, grid(-0.999, 20.0, 20001), 1e-14),
        (UnaryOp::Tanh, grid(-25.0, 25.0, 20001), 1e-14),
        (UnaryOp::Sigmoid, grid(-30.0, 30.0, 20001), 1e-14),
        (UnaryOp::Erf, grid(-6.0, 6.0, 20001), 1e-12),
        (UnaryOp::Sin, grid(-1000.0, 1000.0, 20001), 1e-12),
        (UnaryOp::Cos, grid(-1000.0, 1000.0, 20001), 1e-12),
    ];
    for (op, inputs, bound) in cases {
        let (err, at) = max_rel_f64(*op, inputs);
        println!("{} f64: max relative error {err:.3e} (at {at})", op.name());
        assert!(
            err <= *bound,
            "{} f64 is off by {err:e} at {at} (bound {bound:e})",
            op.name()
        );
    }
}

#[test]
fn expansion_leaves_no_transcendental_behind() {
    for op in [
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Expm1,
        UnaryOp::Log1p,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Erf,
        UnaryOp::Sin,
        UnaryOp::Cos,
    ] {
        let (_, p) = program(op, DType::F32, 4, true);
        let text = kiln_codegen::kernel::text::print_kernel(
            &p.kernels[0],
            &kiln_ir::SymbolTable::default(),
        );
        for t in [
            "exp(", "log(", "tanh(", "sigmoid(", "erf(", "sin(", "cos(", "expm1(", "log1p(",
        ] {
            assert!(!text.contains(t), "{} left `{t}` in:\n{text}", op.name());
        }
    }
    let _ = BinaryOp::Add;
}
