//! Graphs with fused attention ops ([`kiln_ir::Op::Attention`]) and inputs for them: every
//! scale and mask form, broadcast batch dims, leading masked keys and a fully masked row.

use kiln_ir::{DType, Graph, Tensor};

const CASES: &[&str] = &[
    // Multiplied scale, no mask; k and v shared by the heads (batch dims broadcast).
    "graph plain
     input %q: f32[2, 3, 5, 8]
     input %k: f32[2, 1, 7, 8]
     input %v: f32[1, 7, 4]
     %y: f32[2, 3, 5, 4] = attention{scale=mul(0.35355339059327373), masks=[]} %q, %k, %v
     output \"y\" %y",
    // Divided scale, a causal-style keep mask (row 0 fully masked, leading keys masked in
    // others), then an additive mask per batch.
    "graph masked
     input %q: f32[2, 2, 5, 6]
     input %k: f32[2, 2, 7, 6]
     input %v: f32[2, 2, 7, 3]
     input %keep: bool[5, 7]
     input %bias: f32[2, 1, 1, 7]
     %y: f32[2, 2, 5, 3] = attention{scale=div(2.449489742783178), masks=[keep(-inf), add]} %q, %k, %v, %keep, %bias
     output \"y\" %y",
    // A fill mask with a large negative value (as Hugging Face models write it), f64.
    "graph filled
     input %q: f64[3, 4, 5]
     input %k: f64[3, 6, 5]
     input %v: f64[3, 6, 5]
     input %pad: bool[3, 1, 6]
     %y: f64[3, 4, 5] = attention{scale=mul(0.5), masks=[fill(-3.4028234663852886e38)]} %q, %k, %v, %pad
     output \"y\" %y",
];

/// Deterministic values in [-2, 2); the bool masks as their comments say.
fn input(name: &str, dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) * 4.0 - 2.0
    };
    if dtype != DType::Bool {
        return Tensor::from_f64(dtype, shape.to_vec(), &(0..n).map(|_| next()).collect::<Vec<_>>());
    }
    let cols = *shape.last().unwrap();
    let bits: Vec<i64> = (0..n)
        .map(|i| {
            let (r, c) = ((i / cols) as i64, (i % cols) as i64);
            match name {
                // Row 0: nothing kept (NaN row); row r > 0: keys r-1.. kept (r-1 leading masked).
                "keep" => (r > 0 && c >= r - 1) as i64,
                // Fill where true: pad the last key of every batch and the first of batch 1.
                _ => (c == cols as i64 - 1 || (i / cols == 1 && c == 0)) as i64,
            }
        })
        .collect();
    Tensor::from_i64(dtype, shape.to_vec(), &bits)
}

/// Every case: the graph and its inputs.
pub fn cases() -> Vec<(Graph, Vec<Tensor>)> {
    CASES
        .iter()
        .map(|text| {
            let text: String = text.lines().map(str::trim).collect::<Vec<_>>().join("\n");
            let g = kiln_ir::text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let inputs = g
                .inputs()
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let d = g.value(v);
                    let shape: Vec<usize> = d.ty.static_shape().unwrap().iter().map(|&s| s as usize).collect();
                    input(&d.name, d.ty.dtype, &shape, i as u64 + 1)
                })
                .collect();
            (g, inputs)
        })
        .collect()
}
