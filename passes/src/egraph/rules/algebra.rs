//! Algebraic identities. Unless a rule's doc says otherwise it is exact in IEEE arithmetic:
//! the replacement computes the same bits as the original for every input, NaN and infinities
//! included. Not here, because they are not exact: `x - x → 0` (∞ - ∞ is NaN), `x + 0 → x`
//! with a positive zero (-0 + 0 is +0), `exp(log x) → x` and `log(exp x) → x` (negative
//! inputs, overflow).

use super::{add_op, attributed_op, full_value, rule, var, Rule};
use crate::egraph::lang::TensorGraph;
use egg::{Id, Subst};
use kiln_ir::{BinaryOp, DType, Op, UnaryOp};

const THEME: &str = "algebra";

/// `?x` when `?c` is a `full` constant equal to `value` (bit for bit, so -0 ≠ +0).
fn identity_when(egraph: &TensorGraph, subst: &Subst, value: f64) -> Option<Id> {
    let c = full_value(egraph, subst, "?c")?;
    (c.to_bits() == value.to_bits()).then(|| var(subst, "?x"))
}

/// A `full` of `value` with the type of class `like`, or `None` when `value` is not exact
/// in that dtype.
fn full_like(egraph: &mut TensorGraph, like: Id, value: f64) -> Option<Id> {
    let ty = egraph[like].data.ty()?.clone();
    if kiln_ir::tensor::round_to(ty.dtype, value) != value || !ty.dtype.is_float() {
        return None;
    }
    Some(add_op(egraph, &Op::Full { shape: ty.shape, value, dtype: ty.dtype }, &[]))
}

fn binary(egraph: &mut TensorGraph, op: BinaryOp, a: Id, b: Id) -> Id {
    add_op(egraph, &Op::Binary(op), &[a, b])
}

fn unary(egraph: &mut TensorGraph, op: UnaryOp, a: Id) -> Id {
    add_op(egraph, &Op::Unary(op), &[a])
}

/// Whether every value of `from` is exactly representable in `via`.
pub fn widens_exactly(from: DType, via: DType) -> bool {
    use DType::*;
    from == via
        || matches!(
            (from, via),
            (Bool, _)
                | (F16 | BF16, F32 | F64)
                | (F32, F64)
                | (I8, I16 | I32 | I64 | F16 | BF16 | F32 | F64)
                | (U8, I16 | I32 | I64 | F16 | BF16 | F32 | F64)
                | (I16, I32 | I64 | F32 | F64)
                | (I32, I64 | F64)
        )
}

pub fn rules() -> Vec<Rule> {
    vec![
        rule(
            "mul-one",
            THEME,
            "x * 1 = x exactly (NaN stays NaN). Applies when the product has x's type, i.e. the \
             constant does not broadcast x to a larger shape.",
            "(mul ?x ?c)",
            |g, _, s| identity_when(g, s, 1.0),
        ),
        rule("one-mul", THEME, "1 * x = x, as mul-one with the constant first.", "(mul ?c ?x)", |g, _, s| {
            identity_when(g, s, 1.0)
        }),
        rule("div-one", THEME, "x / 1 = x exactly.", "(div ?x ?c)", |g, _, s| identity_when(g, s, 1.0)),
        rule(
            "sub-zero",
            THEME,
            "x - (+0) = x exactly (-0 - +0 is -0). Not for -0: -0 - -0 is +0.",
            "(sub ?x ?c)",
            |g, _, s| identity_when(g, s, 0.0),
        ),
        rule(
            "add-negative-zero",
            THEME,
            "x + (-0) = x exactly. Not for +0: -0 + +0 is +0.",
            "(add ?x ?c)",
            |g, _, s| identity_when(g, s, -0.0),
        ),
        rule("neg-neg", THEME, "-(-x) = x exactly (negation flips the sign bit).", "(neg (neg ?x))", |_, _, s| {
            Some(var(s, "?x"))
        }),
        rule(
            "mul-minus-one",
            THEME,
            "x * -1 = -x exactly: multiplying by -1 only flips the sign (for a NaN the result \
             is a NaN either way).",
            "(mul ?x ?c)",
            |g, _, s| {
                let c = full_value(g, s, "?c")?;
                (c == -1.0).then(|| unary(g, UnaryOp::Neg, var(s, "?x")))
            },
        ),
        rule(
            "add-neg",
            THEME,
            "a + (-b) = a - b exactly: IEEE subtraction is addition of the negation.",
            "(add ?a (neg ?b))",
            |g, _, s| Some(binary(g, BinaryOp::Sub, var(s, "?a"), var(s, "?b"))),
        ),
        rule(
            "neg-add",
            THEME,
            "(-a) + b = b - a exactly (addition is commutative in IEEE arithmetic).",
            "(add (neg ?a) ?b)",
            |g, _, s| Some(binary(g, BinaryOp::Sub, var(s, "?b"), var(s, "?a"))),
        ),
        rule(
            "div-power-of-two",
            THEME,
            "x / 2^k = x * 2^-k exactly: both are the correctly rounded value of the same real \
             number, and 2^-k is exact in the dtype. Applies to float constants that are powers \
             of two whose reciprocal the dtype represents (so not for half types' extremes).",
            "(div ?x ?c)",
            |g, _, s| {
                let c = full_value(g, s, "?c")?;
                let (m, _) = frexp(c);
                if c <= 0.0 || !c.is_finite() || m != 0.5 {
                    return None;
                }
                let r = full_like(g, var(s, "?c"), 1.0 / c)?;
                Some(binary(g, BinaryOp::Mul, var(s, "?x"), r))
            },
        ),
        rule(
            "pow-one",
            THEME,
            "pow(x, 1) = x exactly (IEEE 754 pow is exact for an exponent of 1).",
            "(pow ?x ?c)",
            |g, _, s| identity_when(g, s, 1.0),
        ),
        rule(
            "pow-two",
            THEME,
            "pow(x, 2) = x * x. One correctly rounded multiply instead of kiln's pow expansion \
             (exp(2 log x) with its own rounding): at least as accurate, not bit-identical to a \
             libm pow.",
            "(pow ?x ?c)",
            |g, _, s| {
                let x = var(s, "?x");
                (full_value(g, s, "?c")? == 2.0).then(|| binary(g, BinaryOp::Mul, x, x))
            },
        ),
        rule(
            "pow-three",
            THEME,
            "pow(x, 3) = (x * x) * x, two rounded multiplies (within 1.5 ulp of the exact cube).",
            "(pow ?x ?c)",
            |g, _, s| {
                let x = var(s, "?x");
                if full_value(g, s, "?c")? != 3.0 {
                    return None;
                }
                let sq = binary(g, BinaryOp::Mul, x, x);
                Some(binary(g, BinaryOp::Mul, sq, x))
            },
        ),
        rule(
            "cast-cast",
            THEME,
            "cast(cast(x, A), B) = cast(x, B) when A represents every value of x's dtype \
             exactly (a widening, e.g. f16 → f32 → f64 or i8 → i32 → f32): the inner cast \
             changes no value.",
            "(cast ?to (cast ?via ?x))",
            |g, _, s| {
                let x = var(s, "?x");
                let from = g[x].data.ty()?.dtype;
                let (Op::Cast(via), Op::Cast(to)) =
                    (attributed_op(g, s, "?via", "cast")?, attributed_op(g, s, "?to", "cast")?)
                else {
                    return None;
                };
                widens_exactly(from, via).then(|| add_op(g, &Op::Cast(to), &[x]))
            },
        ),
    ]
}

/// `(m, e)` with `x = m * 2^e` and `0.5 <= |m| < 1` (for finite non-zero `x`).
fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let e = x.abs().log2().floor() as i32 + 1;
    let m = x / 2f64.powi(e);
    if m.abs() >= 1.0 {
        (m / 2.0, e + 1)
    } else if m.abs() < 0.5 {
        (m * 2.0, e - 1)
    } else {
        (m, e)
    }
}
