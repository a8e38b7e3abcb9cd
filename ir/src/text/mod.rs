//! # The text form of the graph IR
//!
//! [`print()`] writes a graph as text and [`parse()`] reads it back; pass tests read text in and
//! compare text out. Printing is deterministic (same graph, same bytes), and for every valid
//! graph `g`, `parse(&print(&g)) == g` and `print(&parse(&print(&g))?) == print(&g)`.
//! [`parse`] runs the verifier on what it read, so a parsed graph is always valid.
//!
//! ```text
//! graph mlp
//! sym s0 in [1, 64]
//! input %x: f32[s0, 16]
//! weight %fc1.weight: f32[32, 16]
//! %t: f32[16, 32] = permute{perm=[1, 0]} %fc1.weight
//! %linear: f32[s0, 32] = matmul %x, %t  @ "model.py:12 in forward: x = self.fc1(x)"
//! %sum: f32[s0, 1] = reduce_sum{axes=[1], keepdim=true} %linear
//! %c: f32[] = full{shape=[], value=0.5, dtype=f32}
//! %y: f32[s0, 1] = mul %sum, %c
//! output "logits" %y
//! ```
//!
//! ## Lines
//!
//! One declaration per line. `#` starts a comment that runs to the end of the line (outside
//! string literals); blank lines are ignored; spaces, tabs and `\r` separate tokens. The
//! declarations come in this order:
//!
//! ```text
//! graph NAME                       exactly once, first
//! sym NAME in [MIN, MAX]           the symbol table, in order; MAX is an integer or `inf`
//! input %NAME: TYPE                the values, in value-id order: user inputs, weights and
//! weight %NAME: TYPE                 nodes (`input` and `weight` lines usually come first,
//! %NAME: TYPE = OP ATTRS OPERANDS     but a graph built with them interleaved prints so)
//!     [@ "SOURCE"]
//! output "NAME" %VALUE             the graph outputs, in order
//! ```
//!
//! The i-th `input` line is user input i and the i-th `weight` line is weight i (weights appear
//! by name and type only; their bytes live in a [`crate::WeightStore`]). A node line defines
//! one value; its operands must be defined on earlier lines. `SOURCE` is the user's source
//! line from the export's stack trace, kept exactly.
//!
//! ## Tokens
//!
//! * Value names: `%` then `[A-Za-z0-9_.]+` (what [`crate::Graph::fresh_name`] makes). Names
//!   are unique; a repeated one is a parse error.
//! * Graph name: an identifier `[A-Za-z_][A-Za-z0-9_.]*`, or a string literal (the printer
//!   quotes any other name). Symbol names: `[A-Za-z_][A-Za-z0-9_]*`.
//! * String literals: `"..."`, with escapes `\\`, `\"`, `\n`, `\t`, `\r` and `\u{HEX}`; other
//!   characters, non-ASCII included, stand for themselves. The printer escapes exactly
//!   `\`, `"` and control characters.
//! * Integers: decimal `i64` (`-` allowed where negatives make sense). Floats: what Rust's
//!   `{:?}` prints for `f64` and `f64::from_str` reads back exactly: `0.5`, `-1e-7`, `inf`,
//!   `-inf`, `NaN`.
//!
//! ## Types and dims
//!
//! `TYPE := DTYPE[DIM, ...]` with `DTYPE` one of `f32 f64 f16 bf16 i64 i32 i16 i8 u8 bool`; a
//! scalar is `f32[]`. A dim is an integer polynomial over declared symbols:
//!
//! ```text
//! DIM  := [-] TERM (('+' | '-') TERM)*        16, s0, 4*s0, s0*s1+1, 2*s0-3
//! TERM := FACTOR ('*' FACTOR)*
//! FACTOR := INTEGER | SYMBOL
//! ```
//!
//! The parser brings each dim to canonical form (`s0+s0` reads as `2*s0`); the printer writes
//! symbolic terms first, highest degree first, the constant last. An undeclared symbol is a
//! parse error.
//!
//! ## Ops and attributes
//!
//! `OP` is [`crate::Op::name`]. `ATTRS` is `{key=value, ...}`, printed in the fixed order below
//! (the parser accepts any order, each key exactly once); ops without attributes print none.
//! `OPERANDS` is `%a, %b, ...` (none for `iota` and `full`).
//!
//! ```text
//! neg abs exp ... isnan, add sub ... xor, where, matmul      (no attributes)
//! cast{to=f16}
//! reduce_sum{axes=[1, 2], keepdim=false}                     (also reduce_mean, _max, _min, _prod)
//! argmax{axis=1, keepdim=false}                              (also argmin)
//! conv{stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1, transposed=false, output_padding=[0, 0]}
//! pool{kind=max, kernel=[2, 2], stride=[2, 2], padding=[0, 0], dilation=[1, 1], ceil_mode=false, count_include_pad=true}
//! adaptive_pool{kind=avg, output_size=[1, 1]}
//! reshape{shape=[s0, 32]}
//! permute{perm=[1, 0]}
//! expand{shape=[s0, 16]}
//! slice{axis=1, start=0, end=s0, step=2}                     (start and end are dims)
//! concat{axis=1}
//! pad{pads=[(1, 2), (0, -1)], value=0.0}
//! gather{axis=0}
//! iota{shape=[s0], axis=0, start=0.0, step=1.0, dtype=i64}
//! full{shape=[], value=0.5, dtype=f32}
//! cumsum{axis=1}
//! ```
//!
//! ## Errors
//!
//! [`parse`] never panics. Malformed text is [`crate::IrError::Parse`] with the 1-based line
//! number; well-formed text describing an invalid graph (a stored type that inference
//! disagrees with, say) is the verifier's [`crate::IrError::Verify`].

mod parse;
mod print;
#[cfg(test)]
mod tests;

pub use parse::{parse, parse_op_key};
pub use print::{op_key, print};
