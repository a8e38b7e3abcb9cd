//! # kiln-ir: the graph IR
//!
//! This crate owns kiln's tensor graph IR — dtypes, symbolic shapes, the SSA graph, type
//! inference, the verifier, the text form (printer and parser) and the reference interpreter
//! that is the oracle for every other stage. It does not read PyTorch archives (`kiln-frontend`)
//! and does not optimize (`kiln-passes`).
//!
//! ## Values and types
//!
//! A graph holds *values* (SSA tensors) and *nodes*, each in a dense arena addressed by a `u32`
//! id ([`ValueId`], [`NodeId`]). A value is defined exactly once: as a user input, as a weight
//! (a named parameter, buffer or constant whose bytes live in a [`WeightStore`]), or as the one
//! result of a node. Every value has a [`TensorType`]: a [`DType`] (`f32 f64 f16 bf16 i64 i32 i16
//! i8 u8 bool`) and a shape of [`Dim`]s. A dim is an integer polynomial over the graph's symbols
//! (`16`, `s0`, `4*s0`, `s0*s1+1`); each symbol has an inclusive `[min, max]` range taken from the
//! export's `range_constraints`. Value names are unique within a graph.
//!
//! ## Invariants (checked by [`verify::verify`])
//!
//! 1. Every operand and output id refers to an existing value; every node's result is a value
//!    defined by that node; inputs and weights are defined as such.
//! 2. Nodes are in execution order: each operand is defined (as an input, a weight or by an
//!    earlier node) before the node that uses it.
//! 3. The stored type of each node's result equals what [`infer::infer`] computes from its op and
//!    its operands' types; op attributes are in range (axes < rank, permutations are
//!    permutations, strides positive, ...).
//! 4. Every dim refers only to symbols of the graph's symbol table; symbol names are
//!    identifiers with `min <= max`; value names are unique, non-empty and use only
//!    `[A-Za-z0-9_.]`.
//! 5. Window attributes are in range (stride, kernel and dilation >= 1, paddings >= 0) and no
//!    size arithmetic of type inference overflows `i64`.
//!
//! ## Ops and their exact semantics
//!
//! Broadcasting follows NumPy: shapes align at the right and a dim of 1 stretches. Binary ops
//! require both operands to have the same dtype (the frontend applies PyTorch's type promotion
//! with explicit casts). Floating-point results are computed in `f64` by the interpreter and
//! rounded to the result dtype after each op; integer results wrap to the result dtype.
//!
//! * **Unary** (`x -> y`, same shape): `neg abs exp log log1p expm1 sqrt rsqrt (1/sqrt)
//!   reciprocal tanh sigmoid (1/(1+e^-x)) erf sin cos relu (max(x,0)) floor ceil round (half to
//!   even) sign (-1, 0, 1) not (logical on bool, bitwise on ints) isnan (-> bool)`.
//!   Transcendentals (`exp` through `cos`) accept float dtypes only.
//! * **Binary** (`a, b -> y`, broadcast): `add sub mul div` (true division; on integers it
//!   truncates toward zero — the frontend only emits integer `div` where PyTorch truncates),
//!   `floordiv` (rounds toward -inf), `rem` (sign of the divisor, like Python `%`), `pow`, `max`,
//!   `min` (NaN-propagating, like `torch.maximum`), comparisons `eq ne lt le gt ge` (-> bool),
//!   logical `and or xor` (bool, or bitwise on integers).
//! * **where** (`cond: bool, a, b -> y`, broadcast): `cond ? a : b`.
//! * **cast** (`x -> y` of dtype `to`): float → int truncates toward zero; anything → bool is
//!   `x != 0`; bool → number is 0/1; float → narrower float rounds to nearest even.
//! * **reduce_{sum,mean,max,min,prod}** (`x -> y`) over sorted unique `axes`, keeping them as
//!   size 1 when `keepdim`. Float sums accumulate in `f64`. `max`/`min` propagate NaN. An empty
//!   `axes` list reduces nothing (identity).
//! * **argmax / argmin** (`x -> i64`) over one `axis`: index of the first extremum (NaN counts
//!   as the extremum, like PyTorch).
//! * **matmul** (`a[..., m, k], b[..., k, n] -> [..., m, n]`): both ranks ≥ 2, batch dims
//!   broadcast; accumulation in `f64` for floats.
//! * **attention** (`q[..., m, d], k[..., n, d], v[..., n, e], masks... -> [..., m, e]`):
//!   exactly `matmul(softmax(masks(scale(matmul(q, permute(k))))), v)` as those ops compute
//!   it, where `scale` is `* c` or `/ c` (a scalar of the dtype), each mask in order is `+ m`
//!   (float), `where(m, s, fill)` (`keep`) or `where(m, fill, s)` (`fill`), and softmax over
//!   the last axis is `exp(s - max) / sum(exp(s - max))`. Float dtypes; `q`, `k`, `v` and float
//!   masks share one dtype; batch dims of `q`, `k` and `v` broadcast, and every mask broadcasts
//!   to the scores' shape without growing it. The frontend never emits it; the e-graph
//!   optimizer recognizes the decomposed form so that backends can compute it without the
//!   score matrix (flash attention).
//! * **conv** (`x[n, c, *s], w -> y`): cross-correlation with `stride`, symmetric `padding`
//!   (zeros), `dilation`, `groups`, 1 to 3 spatial dims. Weight is `[c_out, c/groups, *k]`, or,
//!   when `transposed`, `[c, c_out/groups, *k]` with `output_padding` (PyTorch's
//!   `conv_transpose`). Bias is a separate broadcast `add`.
//! * **pool** (`x[n, c, *s] -> y`): `max` (padding is -inf, with `dilation`) or `avg`
//!   (`count_include_pad` selects the divisor: the full window clipped to the padded input, or
//!   only the in-bounds elements), `kernel`, `stride`, `padding`, `ceil_mode` as in PyTorch.
//! * **adaptive_pool** (`x[n, c, *s] -> [n, c, *output_size]`): window `i` along a dim of size
//!   `L` with output `O` spans `[floor(i*L/O), ceil((i+1)*L/O))`; `max` or `avg` over it.
//! * **reshape** (`x -> y[shape]`): same elements in row-major order; equal element counts.
//! * **permute** (`x -> y`): `y.shape[i] = x.shape[perm[i]]`.
//! * **expand** (`x -> y[shape]`): same rank; dims of size 1 repeat to the target size.
//! * **slice** (`x -> y`): along `axis`, elements `start, start+step, ...` below `end`, with
//!   `0 <= start <= end <= dim` and `step >= 1` (the frontend normalizes PyTorch's negative and
//!   out-of-range bounds).
//! * **concat** (`x0, x1, ... -> y`) along `axis`; all other dims equal.
//! * **pad** (`x -> y`): constant `value` padding, `pads[i] = (before, after)` per axis; negative
//!   amounts crop.
//! * **gather** (`data, idx: integer -> data[:axis] ++ idx.shape ++ data[axis+1:]`): picks
//!   slices of `data` along `axis` at each index (negative indices count from the end; out of
//!   range is a run-time error). Covers `embedding`, `index_select` and tensor indexing.
//! * **iota** (`-> y[shape]` of `dtype`): `start + step * i` where `i` is the index along `axis`.
//! * **full** (`-> y[shape]` of `dtype`): every element `value` (cast to `dtype`).
//! * **cumsum** (`x -> y`): inclusive prefix sum along `axis`.
//! * **dim_value** (`-> y[]` of `dtype`): the value of the size `dim` (e.g. `s0`, `4*s0`) at
//!   run time, as a rank-0 tensor; how symbolic sizes enter tensor arithmetic.
//!
//! High-level ATen ops (linear, layer_norm, softmax, gelu, batch_norm, attention, ...) are
//! decomposed into these by the frontend; `docs/ops.md` lists each supported ATen op.
//!
//! ## Text form
//!
//! [`text::print`] writes a graph deterministically and [`text::parse`] reads it back; printing
//! the parsed graph gives the same bytes. Weights appear by name and type only; their bytes
//! stay in the [`WeightStore`]. See the [`text`] module for the grammar.

pub mod dim;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod npz;
pub mod op;
pub mod tensor;
pub mod text;
pub mod verify;
pub mod weights;

pub use dim::{Dim, SymId, Symbol, SymbolTable};
pub use dtype::DType;
pub use error::IrError;
pub use graph::{Graph, Node, NodeId, TensorType, ValueData, ValueDef, ValueId};
pub use op::{
    ArgKind, AttentionAttrs, AttentionMask, AttentionScale, BinaryOp, ConvAttrs, Op, PoolAttrs, PoolKind, ReduceKind,
    UnaryOp,
};
pub use tensor::Tensor;
pub use weights::WeightStore;
