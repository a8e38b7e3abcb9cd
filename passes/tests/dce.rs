//! Dead-code elimination of nodes and weights, text in, text out.

mod common;
use common::{dedent, parse, weights_for};
use kiln_ir::{DType, Tensor, WeightStore};
use kiln_passes::{dead_code_elimination, PassError};

#[test]
fn drops_dead_nodes_and_unused_weights_keeps_inputs() {
    let g = parse(&dedent(
        r#"
        graph t
        input %x: f32[2]
        input %unused_input: f32[3]
        weight %w: f32[2]
        weight %dead_w: f32[2]
        weight %never: f32[5]
        %d: f32[2] = mul %x, %dead_w
        %dd: f32[2] = exp %d
        %y: f32[2] = add %x, %w
        output "y" %y
        "#,
    ));
    let mut store = weights_for(&g);
    store.insert("not_in_graph", Tensor::from_f64(DType::F32, vec![1], &[1.0]));
    let (out, store) = dead_code_elimination(&g, &store).unwrap();
    assert_eq!(
        kiln_ir::text::print(&out),
        dedent(
            r#"
            graph t
            input %x: f32[2]
            input %unused_input: f32[3]
            weight %w: f32[2]
            %y: f32[2] = add %x, %w
            output "y" %y
            "#
        )
    );
    assert_eq!(store.iter().map(|(k, _)| k).collect::<Vec<_>>(), vec!["w"]);
}

#[test]
fn a_live_graph_is_unchanged() {
    let text = dedent(
        r#"
        graph t
        input %x: f32[2]
        weight %w: f32[2]
        %a: f32[2] = add %x, %w
        %b: f32[2] = exp %a
        output "b" %b
        output "w" %w
        output "x" %x
        "#,
    );
    let g = parse(&text);
    let store = weights_for(&g);
    let (out, out_store) = dead_code_elimination(&g, &store).unwrap();
    assert_eq!(kiln_ir::text::print(&out), text);
    assert_eq!(out_store, store);
}

#[test]
fn a_missing_live_weight_is_a_typed_error() {
    let g = parse(&dedent(
        r#"
        graph t
        input %x: f32[2]
        weight %w: f32[2]
        weight %dead: f32[2]
        %y: f32[2] = add %x, %w
        output "y" %y
        "#,
    ));
    let mut store = WeightStore::default();
    store.insert("w", Tensor::from_f64(DType::F32, vec![2], &[1.0, 2.0]));
    // %dead is missing too, but nothing needs it.
    assert!(dead_code_elimination(&g, &store).is_ok());
    let e = dead_code_elimination(&g, &WeightStore::default()).unwrap_err();
    assert_eq!(e, PassError::MissingWeight { pass: "dce", name: "w".into() });
}
