//! Constant folding (and weight layout), text in, text out, with the folded values checked
//! against the interpreter on the unfolded graph.

mod common;
use common::{assert_bit_identical, dedent, parse, weights_for};
use kiln_ir::{DType, Tensor, WeightStore};
use kiln_passes::{fold_constants, fold_constants_with, FoldLimits, PassError};

/// Folds the graph of `input` (weights from [`weights_for`]) and compares the text with
/// `expected`; checks that the results do not change and that the store holds exactly the
/// graph's weights. Returns the new store.
fn check_fold(limits: &FoldLimits, input: &str, expected: &str) -> WeightStore {
    let g = parse(&dedent(input));
    let w = weights_for(&g);
    let (out, store) = fold_constants_with(&g, &w, limits).unwrap();
    kiln_ir::verify::verify(&out).unwrap();
    let got = kiln_ir::text::print(&out);
    assert_eq!(got, dedent(expected), "\n--- got ---\n{got}");
    let names: Vec<&str> = out.weights().iter().map(|&v| out.value(v).name.as_str()).collect();
    let mut stored: Vec<&str> = store.iter().map(|(k, _)| k).collect();
    let mut sorted = names.clone();
    sorted.sort();
    stored.sort();
    assert_eq!(stored, sorted, "the store holds exactly the graph's weights");
    // Folding runs the same interpreter on the same values, so here it is even bit-exact.
    assert_bit_identical(&g, &w, &out, &store);
    // Deterministic.
    let (again, again_store) = fold_constants_with(&g, &w, limits).unwrap();
    assert_eq!(kiln_ir::text::print(&again), got);
    assert_eq!(again_store, store);
    store
}

fn check_default(input: &str, expected: &str) -> WeightStore {
    check_fold(&FoldLimits::default(), input, expected)
}

#[test]
fn batch_norm_parameters_become_one_weight() {
    check_default(
        r#"
        graph bn
        input %x: f32[2, 4, 3, 3]
        weight %var: f32[4]
        weight %w: f32[4]
        weight %mean: f32[4]
        %eps: f32[] = full{shape=[], value=1e-5, dtype=f32}
        %add: f32[4] = add %var, %eps
        %rsqrt: f32[4] = rsqrt %add
        %mul: f32[4] = mul %rsqrt, %w
        %scale: f32[4, 1, 1] = reshape{shape=[4, 1, 1]} %mul
        %m: f32[4, 1, 1] = reshape{shape=[4, 1, 1]} %mean
        %sub: f32[2, 4, 3, 3] = sub %x, %m
        %y: f32[2, 4, 3, 3] = mul %sub, %scale  @ "m.py:1"
        output "y" %y
        "#,
        r#"
        graph bn
        input %x: f32[2, 4, 3, 3]
        weight %scale: f32[4, 1, 1]
        weight %m: f32[4, 1, 1]
        %sub: f32[2, 4, 3, 3] = sub %x, %m
        %y: f32[2, 4, 3, 3] = mul %sub, %scale  @ "m.py:1"
        output "y" %y
        "#,
    );
}

#[test]
fn layout_permute_of_a_weight_is_stored_transposed() {
    let store = check_default(
        r#"
        graph lin
        input %x: f32[4, 3]
        weight %fc.weight: f32[2, 3]
        %t: f32[3, 2] = permute{perm=[1, 0]} %fc.weight
        %y: f32[4, 2] = matmul %x, %t
        output "y" %y
        "#,
        r#"
        graph lin
        input %x: f32[4, 3]
        weight %t: f32[3, 2]
        %y: f32[4, 2] = matmul %x, %t
        output "y" %y
        "#,
    );
    // weights_for gives %fc.weight the values 0.5 + 0.25 * ((7 i) % 11) in row-major order.
    let w: Vec<f64> = (0..6).map(|i| ((i * 7) % 11) as f64 * 0.25 + 0.5).collect();
    let t = store.get("t").unwrap();
    assert_eq!(t.shape, vec![3, 2]);
    assert_eq!(t.to_f64(), vec![w[0], w[3], w[1], w[4], w[2], w[5]]);
}

#[test]
fn permute_of_a_user_input_is_not_folded() {
    check_default(
        r#"
        graph t
        input %x: f32[2, 3]
        weight %w: f32[2, 4]
        %t: f32[3, 2] = permute{perm=[1, 0]} %x
        %y: f32[3, 4] = matmul %t, %w
        output "y" %y
        "#,
        r#"
        graph t
        input %x: f32[2, 3]
        weight %w: f32[2, 4]
        %t: f32[3, 2] = permute{perm=[1, 0]} %x
        %y: f32[3, 4] = matmul %t, %w
        output "y" %y
        "#,
    );
}

#[test]
fn a_weight_also_used_directly_stays_beside_its_folded_form() {
    check_default(
        r#"
        graph t
        input %x: f32[3, 3]
        weight %w: f32[3, 3]
        %t: f32[3, 3] = permute{perm=[1, 0]} %w
        %a: f32[3, 3] = matmul %x, %t
        %y: f32[3, 3] = add %a, %w
        output "y" %y
        "#,
        r#"
        graph t
        input %x: f32[3, 3]
        weight %w: f32[3, 3]
        weight %t: f32[3, 3]
        %a: f32[3, 3] = matmul %x, %t
        %y: f32[3, 3] = add %a, %w
        output "y" %y
        "#,
    );
}

#[test]
fn bare_full_and_iota_stay() {
    check_default(
        r#"
        graph t
        input %x: f32[4]
        %c: f32[] = full{shape=[], value=0.5, dtype=f32}
        %big: f32[4] = full{shape=[4], value=2.0, dtype=f32}
        %i: f32[4] = iota{shape=[4], axis=0, start=0.0, step=1.0, dtype=f32}
        %a: f32[4] = mul %x, %c
        %b: f32[4] = add %a, %big
        %y: f32[4] = sub %b, %i
        output "y" %y
        "#,
        r#"
        graph t
        input %x: f32[4]
        %c: f32[] = full{shape=[], value=0.5, dtype=f32}
        %big: f32[4] = full{shape=[4], value=2.0, dtype=f32}
        %i: f32[4] = iota{shape=[4], axis=0, start=0.0, step=1.0, dtype=f32}
        %a: f32[4] = mul %x, %c
        %b: f32[4] = add %a, %big
        %y: f32[4] = sub %b, %i
        output "y" %y
        "#,
    );
}

#[test]
fn small_index_arithmetic_is_folded() {
    let store = check_default(
        r#"
        graph t
        input %x: f32[6]
        %i: i64[6] = iota{shape=[6], axis=0, start=0.0, step=1.0, dtype=i64}
        %seven: i64[] = full{shape=[], value=7.0, dtype=i64}
        %four: i64[] = full{shape=[], value=4.0, dtype=i64}
        %m: i64[6] = mul %i, %seven
        %k: i64[6] = rem %m, %four
        %kf: f32[6] = cast{to=f32} %k
        %y: f32[6] = add %x, %kf
        output "y" %y
        "#,
        r#"
        graph t
        input %x: f32[6]
        weight %kf: f32[6]
        %y: f32[6] = add %x, %kf
        output "y" %y
        "#,
    );
    assert_eq!(store.get("kf").unwrap().to_f64(), vec![0.0, 3.0, 2.0, 1.0, 0.0, 3.0]);
}

#[test]
fn a_big_broadcast_of_a_constant_stays_but_what_feeds_it_folds() {
    // With small_elems = 4: the [3, 8] expand (24 elements) is bigger than its 3-element
    // weight, so it stays; the [3, 1] scaling below it becomes a weight.
    let limits = FoldLimits { small_elems: 4, ..FoldLimits::default() };
    check_fold(
        &limits,
        r#"
        graph t
        input %x: f32[3, 8]
        weight %w: f32[3, 1]
        %two: f32[] = full{shape=[], value=2.0, dtype=f32}
        %s: f32[3, 1] = mul %w, %two
        %e: f32[3, 8] = expand{shape=[3, 8]} %s
        %y: f32[3, 8] = add %x, %e
        output "y" %y
        "#,
        r#"
        graph t
        input %x: f32[3, 8]
        weight %s: f32[3, 1]
        %e: f32[3, 8] = expand{shape=[3, 8]} %s
        %y: f32[3, 8] = add %x, %e
        output "y" %y
        "#,
    );
}

#[test]
fn a_big_broadcast_of_a_scalar_stays() {
    let limits = FoldLimits { small_elems: 4, ..FoldLimits::default() };
    check_fold(
        &limits,
        r#"
        graph t
        input %x: f32[3, 8]
        %z: f32[1, 1] = full{shape=[1, 1], value=0.0, dtype=f32}
        %e: f32[3, 8] = expand{shape=[3, 8]} %z
        %y: f32[3, 8] = max %x, %e
        output "y" %y
        "#,
        r#"
        graph t
        input %x: f32[3, 8]
        %z: f32[1, 1] = full{shape=[1, 1], value=0.0, dtype=f32}
        %e: f32[3, 8] = expand{shape=[3, 8]} %z
        %y: f32[3, 8] = max %x, %e
        output "y" %y
        "#,
    );
}

#[test]
fn nothing_bigger_than_max_bytes_is_computed() {
    // 16 bytes allowed: the [2, 3] f32 permute (24 bytes) stays.
    let limits = FoldLimits { max_bytes: 16, ..FoldLimits::default() };
    check_fold(
        &limits,
        r#"
        graph t
        input %x: f32[4, 2]
        weight %w: f32[3, 2]
        %t: f32[2, 3] = permute{perm=[1, 0]} %w
        %y: f32[4, 3] = matmul %x, %t
        output "y" %y
        "#,
        r#"
        graph t
        input %x: f32[4, 2]
        weight %w: f32[3, 2]
        %t: f32[2, 3] = permute{perm=[1, 0]} %w
        %y: f32[4, 3] = matmul %x, %t
        output "y" %y
        "#,
    );
}

#[test]
fn symbolic_sizes_are_not_folded() {
    check_default(
        r#"
        graph t
        sym s0 in [1, 8]
        input %x: f32[s0]
        %n: f32[] = dim_value{dim=s0, dtype=f32}
        %two: f32[] = full{shape=[], value=2.0, dtype=f32}
        %m: f32[] = mul %n, %two
        %i: f32[s0] = iota{shape=[s0], axis=0, start=0.0, step=1.0, dtype=f32}
        %j: f32[s0] = mul %i, %two
        %a: f32[s0] = add %x, %m
        %y: f32[s0] = add %a, %j
        output "y" %y
        "#,
        r#"
        graph t
        sym s0 in [1, 8]
        input %x: f32[s0]
        %n: f32[] = dim_value{dim=s0, dtype=f32}
        %two: f32[] = full{shape=[], value=2.0, dtype=f32}
        %m: f32[] = mul %n, %two
        %i: f32[s0] = iota{shape=[s0], axis=0, start=0.0, step=1.0, dtype=f32}
        %j: f32[s0] = mul %i, %two
        %a: f32[s0] = add %x, %m
        %y: f32[s0] = add %a, %j
        output "y" %y
        "#,
    );
}

#[test]
fn a_constant_output_becomes_a_weight_under_its_output_name() {
    check_default(
        r#"
        graph t
        input %x: f32[2]
        weight %w: f32[2]
        %e: f32[2] = exp %w
        %y: f32[2] = add %x, %e
        output "y" %y
        output "const" %e
        "#,
        r#"
        graph t
        input %x: f32[2]
        weight %e: f32[2]
        %y: f32[2] = add %x, %e
        output "y" %y
        output "const" %e
        "#,
    );
}

#[test]
fn unused_weights_are_dropped_and_dead_non_constant_nodes_kept() {
    check_default(
        r#"
        graph t
        input %x: f32[2]
        weight %unused: f32[2]
        weight %w: f32[2]
        %dead: f32[2] = exp %x
        %y: f32[2] = add %x, %w
        output "y" %y
        "#,
        r#"
        graph t
        input %x: f32[2]
        weight %w: f32[2]
        %dead: f32[2] = exp %x
        %y: f32[2] = add %x, %w
        output "y" %y
        "#,
    );
}

#[test]
fn an_evaluation_error_names_the_node() {
    // Indices 2, 3, 4 into a table of 4 rows: out of range at run time and at compile time.
    let g = parse(&dedent(
        r#"
        graph t
        input %x: f32[3, 2]
        weight %table: f32[4, 2]
        %idx: i64[3] = iota{shape=[3], axis=0, start=2.0, step=1.0, dtype=i64}
        %rows: f32[3, 2] = gather{axis=0} %table, %idx
        %y: f32[3, 2] = add %x, %rows
        output "y" %y
        "#,
    ));
    let e = fold_constants(&g, &weights_for(&g)).unwrap_err();
    assert!(matches!(&e, PassError::Fold { node, op: "gather", .. } if node == "rows"), "{e}");
}

#[test]
fn a_missing_weight_is_a_typed_error() {
    let g = parse(&dedent(
        r#"
        graph t
        input %x: f32[2]
        weight %w: f32[2]
        %y: f32[2] = add %x, %w
        output "y" %y
        "#,
    ));
    let e = fold_constants(&g, &WeightStore::default()).unwrap_err();
    assert_eq!(e, PassError::MissingWeight { pass: "fold_constants", name: "w".into() });
    let mut store = WeightStore::default();
    store.insert("w", Tensor::from_f64(DType::F32, vec![2], &[1.0, 2.0]));
    assert!(fold_constants(&g, &store).is_ok());
}

#[test]
fn a_broadcast_of_a_weight_stays_a_broadcast_of_the_folded_weight() {
    check_default(
        r#"
        graph t
        input %x: f32[2, 4, 3]
        weight %w: f32[3, 3]
        %p: f32[3, 3] = permute{perm=[1, 0]} %w
        %r: f32[1, 3, 3] = reshape{shape=[1, 3, 3]} %p
        %e: f32[2, 3, 3] = expand{shape=[2, 3, 3]} %r
        %y: f32[2, 4, 3] = matmul %x, %e
        output "y" %y
        "#,
        r#"
        graph t
        input %x: f32[2, 4, 3]
        weight %r: f32[1, 3, 3]
        %e: f32[2, 3, 3] = expand{shape=[2, 3, 3]} %r
        %y: f32[2, 4, 3] = matmul %x, %e
        output "y" %y
        "#,
    );
}
