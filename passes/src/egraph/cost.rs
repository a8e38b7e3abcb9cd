//! The cost model: a roofline time per node, aware of kiln's fusion, from a per-target table
//! of peak arithmetic throughput and memory bandwidth.
//!
//! A node's time is `flops / peak + bytes / bandwidth` on the CPUs and the roofline
//! `max(flops / peak, bytes / bandwidth)` on the GPUs (see [`MACHINES`]), plus its launches. What counts as bytes follows what
//! kiln's fusion does (`kiln-codegen`'s `kernel::lower`): elementwise ops and views are fused
//! into the kernel that consumes them, so they move no intermediate bytes and cost only their
//! arithmetic (views: a quarter operation per element, for index arithmetic); matmuls,
//! convolutions, reductions, pools, gathers and cumulative sums read their operands and write
//! their result. Constants (`full`, `iota`, `dim_value`), inputs and weights cost nothing.
//! Transcendentals count as [`TRANSCENDENTAL_FLOPS`] operations (kiln expands them into
//! polynomials; `pow` as two), divisions and square roots as [`SLOW_OP_FLOPS`]. A node computed from weights and constants only costs nothing: constant
//! folding computes it at compile time. Symbolic sizes are estimated at their upper bound, or [`UNBOUNDED_DIM`]
//! when they have none. A class without a type (a rule built a node that does not
//! type-check) costs infinity, so extraction never picks it.
//!
//! Extraction ([`super::extract`]) adds the own times of every value a candidate needs,
//! each once.

use super::lang::{TensorAnalysis, TensorGraph, TensorNode};
use kiln_ir::{BinaryOp, Dim, Op, SymbolTable, TensorType, UnaryOp};

/// A target's peak throughput and bandwidth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Machine {
    pub name: &'static str,
    /// f32 operations per second (an FMA is two).
    pub peak_flops: f64,
    /// Bytes per second from main memory.
    pub bandwidth: f64,
    /// Seconds to launch one kernel.
    pub launch: f64,
    /// Whether memory traffic overlaps arithmetic (a node's time is then the larger of the
    /// two, the roofline; otherwise their sum).
    pub overlap: bool,
}

/// The machines the cost model knows, by kiln target name. `x86_64`: one core of the
/// development machine (AVX2 FMA peak measured with `scripts/fma_peak.c`: 97 GFLOP/s; 20 GB/s
/// is the order of one core's share of DRAM bandwidth; a launch of kiln's CPU device costs
/// about a microsecond). On the CPUs, memory traffic and arithmetic do not overlap: kiln's
/// CPU loop nests are neither blocked nor prefetched, and are measured to stall on loads and
/// stores (docs/benchmarks.md: the matmul inner loop; a 1024-key attention runs 1.2–1.3×
/// faster fused than with its 32 MiB of score matrices written and read back, at about the same
/// arithmetic, docs/egraph.md), so time adds up. GPUs hide memory latency behind many warps: roofline. The GPU entries are the vendors' published f32 figures (H100 SXM:
/// 67 TFLOP/s non-tensor f32, 3.35 TB/s HBM3, for sm_90 and sm_90a; A100 SXM: 19.5 TFLOP/s,
/// 2.0 TB/s; MI250X: 95.7 TFLOP/s f32 matrix, 3.2 TB/s; MI300X: 163 TFLOP/s f32 matrix, 5.3 TB/s;
/// Radeon RX 7900 XTX: 61 TFLOP/s f32, 0.96 TB/s) and the usual few microseconds per kernel
/// launch, for the GPU targets.
pub const MACHINES: &[(&str, Machine)] = &[
    (
        "x86_64",
        Machine { name: "x86-64 core (AVX2, FMA)", peak_flops: 97e9, bandwidth: 20e9, launch: 1e-6, overlap: false },
    ),
    (
        "aarch64",
        Machine { name: "aarch64 core (NEON)", peak_flops: 50e9, bandwidth: 20e9, launch: 1e-6, overlap: false },
    ),
    ("sm_90", Machine { name: "NVIDIA H100 SXM", peak_flops: 67e12, bandwidth: 3.35e12, launch: 4e-6, overlap: true }),
    ("sm_90a", Machine { name: "NVIDIA H100 SXM", peak_flops: 67e12, bandwidth: 3.35e12, launch: 4e-6, overlap: true }),
    ("sm_80", Machine { name: "NVIDIA A100 SXM", peak_flops: 19.5e12, bandwidth: 2.0e12, launch: 4e-6, overlap: true }),
    ("gfx90a", Machine { name: "AMD MI250X", peak_flops: 95.7e12, bandwidth: 3.2e12, launch: 4e-6, overlap: true }),
    ("gfx942", Machine { name: "AMD MI300X", peak_flops: 163e12, bandwidth: 5.3e12, launch: 4e-6, overlap: true }),
    ("gfx1100", Machine { name: "AMD Radeon RX 7900 XTX", peak_flops: 61e12, bandwidth: 0.96e12, launch: 4e-6, overlap: true }),
];

/// The machine of a target (x86-64 for names the table lacks).
pub fn machine(target: &str) -> Machine {
    MACHINES.iter().find(|(t, _)| *t == target).map_or(MACHINES[0].1, |(_, m)| *m)
}

/// Operations counted for one transcendental.
pub const TRANSCENDENTAL_FLOPS: f64 = 20.0;
/// Operations counted for a division or square root (their throughput is a fraction of a
/// multiply's on every target).
pub const SLOW_OP_FLOPS: f64 = 4.0;
/// The size assumed for a symbolic dim without an upper bound.
pub const UNBOUNDED_DIM: i64 = 256;

/// Estimated work of one node (or a graph).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    pub flops: f64,
    pub bytes: f64,
    /// Kernels launched: matmuls, convolutions, pools and cumulative sums are kernels of
    /// their own; everything else fuses into a consumer.
    pub launches: f64,
}

impl Work {
    pub fn seconds(&self, m: &Machine) -> f64 {
        let (compute, memory) = (self.flops / m.peak_flops, self.bytes / m.bandwidth);
        let busy = if m.overlap { compute.max(memory) } else { compute + memory };
        busy + self.launches * m.launch
    }
}

fn dim_estimate(d: &Dim, symbols: &SymbolTable) -> f64 {
    let value_of = |s| symbols.get(s).map(|sym| sym.max.unwrap_or(UNBOUNDED_DIM.max(sym.min)));
    d.eval(&value_of).unwrap_or(UNBOUNDED_DIM) as f64
}

fn numel(t: &TensorType, symbols: &SymbolTable) -> f64 {
    t.shape.iter().map(|d| dim_estimate(d, symbols)).product()
}

fn bytes(t: &TensorType, symbols: &SymbolTable) -> f64 {
    numel(t, symbols) * t.dtype.size_bytes() as f64
}

/// The work of `op` producing `out` from operands of types `ins`.
pub fn op_work(op: &Op, ins: &[&TensorType], out: &TensorType, symbols: &SymbolTable) -> Work {
    let n = numel(out, symbols);
    let io = || ins.iter().map(|t| bytes(t, symbols)).sum::<f64>() + bytes(out, symbols);
    match op {
        Op::Unary(u) if is_transcendental(*u) => Work { flops: n * TRANSCENDENTAL_FLOPS, ..Work::default() },
        Op::Unary(UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Reciprocal) => {
            Work { flops: n * SLOW_OP_FLOPS, ..Work::default() }
        }
        Op::Binary(BinaryOp::Pow) => Work { flops: n * 2.0 * TRANSCENDENTAL_FLOPS, ..Work::default() },
        Op::Binary(BinaryOp::Div | BinaryOp::FloorDiv | BinaryOp::Rem) => {
            Work { flops: n * SLOW_OP_FLOPS, ..Work::default() }
        }
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_) => Work { flops: n, ..Work::default() },
        Op::Reshape { .. }
        | Op::Permute { .. }
        | Op::Expand { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Concat { .. } => Work { flops: n * 0.25, ..Work::default() },
        Op::Full { .. } | Op::Iota { .. } | Op::DimValue { .. } => Work::default(),
        Op::MatMul => {
            let k = ins.first().and_then(|a| a.shape.last()).map_or(1.0, |d| dim_estimate(d, symbols));
            Work { flops: 2.0 * n * k, bytes: io(), launches: 1.0 }
        }
        Op::Attention(a) => {
            // Per query row and key, as `kiln_codegen`'s attention kernel does it with tiles of
            // 4 keys: the score's dot product, its scale and masks, its `exp` and a quarter of
            // the tile's rescale `exp`, the accumulation of its value row and a quarter of the
            // row's rescale. No score matrix goes through memory: the operands are read and
            // the output written.
            let last = |t: Option<&&TensorType>, from_end: usize| {
                t.and_then(|t| t.shape.len().checked_sub(from_end).map(|i| dim_estimate(&t.shape[i], symbols)))
                    .unwrap_or(1.0)
            };
            let (d, keys, e) = (last(ins.first(), 1), last(ins.get(1), 2), last(ins.get(2), 1));
            let per_key = 2.0 * d + 2.25 * e + 1.25 * TRANSCENDENTAL_FLOPS + 6.0 + a.masks.len() as f64;
            Work { flops: n / e.max(1.0) * keys * per_key, bytes: io(), launches: 1.0 }
        }
        Op::Conv(_) => {
            let w = ins.get(1).copied();
            let taps: f64 = w.map_or(1.0, |w| w.shape.iter().skip(1).map(|d| dim_estimate(d, symbols)).product());
            Work { flops: 2.0 * n * taps, bytes: io(), launches: 1.0 }
        }
        Op::Pool(_) | Op::AdaptivePool { .. } | Op::CumSum { .. } | Op::ArgReduce { .. } => {
            let input = ins.first().map_or(n, |t| numel(t, symbols));
            Work { flops: input, bytes: bytes(out, symbols), launches: 1.0 }
        }
        Op::Reduce { .. } => {
            // Hoisted into its consumer's kernel (softmax, norms): no launch of its own.
            let input = ins.first().map_or(n, |t| numel(t, symbols));
            Work { flops: input, bytes: bytes(out, symbols), launches: 0.0 }
        }
        Op::Gather { .. } => Work { flops: n, bytes: io(), launches: 0.0 },
    }
}

fn is_transcendental(u: UnaryOp) -> bool {
    matches!(u.name(), "exp" | "log" | "expm1" | "log1p" | "tanh" | "sigmoid" | "erf" | "sin" | "cos")
}

/// The work of e-node `n` of `egraph` (`None` when it does not type-check).
pub fn node_work(egraph: &TensorGraph, n: &TensorNode) -> Option<Work> {
    if n.is_attribute() {
        return Some(Work::default());
    }
    let Some(op) = TensorAnalysis::op_of(egraph, n) else {
        // Inputs and weights.
        return Some(Work::default());
    };
    let operands = TensorAnalysis::operands(egraph, n);
    let ins: Vec<&TensorType> = operands.iter().map(|&c| egraph[c].data.ty()).collect::<Option<_>>()?;
    let out = kiln_ir::infer::infer(&op, &ins, &egraph.analysis.symbols).ok()?;
    if !operands.is_empty() && operands.iter().all(|&c| egraph[c].data.is_constant()) {
        // Computed from weights and constants: constant folding does it at compile time.
        return Some(Work::default());
    }
    Some(op_work(&op, &ins, &out, &egraph.analysis.symbols))
}

/// The own time of e-node `n` (infinite when it does not type-check), for extraction.
pub fn node_seconds(egraph: &TensorGraph, n: &TensorNode, machine: &Machine) -> f64 {
    node_work(egraph, n).map_or(f64::INFINITY, |w| w.seconds(machine))
}

/// The estimated work of a whole graph (every node once), for reports.
pub fn graph_work(g: &kiln_ir::Graph) -> Work {
    let mut total = Work::default();
    for (_, node) in g.nodes() {
        let ins: Vec<&TensorType> = node.inputs.iter().map(|&v| g.ty(v)).collect();
        let w = op_work(&node.op, &ins, g.ty(node.output), &g.symbols);
        total.flops += w.flops;
        total.bytes += w.bytes;
        total.launches += w.launches;
    }
    total
}
