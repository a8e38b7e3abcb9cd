//! Common-subexpression elimination, text in, text out.

mod common;
use common::{check, unchanged};
use kiln_ir::Graph;

fn cse(g: &Graph) -> Graph {
    kiln_passes::cse(g).unwrap()
}

#[test]
fn equal_nodes_merge_into_the_first() {
    check(
        cse,
        r#"
        graph t
        input %x: f32[4]
        %eps: f32[] = full{shape=[], value=1e-5, dtype=f32}  @ "a.py:1"
        %a: f32[4] = add %x, %eps
        %eps_1: f32[] = full{shape=[], value=1e-5, dtype=f32}  @ "a.py:2"
        %b: f32[4] = add %x, %eps_1
        %y: f32[4] = mul %a, %b
        output "y" %y
        output "b" %b
        "#,
        r#"
        graph t
        input %x: f32[4]
        %eps: f32[] = full{shape=[], value=1e-5, dtype=f32}  @ "a.py:1"
        %a: f32[4] = add %x, %eps
        %y: f32[4] = mul %a, %a
        output "y" %y
        output "b" %a
        "#,
    );
}

#[test]
fn equal_iotas_and_layout_ops_merge() {
    check(
        cse,
        r#"
        graph t
        input %x: f32[2, 3]
        %i: i64[3] = iota{shape=[3], axis=0, start=0.0, step=1.0, dtype=i64}
        %j: i64[3] = iota{shape=[3], axis=0, start=0.0, step=1.0, dtype=i64}
        %d: i64[3] = sub %i, %j
        %p: f32[3, 2] = permute{perm=[1, 0]} %x
        %q: f32[3, 2] = permute{perm=[1, 0]} %x
        %s: f32[3, 2] = add %p, %q
        output "d" %d
        output "s" %s
        "#,
        r#"
        graph t
        input %x: f32[2, 3]
        %i: i64[3] = iota{shape=[3], axis=0, start=0.0, step=1.0, dtype=i64}
        %d: i64[3] = sub %i, %i
        %p: f32[3, 2] = permute{perm=[1, 0]} %x
        %s: f32[3, 2] = add %p, %p
        output "d" %d
        output "s" %s
        "#,
    );
}

#[test]
fn different_attributes_operands_or_order_do_not_merge() {
    // +0.0 and -0.0 differ by bits; swapped operands are not matched (no commutativity);
    // iotas with other steps and reductions with other keepdim differ.
    unchanged(
        cse,
        r#"
        graph t
        input %x: f32[4]
        input %y: f32[4]
        %z: f32[] = full{shape=[], value=0.0, dtype=f32}
        %nz: f32[] = full{shape=[], value=-0.0, dtype=f32}
        %a: f32[4] = add %x, %y
        %b: f32[4] = add %y, %x
        %c: f32[4] = sub %x, %y
        %i: f32[4] = iota{shape=[4], axis=0, start=0.0, step=1.0, dtype=f32}
        %j: f32[4] = iota{shape=[4], axis=0, start=0.0, step=2.0, dtype=f32}
        %r: f32[1] = reduce_sum{axes=[0], keepdim=true} %x
        %s: f32[] = reduce_sum{axes=[0], keepdim=false} %x
        output "z" %z
        output "nz" %nz
        output "a" %a
        output "b" %b
        output "c" %c
        output "i" %i
        output "j" %j
        output "r" %r
        output "s" %s
        "#,
    );
}

#[test]
fn nan_constants_with_the_same_bits_merge() {
    check(
        cse,
        r#"
        graph t
        input %x: f32[2]
        %n: f32[] = full{shape=[], value=NaN, dtype=f32}
        %m: f32[] = full{shape=[], value=NaN, dtype=f32}
        %a: f32[2] = max %x, %n
        %b: f32[2] = max %a, %m
        output "b" %b
        "#,
        r#"
        graph t
        input %x: f32[2]
        %n: f32[] = full{shape=[], value=NaN, dtype=f32}
        %a: f32[2] = max %x, %n
        %b: f32[2] = max %a, %n
        output "b" %b
        "#,
    );
}

#[test]
fn merging_cascades_through_users() {
    check(
        cse,
        r#"
        graph t
        input %x: f32[4]
        %a: f32[4] = exp %x
        %b: f32[4] = exp %x
        %c: f32[4] = tanh %a
        %d: f32[4] = tanh %b
        %y: f32[4] = sub %c, %d
        output "y" %y
        "#,
        r#"
        graph t
        input %x: f32[4]
        %a: f32[4] = exp %x
        %c: f32[4] = tanh %a
        %y: f32[4] = sub %c, %c
        output "y" %y
        "#,
    );
}

#[test]
fn weights_with_equal_types_are_not_merged() {
    unchanged(
        cse,
        r#"
        graph t
        input %x: f32[2]
        weight %w1: f32[2]
        weight %w2: f32[2]
        %a: f32[2] = add %x, %w1
        %b: f32[2] = add %x, %w2
        %y: f32[2] = mul %a, %b
        output "y" %y
        "#,
    );
}
