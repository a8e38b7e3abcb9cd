//! The whole pipeline on a small graph, text in, text out, and its report.

mod common;
use common::{assert_close, dedent, parse, weights_for};
use kiln_passes::{optimize, Options};

const LINEAR_BN: &str = r#"
    graph t
    input %x: f32[2, 3]
    weight %fc.weight: f32[4, 3]
    weight %fc.bias: f32[4]
    weight %bn.var: f32[4]
    weight %bn.weight: f32[4]
    weight %unused: f32[7]
    %p: f32[3, 4] = permute{perm=[1, 0]} %fc.weight
    %mm: f32[2, 4] = matmul %x, %p
    %lin: f32[2, 4] = add %mm, %fc.bias
    %eps: f32[] = full{shape=[], value=1e-5, dtype=f32}
    %v: f32[4] = add %bn.var, %eps
    %r: f32[4] = rsqrt %v
    %s: f32[4] = mul %r, %bn.weight
    %y: f32[2, 4] = mul %lin, %s
    %one: f32[] = full{shape=[], value=1.0, dtype=f32}
    %y1: f32[2, 4] = mul %y, %one
    %c: f32[2, 4] = cast{to=f32} %y1
    %e1: f32[2, 4] = exp %c
    %e2: f32[2, 4] = exp %c
    %z: f32[2, 4] = add %e1, %e2
    %dead: f32[2, 4] = tanh %z
    output "z" %z
    output "y" %y1
"#;

#[test]
fn optimize_runs_the_passes_in_order() {
    let g = parse(&dedent(LINEAR_BN));
    let w = weights_for(&g);
    let (out, store, report) = optimize(&g, &w, &Options::default()).unwrap();
    let text = kiln_ir::text::print(&out);
    assert_eq!(
        text,
        dedent(
            r#"
            graph t
            input %x: f32[2, 3]
            weight %y.mul: f32[4]
            weight %y.mul_1: f32[3, 4]
            %y.matmul: f32[2, 4] = matmul %x, %y.mul_1
            %y: f32[2, 4] = add %y.matmul, %y.mul
            %e1: f32[2, 4] = exp %y
            %z: f32[2, 4] = add %e1, %e1
            output "z" %z
            output "y" %y
            "#
        ),
        "\n{text}"
    );
    // The batch norm's scale folded into the linear layer's weight and bias (the e-graph's
    // folding rules: equal in real arithmetic, rounded in another order).
    assert_eq!(store.len(), 2);
    assert_close(&g, &w, &out, &store, 1e-6, 1e-6);
    let passes: Vec<(&str, usize, usize)> =
        report.passes.iter().map(|p| (p.pass, p.nodes_before, p.nodes_after)).collect();
    assert_eq!(
        passes,
        vec![
            ("canonicalize", 15, 13),
            ("fold_constants", 13, 7),
            ("cse", 7, 6),
            // Extraction builds only what the outputs use: the dead `tanh` goes here.
            ("egraph", 6, 6),
            ("canonicalize", 6, 6),
            // The scaled weight and bias are computed at compile time.
            ("fold_constants", 6, 4),
            ("conv_padding", 4, 4),
            ("dce", 4, 4)
        ]
    );
    let egraph = report.egraph.as_ref().expect("the e-graph ran");
    assert_eq!((egraph.ops_in, egraph.ops_out, egraph.stop_reason.as_str()), (6, 6, "saturated"));
    let table = report.to_string();
    assert!(table.starts_with("pass"), "{table}");
    assert!(table.contains("fold_constants") && table.contains("13 -> 7"), "{table}");
    // Same input, same bytes.
    let (again, again_store, _) = optimize(&g, &w, &Options::default()).unwrap();
    assert_eq!(kiln_ir::text::print(&again), text);
    assert_eq!(again_store, store);
}

#[test]
fn folding_can_be_switched_off() {
    let g = parse(&dedent(LINEAR_BN));
    let w = weights_for(&g);
    let options = Options { fold_constants: false, ..Options::default() };
    let (out, store, report) = optimize(&g, &w, &options).unwrap();
    assert!(report.passes.iter().all(|p| p.pass != "fold_constants"));
    assert!(out.value_named("fc.weight").is_some());
    assert!(out.value_named("unused").is_none());
    assert_eq!(store.len(), 4);
    assert_close(&g, &w, &out, &store, 1e-6, 1e-6);
}
