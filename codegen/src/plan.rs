//! From a lowered [`Program`] to the artifact's launch plan: memory planning (one scratch arena
//! per run, offsets from buffer lifetimes so buffers are reused) and the manifest's data.
//!
//! When every symbol has a bounded range, sizes are planned at the symbols' maxima and offsets
//! are constants (valid for every smaller size too); otherwise buffers are laid out one after
//! another with symbolic offsets (no reuse). Graph outputs are written straight into the output
//! tensors the caller receives; inputs and weights are read in place.

use crate::kernel::{BufferKind, Program};
use kiln_ir::{DType, Dim, Graph, SymId};
use kiln_runtime::manifest::{BufferRef, ElemType, SizeExpr, Step, SymbolSpec, TensorSpec};

/// Alignment of every scratch buffer in the arena.
pub const ARENA_ALIGN: i64 = 64;

/// Where each plan buffer lives, and the arena's size.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    pub refs: Vec<BufferRef>,
    pub arena_bytes: Dim,
    /// Bytes that buffer reuse saved against giving every scratch buffer its own memory.
    pub reused_bytes: Option<i64>,
}

pub fn size_expr(d: &Dim) -> SizeExpr {
    SizeExpr { terms: d.monomials().iter().map(|(m, c)| (m.iter().map(|s| s.0).collect(), *c)).collect() }
}

pub fn elem_type(d: DType) -> ElemType {
    match d {
        DType::F32 => ElemType::F32,
        DType::F64 => ElemType::F64,
        DType::F16 => ElemType::F16,
        DType::BF16 => ElemType::Bf16,
        DType::I64 => ElemType::I64,
        DType::I32 => ElemType::I32,
        DType::I16 => ElemType::I16,
        DType::I8 => ElemType::I8,
        DType::U8 => ElemType::U8,
        DType::Bool => ElemType::Bool,
    }
}

/// The IR dtype of a manifest element type (the inverse of [`elem_type`]).
pub fn dtype_of(e: ElemType) -> DType {
    match e {
        ElemType::F32 => DType::F32,
        ElemType::F64 => DType::F64,
        ElemType::F16 => DType::F16,
        ElemType::Bf16 => DType::BF16,
        ElemType::I64 => DType::I64,
        ElemType::I32 => DType::I32,
        ElemType::I16 => DType::I16,
        ElemType::I8 => DType::I8,
        ElemType::U8 => DType::U8,
        ElemType::Bool => DType::Bool,
    }
}

/// The signature of a graph as the manifest records it.
pub fn signature(g: &Graph) -> kiln_runtime::manifest::Signature {
    let spec = |name: &str, v: kiln_ir::ValueId| TensorSpec {
        name: name.to_string(),
        dtype: elem_type(g.ty(v).dtype),
        shape: g.ty(v).shape.iter().map(size_expr).collect(),
    };
    kiln_runtime::manifest::Signature {
        symbols: g.symbols.iter().map(|(_, s)| SymbolSpec { name: s.name.clone(), min: s.min, max: s.max }).collect(),
        inputs: g.inputs().iter().map(|&v| spec(&g.value(v).name, v)).collect(),
        outputs: g.outputs().iter().map(|(n, v)| spec(n, *v)).collect(),
    }
}

fn round_up(x: i64) -> i64 {
    (x + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN
}

/// Plans where every buffer of `prog` lives.
pub fn plan_memory(g: &Graph, prog: &Program) -> MemoryPlan {
    let n = prog.buffers.len();
    let mut refs: Vec<Option<BufferRef>> = vec![None; n];
    for (i, b) in prog.buffers.iter().enumerate() {
        refs[i] = match b.kind {
            BufferKind::Input(k) => Some(BufferRef::Input(k as u32)),
            BufferKind::Weight(k) => Some(BufferRef::Weight(k as u32)),
            BufferKind::Computed => prog.outputs.iter().position(|&o| o == i).map(|k| BufferRef::Output(k as u32)),
        };
    }
    // Lifetimes of scratch buffers in launch order: [first write, last use].
    let mut life: Vec<Option<(usize, usize)>> = vec![None; n];
    for (t, l) in prog.launches.iter().enumerate() {
        for &a in &l.args {
            if refs[a].is_none() {
                life[a] = Some(match life[a] {
                    None => (t, t),
                    Some((s, _)) => (s, t),
                });
            }
        }
    }
    let bytes = |i: usize| Dim::product(&prog.buffers[i].shape).mul(&Dim::constant(prog.buffers[i].dtype.size_bytes() as i64));
    let scratch: Vec<usize> = (0..n).filter(|&i| refs[i].is_none()).collect();
    let at_max = |d: &Dim| d.eval(&|s: SymId| g.symbols.get(s).and_then(|sym| sym.max));
    let bounded: Option<Vec<i64>> = scratch.iter().map(|&i| at_max(&bytes(i))).collect();
    let mut out: Vec<BufferRef> = Vec::with_capacity(n);
    let (arena, reused) = match bounded {
        Some(sizes) => {
            // Greedy by size: each buffer takes the lowest offset free during its lifetime.
            let mut order: Vec<usize> = (0..scratch.len()).collect();
            order.sort_by_key(|&k| (std::cmp::Reverse(sizes[k]), k));
            let mut placed: Vec<(usize, i64, i64)> = Vec::new(); // (scratch idx, offset, size)
            let mut offsets = vec![0i64; scratch.len()];
            for k in order {
                let (s, e) = life[scratch[k]].unwrap_or((0, 0));
                let size = round_up(sizes[k].max(1));
                let mut busy: Vec<(i64, i64)> = placed
                    .iter()
                    .filter(|(j, _, _)| {
                        let (s2, e2) = life[scratch[*j]].unwrap_or((0, 0));
                        s <= e2 && s2 <= e
                    })
                    .map(|(_, o, z)| (*o, *o + *z))
                    .collect();
                busy.sort();
                let mut off = 0;
                for (lo, hi) in busy {
                    if off + size <= lo {
                        break;
                    }
                    off = off.max(hi);
                }
                offsets[k] = off;
                placed.push((k, off, size));
            }
            let peak = placed.iter().map(|(_, o, z)| o + z).max().unwrap_or(0);
            let total: i64 = sizes.iter().map(|&z| round_up(z.max(1))).sum();
            for i in 0..n {
                out.push(match &refs[i] {
                    Some(r) => r.clone(),
                    None => {
                        let k = scratch.iter().position(|&x| x == i).unwrap();
                        BufferRef::Scratch { offset: SizeExpr::constant(offsets[k]), bytes: size_expr(&bytes(i)) }
                    }
                });
            }
            (Dim::constant(peak), Some(total - peak))
        }
        None => {
            let mut offset = Dim::constant(0);
            for i in 0..n {
                out.push(match &refs[i] {
                    Some(r) => r.clone(),
                    None => {
                        let r = BufferRef::Scratch { offset: size_expr(&offset), bytes: size_expr(&bytes(i)) };
                        // Keep symbolic offsets aligned: round each size up by the alignment.
                        offset = offset.add(&bytes(i)).add(&Dim::constant(ARENA_ALIGN));
                        r
                    }
                });
            }
            (offset, None)
        }
    };
    MemoryPlan { refs: out, arena_bytes: arena, reused_bytes: reused }
}

/// The manifest's launch plan: one `Launch` per kernel call, in order, then a `Copy` for each
/// output that no kernel writes in place (an input or weight returned as is, or a value
/// returned twice).
pub fn launch_steps(prog: &Program, memory: &MemoryPlan) -> Vec<Step> {
    let mut steps: Vec<Step> = prog
        .launches
        .iter()
        .map(|l| Step::Launch {
            kernel: l.kernel as u32,
            buffers: l.args.iter().map(|&a| memory.refs[a].clone()).collect(),
            range: size_expr(&l.range),
        })
        .collect();
    for (k, &b) in prog.outputs.iter().enumerate() {
        let r = &memory.refs[b];
        if *r != BufferRef::Output(k as u32) {
            let buf = &prog.buffers[b];
            let bytes = Dim::product(&buf.shape).mul(&Dim::constant(buf.dtype.size_bytes() as i64));
            steps.push(Step::Copy { from: r.clone(), to: BufferRef::Output(k as u32), bytes: size_expr(&bytes) });
        }
    }
    steps
}
