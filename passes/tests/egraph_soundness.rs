//! Soundness of every e-graph rule, mechanically: random graphs built from random instances of
//! the rules' left-hand sides (random shapes, permutations, reshapes, dtypes, constants from a
//! list of special values, chained with random elementwise filler), optimized by each rule
//! alone and by all rules together, and interpreted on random inputs with NaN, ±0, ±∞ mixed
//! in. Exact rules must give bit-identical outputs (any NaN matching any NaN); the rules that
//! round differently (`pow-two`, `pow-three`, the linalg rules) are compared on finite inputs
//! within rtol 1e-5 / atol 1e-6. Every rule must have fired on some graph, so the test cannot
//! pass by never exercising a rule.

mod common;
use common::weights_for;
use kiln_ir::{BinaryOp, DType, Dim, Graph, Op, ReduceKind, Tensor, TensorType, UnaryOp, ValueId};
use kiln_passes::egraph::rules::layout::PERMUTED_BINARY;
use kiln_passes::egraph::{optimize_egraph_with, rules, EgraphOptions};
use std::collections::BTreeMap;

/// xorshift64*: deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.below(i + 1));
        }
    }
}

/// Scalar constants the rules look for, and others they must not take for them.
const CONSTANTS: [f64; 12] = [1.0, -1.0, 0.0, -0.0, 2.0, 3.0, 4.0, 0.5, 0.25, 2.5, -4.0, 1e-3];
const CAST_TYPES: [DType; 7] = [DType::F16, DType::F32, DType::F64, DType::I8, DType::I32, DType::I64, DType::BF16];

struct Builder {
    g: Graph,
    rng: Rng,
    /// Float values of the graph, newest last.
    pool: Vec<ValueId>,
    n: usize,
}

impl Builder {
    fn name(&mut self) -> String {
        self.n += 1;
        format!("v{}", self.n)
    }

    fn node(&mut self, op: Op, inputs: Vec<ValueId>) -> Option<ValueId> {
        let name = self.name();
        self.g.add_node(op, inputs, &name, None).ok()
    }

    fn shape(&self, v: ValueId) -> Vec<i64> {
        self.g.ty(v).static_shape().expect("static shapes")
    }

    fn scalar(&mut self, value: f64, dtype: DType) -> ValueId {
        self.node(Op::Full { shape: vec![], value, dtype }, vec![]).expect("a scalar")
    }

    /// A pool value, usually one of the newest (so that instances chain).
    fn operand(&mut self) -> ValueId {
        let k = self.pool.len();
        if self.rng.below(3) > 0 {
            self.pool[k - 1 - self.rng.below(k.min(2))]
        } else {
            self.pool[self.rng.below(k)]
        }
    }

    fn permutation(&mut self, rank: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..rank).collect();
        self.rng.shuffle(&mut p);
        p
    }

    /// A shape with the same number of elements: the dims shuffled, merged, or split with 1s.
    fn reshaped(&mut self, shape: &[i64]) -> Vec<i64> {
        let mut s = shape.to_vec();
        match self.rng.below(4) {
            0 => self.rng.shuffle(&mut s),
            1 => s = vec![s.iter().product()],
            2 => s.insert(self.rng.below(s.len() + 1), 1),
            _ => {}
        }
        s
    }

    fn dims(s: &[i64]) -> Vec<Dim> {
        s.iter().map(|&d| Dim::constant(d)).collect()
    }

    /// A 1-d convolution with a bias, then an inference batch norm written out (the folding
    /// rules): `((conv(x) + b) - mean) * scale + shift`, per channel, in f64 (folding reorders
    /// the rounding of sums that may cancel), back to f32.
    fn conv_batch_norm(&mut self, x: ValueId) -> Option<ValueId> {
        let s = self.shape(x);
        let len: i64 = s.iter().product();
        let (cin, length) = if s.len() >= 2 { (s[0], len / s[0]) } else { (1, len) };
        let x64 = self.node(Op::Cast(DType::F64), vec![x])?;
        let input = self.node(Op::Reshape { shape: Self::dims(&[1, cin, length]) }, vec![x64])?;
        let cout = self.rng.pick(&[1i64, 2, 3]);
        let weight = |b: &mut Self, shape: &[i64]| {
            b.n += 1;
            b.g.add_weight(&format!("bn{}", b.n), TensorType::new(DType::F64, Self::dims(shape)))
        };
        let w = weight(self, &[cout, cin, 1]);
        let attrs = kiln_ir::ConvAttrs {
            stride: vec![1],
            padding: vec![0],
            dilation: vec![1],
            groups: 1,
            transposed: false,
            output_padding: vec![0],
        };
        let mut y = self.node(Op::Conv(attrs.clone()), vec![input, w])?;
        if self.rng.below(3) == 0 {
            // A second convolution of the same input (merge-parallel-convs).
            let w2 = weight(self, &[cout, cin, 1]);
            let y2 = self.node(Op::Conv(attrs), vec![input, w2])?;
            y = self.node(Op::Binary(BinaryOp::Sub), vec![y, y2])?;
        }
        // Each step is optional, so that every rule's left-hand side occurs as written (the
        // test also runs each rule alone).
        let step = |b: &mut Self, y: ValueId, op: BinaryOp| {
            if b.rng.below(3) == 0 {
                return Some(y);
            }
            let c = weight(b, &[cout, 1]);
            b.node(Op::Binary(op), vec![y, c])
        };
        y = step(self, y, BinaryOp::Add)?;
        y = step(self, y, BinaryOp::Sub)?;
        y = step(self, y, BinaryOp::Mul)?;
        let y = step(self, y, BinaryOp::Add)?;
        let y = self.node(Op::Reshape { shape: Self::dims(&s) }, vec![y]).or_else(|| {
            let flat = self.g.ty(y).static_shape()?;
            let n: i64 = flat.iter().product();
            self.node(Op::Reshape { shape: Self::dims(&[n]) }, vec![y])
        })?;
        self.node(Op::Cast(DType::F32), vec![y])
    }

    /// Decomposed attention on `x` (recognize-attention): `softmax(masks(scale(q @ kᵀ))) @ v`
    /// with q = x (as a matrix), k and v either x itself or weights, a random scale (none,
    /// `* c`, `/ c`) and random masks (an added weight, a keep or fill `where` on a comparison).
    fn attention(&mut self, x: ValueId) -> Option<ValueId> {
        let dtype = self.g.ty(x).dtype;
        let q = match self.shape(x).len() {
            1 => {
                let s = self.shape(x);
                self.node(Op::Reshape { shape: Self::dims(&[1, s[0]]) }, vec![x])?
            }
            _ => x,
        };
        let qs = self.shape(q);
        let r = qs.len();
        let (m, d) = (qs[r - 2], qs[r - 1]);
        let (k, v) = if self.rng.below(2) == 0 {
            (q, q)
        } else {
            let n = self.rng.pick(&[1i64, 2, 4]);
            let e = self.rng.pick(&[1i64, 3]);
            let k = self.g.add_weight(&format!("k{}", self.n), TensorType::new(dtype, Self::dims(&[n, d])));
            let v = self.g.add_weight(&format!("v{}", self.n), TensorType::new(dtype, Self::dims(&[n, e])));
            (k, v)
        };
        let n = self.shape(k)[self.shape(k).len() - 2];
        let mut swap: Vec<usize> = (0..self.shape(k).len()).collect();
        let rk = swap.len();
        swap.swap(rk - 2, rk - 1);
        let kt = self.node(Op::Permute { perm: swap }, vec![k])?;
        let mut s = self.node(Op::MatMul, vec![q, kt])?;
        match self.rng.below(3) {
            0 => {}
            how => {
                let c = self.rng.pick(&CONSTANTS);
                let c = self.scalar(c, dtype);
                let op = if how == 1 { BinaryOp::Mul } else { BinaryOp::Div };
                s = self.node(Op::Binary(op), vec![s, c])?;
            }
        }
        for _ in 0..self.rng.below(3) {
            s = match self.rng.below(3) {
                0 => {
                    let w = self.g.add_weight(&format!("m{}", self.n), TensorType::new(dtype, Self::dims(&[m, n])));
                    self.n += 1;
                    self.node(Op::Binary(BinaryOp::Add), vec![s, w])?
                }
                how => {
                    let zero = self.scalar(0.5, dtype);
                    let cond = self.node(Op::Binary(BinaryOp::Gt), vec![s, zero])?;
                    let fill = self.rng.pick(&[f64::NEG_INFINITY, -1e9, 0.0]);
                    let fill = self.scalar(fill, dtype);
                    let ins = if how == 1 { vec![cond, s, fill] } else { vec![cond, fill, s] };
                    self.node(Op::Where, ins)?
                }
            };
        }
        let last = self.shape(s).len() - 1;
        let max = self.node(Op::Reduce { kind: ReduceKind::Max, axes: vec![last], keepdim: true }, vec![s])?;
        let centered = self.node(Op::Binary(BinaryOp::Sub), vec![s, max])?;
        let e = self.node(Op::Unary(UnaryOp::Exp), vec![centered])?;
        let sum = self.node(Op::Reduce { kind: ReduceKind::Sum, axes: vec![last], keepdim: true }, vec![e])?;
        let p = self.node(Op::Binary(BinaryOp::Div), vec![e, sum])?;
        self.node(Op::MatMul, vec![p, v])
    }

    /// One random instance of a rule's left-hand side (or filler), built on pool values.
    fn step(&mut self) -> Option<ValueId> {
        let x = self.operand();
        let dtype = self.g.ty(x).dtype;
        let rank = self.shape(x).len();
        let v = match self.rng.below(13) {
            0 => {
                // x op c or c op x with a special constant.
                // Constants near what each op's rules look for, and a few others.
                let (op, near): (BinaryOp, &[f64]) = match self.rng.below(5) {
                    0 => (BinaryOp::Mul, &[1.0, -1.0, 2.0, 0.5, 0.0]),
                    1 => (BinaryOp::Div, &[1.0, 4.0, 0.25, 3.0, -4.0, 0.0]),
                    2 => (BinaryOp::Sub, &[0.0, -0.0, 1.0]),
                    3 => (BinaryOp::Add, &[-0.0, 0.0, 1.0]),
                    _ => (BinaryOp::Pow, &[1.0, 2.0, 3.0, 2.5, 0.5, -1.0]),
                };
                let c = if self.rng.below(4) == 0 { self.rng.pick(&CONSTANTS) } else { self.rng.pick(near) };
                let c = self.scalar(c, dtype);
                let ins = if self.rng.below(2) == 0 { vec![x, c] } else { vec![c, x] };
                let y = self.node(Op::Binary(op), ins)?;
                if op == BinaryOp::Mul && self.rng.below(2) == 0 {
                    // Twice (combine-scales).
                    let c2 = self.rng.pick(near);
                    let c2 = self.scalar(c2, dtype);
                    self.node(Op::Binary(op), vec![y, c2])?
                } else {
                    y
                }
            }
            1 => {
                let n = self.node(Op::Unary(UnaryOp::Neg), vec![x])?;
                if self.rng.below(2) == 0 {
                    self.node(Op::Unary(UnaryOp::Neg), vec![n])?
                } else {
                    let y = self.operand();
                    let ins = if self.rng.below(2) == 0 { vec![y, n] } else { vec![n, y] };
                    self.node(Op::Binary(BinaryOp::Add), ins)?
                }
            }
            2 => {
                let (a, b) = (self.rng.pick(&CAST_TYPES), self.rng.pick(&CAST_TYPES));
                let c = self.node(Op::Cast(a), vec![x])?;
                let c = self.node(Op::Cast(b), vec![c])?;
                // Back to a float for the rest of the graph.
                self.node(Op::Cast(DType::F32), vec![c])?
            }
            3 => {
                let p = self.permutation(rank);
                let a = self.node(Op::Permute { perm: p }, vec![x])?;
                let q = self.permutation(rank);
                self.node(Op::Permute { perm: q }, vec![a])?
            }
            4 => {
                let u = self.rng.pick(&UnaryOp::ALL);
                // `not` takes integers: cast before the permute.
                let x = if matches!(u, UnaryOp::Not) { self.node(Op::Cast(DType::I32), vec![x])? } else { x };
                let p = self.permutation(rank);
                let a = self.node(Op::Permute { perm: p }, vec![x])?;
                let r = self.node(Op::Unary(u), vec![a])?;
                if self.g.ty(r).dtype.is_float() {
                    r
                } else {
                    self.node(Op::Cast(DType::F32), vec![r])?
                }
            }
            5 => {
                let y =
                    self.pool.iter().rev().copied().find(|&y| y != x && self.shape(y) == self.shape(x)).unwrap_or(x);
                let p = self.permutation(rank);
                let a = self.node(Op::Permute { perm: p.clone() }, vec![x])?;
                let b = self.node(Op::Permute { perm: p }, vec![y])?;
                let op = self.rng.pick(&PERMUTED_BINARY);
                self.node(Op::Binary(op), vec![a, b])?
            }
            6 => {
                let s1 = self.reshaped(&self.shape(x));
                let a = self.node(Op::Reshape { shape: Self::dims(&s1) }, vec![x])?;
                let s2 = if self.rng.below(3) == 0 { self.shape(x) } else { self.reshaped(&s1) };
                self.node(Op::Reshape { shape: Self::dims(&s2) }, vec![a])?
            }
            7 => {
                // Make size-1 dims, then expand them twice.
                let mut s = self.shape(x);
                s.insert(0, 1);
                let a = self.node(Op::Reshape { shape: Self::dims(&s) }, vec![x])?;
                let mut mid = s.clone();
                mid[0] = if self.rng.below(2) == 0 { 1 } else { 2 };
                let b = self.node(Op::Expand { shape: Self::dims(&mid) }, vec![a])?;
                let mut out = mid.clone();
                out[0] = 2;
                self.node(Op::Expand { shape: Self::dims(&out) }, vec![b])?
            }
            8 => {
                // A matmul with a scalar factor somewhere, against a weight.
                let s = self.shape(x);
                let k = *s.last()?;
                let n = self.rng.pick(&[1i64, 2, 5]);
                let w = self.g.add_weight(&format!("w{}", self.n), TensorType::new(dtype, Self::dims(&[k, n])));
                let c = self.rng.pick(&CONSTANTS);
                let c = self.scalar(c, dtype);
                match self.rng.below(6) {
                    5 => {
                        // A per-column scale after the matmul (matmul-scaled-columns).
                        let gamma =
                            self.g.add_weight(&format!("g{}", self.n), TensorType::new(dtype, Self::dims(&[n])));
                        let m = self.node(Op::MatMul, vec![x, w])?;
                        self.node(Op::Binary(BinaryOp::Mul), vec![m, gamma])?
                    }
                    0 => {
                        let xs = self.node(Op::Binary(BinaryOp::Mul), vec![x, c])?;
                        self.node(Op::MatMul, vec![xs, w])?
                    }
                    4 => {
                        // A chain of two matmuls, in f64 (re-association reorders sums, so the
                        // comparison needs the headroom), back to f32.
                        let x64 = self.node(Op::Cast(DType::F64), vec![x])?;
                        let f64w = |b: &mut Self, r: i64, c: i64| {
                            let name = format!("c{}_{r}", b.n);
                            b.n += 1;
                            b.g.add_weight(&name, TensorType::new(DType::F64, Self::dims(&[r, c])))
                        };
                        let (p, q) = (self.rng.pick(&[1i64, 3, 6]), self.rng.pick(&[1i64, 2, 7]));
                        let a = f64w(self, k, p);
                        let b = f64w(self, p, q);
                        let chain = if self.rng.below(3) == 0 {
                            // x @ A + x @ A' (matmul-distribute), or x @ (A + A') (matmul-factor).
                            let a2 = f64w(self, k, p);
                            if self.rng.below(2) == 0 {
                                let xa = self.node(Op::MatMul, vec![x64, a])?;
                                let xa2 = self.node(Op::MatMul, vec![x64, a2])?;
                                self.node(Op::Binary(BinaryOp::Add), vec![xa, xa2])?
                            } else {
                                let s = self.node(Op::Binary(BinaryOp::Add), vec![a, a2])?;
                                self.node(Op::MatMul, vec![x64, s])?
                            }
                        } else if self.rng.below(2) == 0 {
                            let xa = self.node(Op::MatMul, vec![x64, a])?;
                            self.node(Op::MatMul, vec![xa, b])?
                        } else {
                            let ab = self.node(Op::MatMul, vec![a, b])?;
                            self.node(Op::MatMul, vec![x64, ab])?
                        };
                        self.node(Op::Cast(DType::F32), vec![chain])?
                    }
                    3 => {
                        // Two projections of one input (merge-parallel-matmuls).
                        let w2 =
                            self.g.add_weight(&format!("u{}", self.n), TensorType::new(dtype, Self::dims(&[k, n])));
                        let a = self.node(Op::MatMul, vec![x, w])?;
                        let b = self.node(Op::MatMul, vec![x, w2])?;
                        self.node(Op::Binary(BinaryOp::Sub), vec![a, b])?
                    }
                    1 => {
                        let ws = self.node(Op::Binary(BinaryOp::Mul), vec![w, c])?;
                        self.node(Op::MatMul, vec![x, ws])?
                    }
                    _ => {
                        let m = self.node(Op::MatMul, vec![x, w])?;
                        self.node(Op::Binary(BinaryOp::Mul), vec![m, c])?
                    }
                }
            }
            9 => self.attention(x)?,
            10 => self.conv_batch_norm(x)?,
            _ => {
                let u = self.rng.pick(&[UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Abs, UnaryOp::Relu, UnaryOp::Sigmoid]);
                self.node(Op::Unary(u), vec![x])?
            }
        };
        (self.g.ty(v).dtype.is_float()).then_some(v)
    }
}

/// A random graph: two float inputs of one random shape, `steps` instances, the last two
/// values as outputs.
fn random_graph(seed: u64, steps: usize) -> Graph {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let rank = 1 + rng.below(3);
    let shape: Vec<i64> = (0..rank).map(|_| 1 + rng.below(3) as i64).collect();
    let mut g = Graph::new("r");
    let ty = TensorType::new(DType::F32, Builder::dims(&shape));
    let a = g.add_input("a", ty.clone());
    let b = g.add_input("b", ty);
    let mut builder = Builder { g, rng, pool: vec![a, b], n: 0 };
    for _ in 0..steps {
        if let Some(v) = builder.step() {
            builder.pool.push(v);
        }
    }
    let k = builder.pool.len();
    builder.g.add_output("y0", builder.pool[k - 1]);
    if k > 3 {
        builder.g.add_output("y1", builder.pool[k - 2]);
    }
    builder.g
}

/// Inputs: random values, with NaN, ±0 and ±∞ mixed in when `specials`.
fn inputs(g: &Graph, seed: u64, specials: bool) -> Vec<Tensor> {
    let mut rng = Rng(seed | 1);
    let odd = [0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.0, -1.0];
    g.inputs()
        .iter()
        .map(|&v| {
            let ty = g.ty(v);
            let shape: Vec<usize> = ty.static_shape().unwrap().iter().map(|&d| d as usize).collect();
            let n = Tensor::numel_of(&shape);
            let vals: Vec<f64> = (0..n)
                .map(|_| {
                    if specials && rng.below(4) == 0 {
                        rng.pick(&odd)
                    } else {
                        (rng.below(2001) as f64 - 1000.0) / 250.0
                    }
                })
                .collect();
            Tensor::from_f64(ty.dtype, shape, &vals)
        })
        .collect()
}

fn exact_rule(name: &str) -> bool {
    !matches!(
        name,
        "pow-two"
            | "pow-three"
            | "matmul-scaled-left"
            | "matmul-scaled-right"
            | "scaled-matmul"
            | "matmul-reassociate-left"
            | "matmul-reassociate-right"
            | "matmul-distribute"
            | "matmul-factor"
            | "matmul-scaled-columns"
            | "scale-over-shift"
            | "scale-over-centering"
            | "combine-shifts"
            | "combine-scales"
            | "combine-shift-and-centering"
            | "combine-centering-and-shift"
            | "conv-scaled-channels"
    )
}

/// Whether `got` matches `want`: bit for bit (any NaN for any NaN), or within tolerance.
fn same(got: &Tensor, want: &Tensor, exact: bool) -> bool {
    if (got.dtype, &got.shape) != (want.dtype, &want.shape) {
        return false;
    }
    if exact {
        got.to_f64().iter().zip(want.to_f64()).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
    } else {
        kiln_ir::tensor::compare(got, want, 1e-5, 1e-6).is_some_and(|c| c.bad == 0)
    }
}

#[test]
fn every_rule_keeps_the_values_of_random_instances() {
    let all_names: Vec<String> = rules::all().into_iter().map(|r| r.name).collect();
    let mut fired: BTreeMap<String, usize> = all_names.iter().map(|n| (n.clone(), 0)).collect();
    let mut bad = Vec::new();
    let opts = EgraphOptions::default();
    for seed in 0..600u64 {
        let g = random_graph(seed, 8);
        let w = weights_for(&g);
        // Each rule alone: what fired must keep the values.
        let mut changed_by = Vec::new();
        for r in rules::all() {
            let name = r.name.clone();
            let (out, report) = optimize_egraph_with(&g, &opts, vec![r]).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let Some(&n) = report.applied.get(&name) else { continue };
            *fired.get_mut(&name).unwrap() += n;
            if kiln_ir::text::print(&out) != kiln_ir::text::print(&g) {
                changed_by.push((name, out));
            }
        }
        for (name, out) in changed_by {
            let exact = exact_rule(&name);
            let x = inputs(&g, seed, exact);
            let want = kiln_ir::interp::run(&g, &w, &x).unwrap();
            let got = kiln_ir::interp::run(&out, &w, &x).unwrap_or_else(|e| panic!("{name}, seed {seed}: {e}"));
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                if !same(a, b, exact) {
                    bad.push(format!(
                        "rule {name}, seed {seed}, output {i}: {:?} vs {:?}\n{}\n=>\n{}",
                        a.to_f64(),
                        b.to_f64(),
                        kiln_ir::text::print(&g),
                        kiln_ir::text::print(&out)
                    ));
                }
            }
        }
        // All rules together (at the inexact rules' tolerance, on finite inputs).
        let (out, _) = optimize_egraph_with(&g, &opts, rules::all()).unwrap();
        let x = inputs(&g, seed, false);
        let want = kiln_ir::interp::run(&g, &w, &x).unwrap();
        let got = kiln_ir::interp::run(&out, &w, &x).unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            if !same(a, b, false) {
                bad.push(format!("all rules, seed {seed}, output {i}: {:?} vs {:?}", a.to_f64(), b.to_f64()));
            }
        }
    }
    let never: Vec<&String> = fired.iter().filter(|(_, &n)| n == 0).map(|(k, _)| k).collect();
    println!("applications per rule over the random graphs: {fired:?}");
    assert!(bad.is_empty(), "{} unsound results:\n{}", bad.len(), bad[..bad.len().min(3)].join("\n\n"));
    assert!(never.is_empty(), "rules that never fired on the random graphs (extend the generator): {never:?}");
}
