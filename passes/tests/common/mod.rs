//! Helpers of the pass tests: text in, text out.
#![allow(dead_code)]

use kiln_ir::{DType, Graph, Tensor, WeightStore};

/// Parses IR text (which also verifies it); panics with the parse error.
pub fn parse(text: &str) -> Graph {
    kiln_ir::text::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Trims each line's indentation (test texts are indented in the source) and the blank lines
/// around the text.
pub fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().map(str::trim).collect();
    lines.join("\n") + "\n"
}

/// Asserts that `f` turns the graph of `input` into the graph of `expected`, both as text, and
/// that both compute bit-identical outputs (when the inputs have static shapes).
pub fn check(f: impl Fn(&Graph) -> Graph, input: &str, expected: &str) {
    let g = parse(&dedent(input));
    let out = f(&g);
    let w = weights_for(&g);
    assert_bit_identical(&g, &w, &out, &w);
    kiln_ir::verify::verify(&out).unwrap_or_else(|e| panic!("{e}\n{}", kiln_ir::text::print(&out)));
    let got = kiln_ir::text::print(&out);
    assert_eq!(got, dedent(expected), "\n--- got ---\n{got}");
    // The result reads back to the same bytes.
    assert_eq!(kiln_ir::text::print(&parse(&got)), got);
}

/// Asserts that `f` leaves the graph of `input` unchanged.
pub fn unchanged(f: impl Fn(&Graph) -> Graph, input: &str) {
    check(f, input, input);
}

/// A weight store with deterministic values for every weight of `g` (static shapes).
pub fn weights_for(g: &Graph) -> WeightStore {
    let mut store = WeightStore::default();
    for (k, &w) in g.weights().iter().enumerate() {
        let d = g.value(w);
        let shape: Vec<usize> = d.ty.static_shape().expect("static weight").iter().map(|&s| s as usize).collect();
        let n = Tensor::numel_of(&shape);
        let vals: Vec<f64> = (0..n).map(|i| ((i * 7 + k * 3) % 11) as f64 * 0.25 + 0.5).collect();
        store.insert(d.name.clone(), Tensor::from_f64(d.ty.dtype, shape, &vals));
    }
    store
}

/// Inputs for every user input of `g`, with the awkward values of each dtype (`-0.0`, `NaN`,
/// infinities, extremes); `None` when an input has a symbolic shape.
pub fn sample_inputs(g: &Graph) -> Option<Vec<Tensor>> {
    let floats = [-0.0, 0.0, 1.5, -2.25, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e-40, 3.0, -7.5];
    let ints = [-3, 0, 7, 1, -1, i64::MAX, i64::MIN, 2];
    g.inputs()
        .iter()
        .map(|&v| {
            let ty = &g.value(v).ty;
            let shape: Vec<usize> = ty.static_shape()?.iter().map(|&s| s as usize).collect();
            let n = Tensor::numel_of(&shape);
            Some(if ty.dtype.is_float() {
                Tensor::from_f64(ty.dtype, shape, &(0..n).map(|i| floats[i % floats.len()]).collect::<Vec<_>>())
            } else if ty.dtype == DType::Bool {
                Tensor::from_i64(ty.dtype, shape, &(0..n).map(|i| (i % 3 == 0) as i64).collect::<Vec<_>>())
            } else {
                Tensor::from_i64(ty.dtype, shape, &(0..n).map(|i| ints[i % ints.len()]).collect::<Vec<_>>())
            })
        })
        .collect()
}

/// Asserts that both graphs give the same outputs bit for bit (any NaN matches any NaN), on
/// [`sample_inputs`]; does nothing for graphs with symbolic input shapes.
pub fn assert_bit_identical(before: &Graph, wb: &WeightStore, after: &Graph, wa: &WeightStore) {
    let Some(inputs) = sample_inputs(before) else { return };
    let want = kiln_ir::interp::run(before, wb, &inputs).unwrap();
    let got = kiln_ir::interp::run(after, wa, &inputs).unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!((g.dtype, &g.shape), (w.dtype, &w.shape), "output {i}");
        let same = g.bytes == w.bytes
            || (g.dtype.is_float()
                && g.to_f64()
                    .iter()
                    .zip(w.to_f64())
                    .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())));
        assert!(same, "output {i} differs: {:?} vs {:?}", g.to_f64(), w.to_f64());
    }
}

/// Asserts that both graphs give the same outputs within `rtol`/`atol` (NaN matching NaN, equal
/// infinities matching) on [`sample_inputs`]: for rewrites that are equal in real arithmetic
/// but round in another order.
#[allow(dead_code)]
pub fn assert_close(before: &Graph, wb: &WeightStore, after: &Graph, wa: &WeightStore, rtol: f64, atol: f64) {
    let Some(inputs) = sample_inputs(before) else { return };
    let want = kiln_ir::interp::run(before, wb, &inputs).unwrap();
    let got = kiln_ir::interp::run(after, wa, &inputs).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let c = kiln_ir::tensor::compare(g, w, rtol, atol);
        assert!(c.as_ref().is_some_and(|c| c.bad == 0), "output {i}: {c:?}: {:?} vs {:?}", g.to_f64(), w.to_f64());
    }
}
