//! Each canonicalization rule: a start ⇒ goal test and a must-not-fire test, text in, text out.

mod common;
use common::{check, parse, unchanged};
use kiln_ir::Graph;

fn canon(g: &Graph) -> Graph {
    kiln_passes::canonicalize(g).unwrap()
}

#[test]
fn cast_noop() {
    check(
        canon,
        r#"
        graph t
        input %x: f32[4]
        %c: f32[4] = cast{to=f32} %x
        %y: f32[4] = exp %c
        output "y" %y
        "#,
        r#"
        graph t
        input %x: f32[4]
        %y: f32[4] = exp %x
        output "y" %y
        "#,
    );
}

#[test]
fn cast_to_another_dtype_stays() {
    unchanged(
        canon,
        r#"
        graph t
        input %x: f32[4]
        %c: f16[4] = cast{to=f16} %x
        output "y" %c
        "#,
    );
}

#[test]
fn reshape_noop_keeps_the_output_name() {
    check(
        canon,
        r#"
        graph t
        sym s0 in [1, 8]
        input %x: f32[s0, 4]
        %r: f32[s0, 4] = reshape{shape=[s0, 4]} %x
        output "out" %r
        "#,
        r#"
        graph t
        sym s0 in [1, 8]
        input %x: f32[s0, 4]
        output "out" %x
        "#,
    );
}

#[test]
fn reshape_to_another_shape_stays() {
    unchanged(
        canon,
        r#"
        graph t
        input %x: f32[2, 4]
        %r: f32[8] = reshape{shape=[8]} %x
        output "out" %r
        "#,
    );
}

#[test]
fn reshape_reshape() {
    // The outer reshape reads %x directly; the inner one, now unused, is left for dce.
    check(
        canon,
        r#"
        graph t
        input %x: f32[2, 3, 4]
        %a: f32[6, 4] = reshape{shape=[6, 4]} %x
        %b: f32[24] = reshape{shape=[24]} %a  @ "m.py:3"
        output "out" %b
        "#,
        r#"
        graph t
        input %x: f32[2, 3, 4]
        %a: f32[6, 4] = reshape{shape=[6, 4]} %x
        %b: f32[24] = reshape{shape=[24]} %x  @ "m.py:3"
        output "out" %b
        "#,
    );
}

#[test]
fn reshape_reshape_back_to_the_source_shape_is_the_source() {
    check(
        canon,
        r#"
        graph t
        input %x: f32[2, 3, 4]
        %a: f32[6, 4] = reshape{shape=[6, 4]} %x
        %b: f32[2, 3, 4] = reshape{shape=[2, 3, 4]} %a
        %y: f32[2, 3, 4] = exp %b
        output "out" %y
        "#,
        r#"
        graph t
        input %x: f32[2, 3, 4]
        %a: f32[6, 4] = reshape{shape=[6, 4]} %x
        %y: f32[2, 3, 4] = exp %x
        output "out" %y
        "#,
    );
}

#[test]
fn reshape_of_another_op_stays() {
    unchanged(
        canon,
        r#"
        graph t
        input %x: f32[2, 3, 4]
        %a: f32[2, 4, 3] = permute{perm=[0, 2, 1]} %x
        %b: f32[24] = reshape{shape=[24]} %a
        output "out" %b
        "#,
    );
}

#[test]
fn permute_noop() {
    check(
        canon,
        r#"
        graph t
        input %x: f32[2, 3]
        %p: f32[2, 3] = permute{perm=[0, 1]} %x
        %y: f32[2, 3] = relu %p
        output "out" %y
        "#,
        r#"
        graph t
        input %x: f32[2, 3]
        %y: f32[2, 3] = relu %x
        output "out" %y
        "#,
    );
}

#[test]
fn permute_permute_composes() {
    check(
        canon,
        r#"
        graph t
        input %x: f32[2, 3, 4]
        %a: f32[3, 4, 2] = permute{perm=[1, 2, 0]} %x
        %b: f32[4, 3, 2] = permute{perm=[1, 0, 2]} %a
        output "out" %b
        "#,
        r#"
        graph t
        input %x: f32[2, 3, 4]
        %a: f32[3, 4, 2] = permute{perm=[1, 2, 0]} %x
        %b: f32[4, 3, 2] = permute{perm=[2, 1, 0]} %x
        output "out" %b
        "#,
    );
}

#[test]
fn permute_permute_inverse_is_the_source() {
    check(
        canon,
        r#"
        graph t
        input %x: f32[2, 3, 4]
        %a: f32[3, 4, 2] = permute{perm=[1, 2, 0]} %x
        %b: f32[2, 3, 4] = permute{perm=[2, 0, 1]} %a
        output "out" %b
        "#,
        r#"
        graph t
        input %x: f32[2, 3, 4]
        %a: f32[3, 4, 2] = permute{perm=[1, 2, 0]} %x
        output "out" %x
        "#,
    );
}

#[test]
fn a_single_real_permute_stays() {
    unchanged(
        canon,
        r#"
        graph t
        input %x: f32[2, 3]
        %p: f32[3, 2] = permute{perm=[1, 0]} %x
        output "out" %p
        "#,
    );
}

#[test]
fn expand_noop() {
    check(
        canon,
        r#"
        graph t
        input %x: f32[2, 3]
        %e: f32[2, 3] = expand{shape=[2, 3]} %x
        output "out" %e
        "#,
        r#"
        graph t
        input %x: f32[2, 3]
        output "out" %x
        "#,
    );
}

#[test]
fn expand_expand() {
    check(
        canon,
        r#"
        graph t
        input %x: f32[1, 1]
        %a: f32[1, 3] = expand{shape=[1, 3]} %x
        %b: f32[2, 3] = expand{shape=[2, 3]} %a
        output "out" %b
        "#,
        r#"
        graph t
        input %x: f32[1, 1]
        %a: f32[1, 3] = expand{shape=[1, 3]} %x
        %b: f32[2, 3] = expand{shape=[2, 3]} %x
        output "out" %b
        "#,
    );
}

#[test]
fn a_growing_expand_stays() {
    unchanged(
        canon,
        r#"
        graph t
        input %x: f32[1, 3]
        %e: f32[2, 3] = expand{shape=[2, 3]} %x
        output "out" %e
        "#,
    );
}

#[test]
fn slice_of_the_whole_dim() {
    check(
        canon,
        r#"
        graph t
        sym s0 in [1, 8]
        input %x: f32[s0, 4]
        %s: f32[s0, 4] = slice{axis=0, start=0, end=s0, step=1} %x
        output "out" %s
        "#,
        r#"
        graph t
        sym s0 in [1, 8]
        input %x: f32[s0, 4]
        output "out" %x
        "#,
    );
}

#[test]
fn partial_or_strided_slices_stay() {
    unchanged(
        canon,
        r#"
        graph t
        input %x: f32[3, 4]
        %a: f32[3, 3] = slice{axis=1, start=1, end=4, step=1} %x
        %b: f32[3, 2] = slice{axis=1, start=0, end=4, step=2} %x
        %c: f32[3, 3] = slice{axis=1, start=0, end=3, step=1} %x
        output "a" %a
        output "b" %b
        output "c" %c
        "#,
    );
}

#[test]
fn mul_one_either_side_and_div_one() {
    check(
        canon,
        r#"
        graph t
        input %x: f32[2, 3]
        %one: f32[] = full{shape=[], value=1.0, dtype=f32}
        %a: f32[2, 3] = mul %x, %one
        %b: f32[2, 3] = mul %one, %a
        %c: f32[2, 3] = div %b, %one
        output "out" %c
        "#,
        r#"
        graph t
        input %x: f32[2, 3]
        %one: f32[] = full{shape=[], value=1.0, dtype=f32}
        output "out" %x
        "#,
    );
}

#[test]
fn mul_by_a_broadcast_full_one_of_the_same_shape() {
    check(
        canon,
        r#"
        graph t
        input %x: i32[2, 3]
        %one: i32[1, 3] = full{shape=[1, 3], value=1.0, dtype=i32}
        %a: i32[2, 3] = mul %x, %one
        output "out" %a
        "#,
        r#"
        graph t
        input %x: i32[2, 3]
        %one: i32[1, 3] = full{shape=[1, 3], value=1.0, dtype=i32}
        output "out" %x
        "#,
    );
}

#[test]
fn mul_one_that_broadcasts_x_stays() {
    // The result is bigger than %x: not an identity.
    unchanged(
        canon,
        r#"
        graph t
        input %x: f32[3]
        %one: f32[2, 3] = full{shape=[2, 3], value=1.0, dtype=f32}
        %a: f32[2, 3] = mul %x, %one
        output "out" %a
        "#,
    );
}

#[test]
fn div_by_one_on_the_left_and_mul_by_other_values_stay() {
    unchanged(
        canon,
        r#"
        graph t
        input %x: f32[3]
        %one: f32[] = full{shape=[], value=1.0, dtype=f32}
        %two: f32[] = full{shape=[], value=2.0, dtype=f32}
        %a: f32[3] = div %one, %x
        %b: f32[3] = mul %a, %two
        output "out" %b
        "#,
    );
}

#[test]
fn full_values_count_after_conversion_to_their_dtype() {
    // 1.5 as i64 is 1, so `mul %x, %c` is `%x`.
    check(
        canon,
        r#"
        graph t
        input %x: i64[3]
        %c: i64[] = full{shape=[], value=1.5, dtype=i64}
        %a: i64[3] = mul %x, %c
        output "out" %a
        "#,
        r#"
        graph t
        input %x: i64[3]
        %c: i64[] = full{shape=[], value=1.5, dtype=i64}
        output "out" %x
        "#,
    );
}

#[test]
fn sub_zero() {
    check(
        canon,
        r#"
        graph t
        input %x: f32[3]
        %z: f32[] = full{shape=[], value=0.0, dtype=f32}
        %a: f32[3] = sub %x, %z
        output "out" %a
        "#,
        r#"
        graph t
        input %x: f32[3]
        %z: f32[] = full{shape=[], value=0.0, dtype=f32}
        output "out" %x
        "#,
    );
}

#[test]
fn sub_negative_zero_and_zero_minus_x_stay() {
    // x - (-0.0) = x + 0.0 turns -0.0 into +0.0; 0 - x is a negation.
    unchanged(
        canon,
        r#"
        graph t
        input %x: f32[3]
        %nz: f32[] = full{shape=[], value=-0.0, dtype=f32}
        %z: f32[] = full{shape=[], value=0.0, dtype=f32}
        %a: f32[3] = sub %x, %nz
        %b: f32[3] = sub %z, %a
        output "out" %b
        "#,
    );
}

#[test]
fn float_add_zero_stays() {
    // -0.0 + 0.0 is +0.0: `x + 0.0` is not the identity in IEEE arithmetic.
    unchanged(
        canon,
        r#"
        graph t
        input %x: f32[3]
        %z: f32[] = full{shape=[], value=0.0, dtype=f32}
        %a: f32[3] = add %x, %z
        %b: f32[3] = add %z, %a
        output "out" %b
        "#,
    );
}

#[test]
fn float_add_negative_zero_and_integer_add_zero() {
    check(
        canon,
        r#"
        graph t
        input %x: f32[3]
        input %i: i32[3]
        %nz: f32[] = full{shape=[], value=-0.0, dtype=f32}
        %a: f32[3] = add %x, %nz
        %b: f32[3] = add %nz, %a
        %z: i32[] = full{shape=[], value=0.0, dtype=i32}
        %c: i32[3] = add %z, %i
        output "f" %b
        output "i" %c
        "#,
        r#"
        graph t
        input %x: f32[3]
        input %i: i32[3]
        %nz: f32[] = full{shape=[], value=-0.0, dtype=f32}
        %z: i32[] = full{shape=[], value=0.0, dtype=i32}
        output "f" %x
        output "i" %i
        "#,
    );
}

#[test]
fn neg_neg() {
    check(
        canon,
        r#"
        graph t
        input %x: f32[3]
        %a: f32[3] = neg %x
        %b: f32[3] = neg %a
        %c: f32[3] = neg %b
        output "out" %c
        "#,
        r#"
        graph t
        input %x: f32[3]
        %a: f32[3] = neg %x
        %c: f32[3] = neg %x
        output "out" %c
        "#,
    );
}

#[test]
fn neg_of_another_op_stays() {
    unchanged(
        canon,
        r#"
        graph t
        input %x: f32[3]
        %a: f32[3] = abs %x
        %b: f32[3] = neg %a
        output "out" %b
        "#,
    );
}

#[test]
fn where_with_equal_branches() {
    check(
        canon,
        r#"
        graph t
        input %c: bool[3]
        input %x: f32[3]
        %w: f32[3] = where %c, %x, %x
        output "out" %w
        "#,
        r#"
        graph t
        input %c: bool[3]
        input %x: f32[3]
        output "out" %x
        "#,
    );
}

#[test]
fn where_that_broadcasts_or_differs_stays() {
    unchanged(
        canon,
        r#"
        graph t
        input %c: bool[2, 3]
        input %x: f32[3]
        input %y: f32[3]
        %w: f32[2, 3] = where %c, %x, %x
        %v: f32[2, 3] = where %c, %x, %y
        output "w" %w
        output "v" %v
        "#,
    );
}

#[test]
fn chains_collapse_to_a_fixed_point() {
    // reshape(permute(permute(cast(x)))) with every step a no-op in the end.
    check(
        canon,
        r#"
        graph t
        input %x: f32[2, 3]
        %c: f32[2, 3] = cast{to=f32} %x
        %p: f32[3, 2] = permute{perm=[1, 0]} %c
        %q: f32[2, 3] = permute{perm=[1, 0]} %p
        %r: f32[2, 3] = reshape{shape=[2, 3]} %q
        %one: f32[] = full{shape=[], value=1.0, dtype=f32}
        %m: f32[2, 3] = mul %r, %one
        %n: f32[2, 3] = neg %m
        %nn: f32[2, 3] = neg %n
        output "out" %nn
        "#,
        r#"
        graph t
        input %x: f32[2, 3]
        %p: f32[3, 2] = permute{perm=[1, 0]} %x
        %one: f32[] = full{shape=[], value=1.0, dtype=f32}
        %n: f32[2, 3] = neg %x
        output "out" %x
        "#,
    );
}

#[test]
fn canonicalize_is_deterministic_and_idempotent() {
    let g = parse(&common::dedent(
        r#"
        graph t
        input %x: f32[2, 3, 4]
        %a: f32[6, 4] = reshape{shape=[6, 4]} %x
        %b: f32[24] = reshape{shape=[24]} %a
        output "out" %b
        "#,
    ));
    let once = canon(&g);
    assert_eq!(kiln_ir::text::print(&once), kiln_ir::text::print(&canon(&g)));
    assert_eq!(kiln_ir::text::print(&canon(&once)), kiln_ir::text::print(&once));
}

#[test]
fn invalid_input_is_a_typed_error() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", kiln_ir::TensorType::fixed(kiln_ir::DType::F32, &[2]));
    g.add_output("y", x);
    g.symbols.intern("bad name", 1, Some(2));
    let e = kiln_passes::canonicalize(&g).unwrap_err();
    assert!(matches!(e, kiln_passes::PassError::InvalidInput { pass: "canonicalize", .. }), "{e}");
}
