//! The manifest of a `.kiln` artifact: everything the runtime needs to know about a compiled
//! model besides the weight bytes and the code objects themselves. It is plain data (serialized
//! as JSON inside the artifact) so that the executor stays small and every field can be read
//! with `kiln inspect`.
//!
//! Sizes that depend on symbolic dims are [`SizeExpr`] polynomials over the signature's symbols,
//! evaluated once per run from the input shapes.

use serde::{Deserialize, Serialize};

/// An integer polynomial over the signature's symbols: `sum(coeff * prod(symbols))`.
/// `terms = [([0], 4), ([], 1)]` is `4*s0 + 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeExpr {
    pub terms: Vec<(Vec<u32>, i64)>,
}

impl SizeExpr {
    pub fn constant(v: i64) -> SizeExpr {
        SizeExpr { terms: if v == 0 { vec![] } else { vec![(vec![], v)] } }
    }

    /// The value with `symbols[i]` bound to symbol `i`; `None` on a missing symbol or overflow.
    pub fn eval(&self, symbols: &[i64]) -> Option<i64> {
        let mut total: i64 = 0;
        for (mono, c) in &self.terms {
            let mut t = *c;
            for &s in mono {
                t = t.checked_mul(*symbols.get(s as usize)?)?;
            }
            total = total.checked_add(t)?;
        }
        Some(total)
    }

    /// The expression as text with the symbols' names: `4*batch*seq + 1`.
    pub fn to_text(&self, symbols: &[SymbolSpec]) -> String {
        if self.terms.is_empty() {
            return "0".into();
        }
        let mut out = String::new();
        for (k, (mono, c)) in self.terms.iter().enumerate() {
            let names: Vec<String> = mono
                .iter()
                .map(|&s| symbols.get(s as usize).map_or_else(|| format!("s{s}"), |s| s.name.clone()))
                .collect();
            let (neg, mag) = (*c < 0, c.unsigned_abs());
            out.push_str(match (k, neg) {
                (0, true) => "-",
                (0, false) => "",
                (_, true) => " - ",
                (_, false) => " + ",
            });
            if names.is_empty() {
                out.push_str(&mag.to_string());
            } else {
                if mag != 1 {
                    out.push_str(&format!("{mag}*"));
                }
                out.push_str(&names.join("*"));
            }
        }
        out
    }

    pub fn as_const(&self) -> Option<i64> {
        match self.terms.as_slice() {
            [] => Some(0),
            [(m, c)] if m.is_empty() => Some(*c),
            _ => None,
        }
    }
}

/// Element types, as in the compiler's IR (the runtime keeps its own copy of this small enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    F32,
    F64,
    F16,
    Bf16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl ElemType {
    pub fn size_bytes(self) -> usize {
        match self {
            ElemType::F64 | ElemType::I64 => 8,
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::F16 | ElemType::Bf16 | ElemType::I16 => 2,
            ElemType::I8 | ElemType::U8 | ElemType::Bool => 1,
        }
    }
}

/// A symbolic dim of the signature with its inclusive range (`max = None`: unbounded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolSpec {
    pub name: String,
    pub min: i64,
    pub max: Option<i64>,
}

/// One input or output tensor of the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: ElemType,
    pub shape: Vec<SizeExpr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub symbols: Vec<SymbolSpec>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// One weight: where its bytes are in the artifact's weight section (offsets are aligned so the
/// section can be used in place after `mmap`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightSpec {
    pub name: String,
    pub dtype: ElemType,
    pub shape: Vec<i64>,
    /// Byte offset inside the weight section.
    pub offset: u64,
    pub bytes: u64,
}

/// A code object for one target (e.g. an ELF relocatable object for `x86_64`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeObjectSpec {
    pub target: String,
    /// `elf-relocatable`, later `ptx`, `hsaco`.
    pub format: String,
    /// Index of the section holding the bytes.
    pub section: u32,
    /// CPU features the code needs beyond the target's baseline (e.g. `avx2`, `fma`); checked
    /// when the code is loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_features: Vec<String>,
}

/// One compiled kernel: its symbol in the code object of each target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSpec {
    pub name: String,
    pub symbol: String,
    /// Number of buffer arguments.
    pub buffers: u32,
    /// The compiler's estimate of scalar operations per iteration of the kernel's parallel
    /// loop (0: unknown). Devices use it to run small launches without splitting them.
    #[serde(default)]
    pub work_per_item: u64,
    /// The GPU threads per item of a launch range, when the artifact has GPU code that runs
    /// more than one (GPU kernels run a row's elements, not rows, one per thread): a launch
    /// over `[start, end)` runs `(end - start) * gpu_threads_per_item` threads. Absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_threads_per_item: Option<SizeExpr>,
    /// When the artifact's GPU code runs this kernel in tiles (a matrix product in shared
    /// memory): one block per tile, which takes precedence over `gpu_threads_per_item`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_tiles: Option<TileGrid>,
}

/// A GPU grid of one block per `row_tile × column_tile` tile of a matrix of
/// `range * rows_per_item` rows and `columns` columns, for a launch over `range` items — or of
/// each batch of `batch_rows` of its rows (a convolution: one matrix per image).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TileGrid {
    pub rows_per_item: SizeExpr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_rows: Option<SizeExpr>,
    pub row_tile: u32,
    pub columns: SizeExpr,
    pub column_tile: u32,
    /// The operand type (`f16`, `bf16`) of the warp matrix instructions the tiles run on
    /// (tensor cores, matrix cores), on the targets that have them; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<String>,
}

impl TileGrid {
    /// The blocks of a launch over `items` items with these symbol values (`None` on
    /// overflow or a size that does not evaluate).
    pub fn blocks(&self, items: i64, symbols: &[i64]) -> Option<u64> {
        let rows = items.checked_mul(self.rows_per_item.eval(symbols)?)?;
        let columns = self.columns.eval(symbols)?;
        let tiles = |n: i64, t: u32| -> Option<u64> {
            let t = i64::from(t.max(1));
            u64::try_from(n.max(0).checked_add(t - 1)? / t).ok()
        };
        let column_tiles = tiles(columns, self.column_tile)?;
        match &self.batch_rows {
            None => tiles(rows, self.row_tile)?.checked_mul(column_tiles),
            Some(b) => {
                let b = b.eval(symbols)?.max(1);
                u64::try_from(rows.max(0) / b).ok()?.checked_mul(tiles(b, self.row_tile)?)?.checked_mul(column_tiles)
            }
        }
    }
}

/// Where a buffer lives during a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BufferRef {
    /// The i-th model input.
    Input(u32),
    /// The i-th model output.
    Output(u32),
    /// The i-th weight.
    Weight(u32),
    /// A region of the per-run scratch arena.
    Scratch { offset: SizeExpr, bytes: SizeExpr },
}

/// One step of the launch plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Calls kernel `kernel` with `buffers` over `0..range` of its outermost parallel loop,
    /// which the executor may split across threads.
    Launch { kernel: u32, buffers: Vec<BufferRef>, range: SizeExpr },
    /// Copies `bytes` from one buffer to another (outputs that alias inputs or weights).
    Copy { from: BufferRef, to: BufferRef, bytes: SizeExpr },
}

/// The whole manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub compiler_version: String,
    pub model_name: String,
    pub signature: Signature,
    pub weights: Vec<WeightSpec>,
    pub code_objects: Vec<CodeObjectSpec>,
    pub kernels: Vec<KernelSpec>,
    /// Bytes of the scratch arena one run needs (peak of the memory plan).
    pub arena_bytes: SizeExpr,
    pub plan: Vec<Step>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_expr_eval() {
        let e = SizeExpr { terms: vec![(vec![0], 4), (vec![0, 1], 2), (vec![], 1)] };
        assert_eq!(e.eval(&[3, 5]), Some(4 * 3 + 2 * 15 + 1));
        assert_eq!(e.eval(&[3]), None);
        assert_eq!(SizeExpr::constant(7).as_const(), Some(7));
        assert_eq!(SizeExpr { terms: vec![(vec![0], i64::MAX)] }.eval(&[2]), None);
        let syms = [SymbolSpec { name: "batch".into(), min: 1, max: None }];
        let e = SizeExpr { terms: vec![(vec![0], 4), (vec![0, 1], -2), (vec![], 1)] };
        assert_eq!(e.to_text(&syms), "4*batch - 2*batch*s1 + 1");
        assert_eq!(SizeExpr::constant(0).to_text(&syms), "0");
    }
}
