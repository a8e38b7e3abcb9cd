//! The e-graph optimizer: each rule alone on a graph where it must fire (start ⇒ goal, outputs
//! bit-identical on awkward inputs for the exact rules) and one where it must not; the whole
//! rule set on every fixture (outputs equal to the un-optimized graph's in the interpreter);
//! determinism; limits; and the cost model's choices.

mod common;
use common::{check, dedent, parse, unchanged, weights_for};
use kiln_ir::Graph;
use kiln_passes::egraph::{optimize_egraph, optimize_egraph_with, rules, EgraphOptions};

/// The optimizer with only the named rules.
fn only(names: &'static [&'static str]) -> impl Fn(&Graph) -> Graph {
    move |g| {
        let rules: Vec<_> = rules::all().into_iter().filter(|r| names.contains(&r.name.as_str())).collect();
        assert_eq!(rules.len(), names.len(), "unknown rule in {names:?}");
        optimize_egraph_with(g, &EgraphOptions::default(), rules).unwrap_or_else(|e| panic!("{e}")).0
    }
}

fn scalar_graph(op: &str, value: &str) -> String {
    format!(
        "graph t
         input %x: f32[2, 3]
         %c: f32[] = full{{shape=[], value={value}, dtype=f32}}
         %y: f32[2, 3] = {op}
         output \"y\" %y"
    )
}

const X_ONLY: &str = "graph t
    input %x: f32[2, 3]
    output \"y\" %x";

#[test]
fn mul_one() {
    check(only(&["mul-one"]), &scalar_graph("mul %x, %c", "1.0"), X_ONLY);
    unchanged(only(&["mul-one"]), &scalar_graph("mul %x, %c", "2.0"));
    // 1 broadcast to a larger shape is not the identity.
    unchanged(
        only(&["mul-one", "one-mul"]),
        "graph t
         input %x: f32[3]
         %c: f32[2, 3] = full{shape=[2, 3], value=1.0, dtype=f32}
         %y: f32[2, 3] = mul %x, %c
         output \"y\" %y",
    );
}

#[test]
fn one_mul_and_div_one() {
    check(only(&["one-mul"]), &scalar_graph("mul %c, %x", "1.0"), X_ONLY);
    check(only(&["div-one"]), &scalar_graph("div %x, %c", "1.0"), X_ONLY);
    unchanged(only(&["div-one"]), &scalar_graph("div %c, %x", "1.0"));
}

#[test]
fn signed_zeros() {
    check(only(&["sub-zero"]), &scalar_graph("sub %x, %c", "0.0"), X_ONLY);
    unchanged(only(&["sub-zero"]), &scalar_graph("sub %x, %c", "-0.0"));
    check(only(&["add-negative-zero"]), &scalar_graph("add %x, %c", "-0.0"), X_ONLY);
    unchanged(only(&["add-negative-zero"]), &scalar_graph("add %x, %c", "0.0"));
}

#[test]
fn neg_neg() {
    check(
        only(&["neg-neg"]),
        "graph t
         input %x: f32[2, 3]
         %a: f32[2, 3] = neg %x
         %b: f32[2, 3] = neg %a
         output \"y\" %b",
        X_ONLY,
    );
    unchanged(
        only(&["neg-neg"]),
        "graph t
         input %x: f32[2, 3]
         %a: f32[2, 3] = neg %x
         %b: f32[2, 3] = abs %a
         output \"y\" %b",
    );
}

#[test]
fn mul_minus_one() {
    check(
        only(&["mul-minus-one"]),
        &scalar_graph("mul %x, %c", "-1.0"),
        "graph t
         input %x: f32[2, 3]
         %y: f32[2, 3] = neg %x
         output \"y\" %y",
    );
    unchanged(only(&["mul-minus-one"]), &scalar_graph("mul %x, %c", "-2.0"));
}

#[test]
fn add_neg_and_neg_add() {
    let sub = "graph t
         input %a: f32[2, 3]
         input %b: f32[2, 3]
         %y: f32[2, 3] = sub %a, %b
         output \"y\" %y";
    check(
        only(&["add-neg"]),
        "graph t
         input %a: f32[2, 3]
         input %b: f32[2, 3]
         %n: f32[2, 3] = neg %b
         %y: f32[2, 3] = add %a, %n
         output \"y\" %y",
        sub,
    );
    check(
        only(&["neg-add"]),
        "graph t
         input %a: f32[2, 3]
         input %b: f32[2, 3]
         %n: f32[2, 3] = neg %b
         %y: f32[2, 3] = add %n, %a
         output \"y\" %y",
        sub,
    );
    // The negation is used elsewhere too: the rule still fires, the negation stays.
    unchanged(
        only(&["add-neg"]),
        "graph t
         input %a: f32[2, 3]
         input %b: f32[2, 3]
         %n: f32[2, 3] = neg %b
         %y: f32[2, 3] = mul %a, %n
         output \"y\" %y",
    );
}

#[test]
fn div_power_of_two() {
    check(
        only(&["div-power-of-two"]),
        &scalar_graph("div %x, %c", "4.0"),
        "graph t
         input %x: f32[2, 3]
         %y.full: f32[] = full{shape=[], value=0.25, dtype=f32}
         %y: f32[2, 3] = mul %x, %y.full
         output \"y\" %y",
    );
    unchanged(only(&["div-power-of-two"]), &scalar_graph("div %x, %c", "3.0"));
    unchanged(only(&["div-power-of-two"]), &scalar_graph("div %x, %c", "-4.0"));
}

#[test]
fn pow_small_integers() {
    check(only(&["pow-one"]), &scalar_graph("pow %x, %c", "1.0"), X_ONLY);
    let g = parse(&dedent(&scalar_graph("pow %x, %c", "2.0")));
    let out = only(&["pow-two"])(&g);
    assert_eq!(
        kiln_ir::text::print(&out),
        dedent(
            "graph t
             input %x: f32[2, 3]
             %y: f32[2, 3] = mul %x, %x
             output \"y\" %y"
        )
    );
    let g = parse(&dedent(&scalar_graph("pow %x, %c", "3.0")));
    let text = kiln_ir::text::print(&only(&["pow-three"])(&g));
    assert!(text.contains("mul %x, %x") && !text.contains("pow"), "{text}");
    unchanged(only(&["pow-two", "pow-three", "pow-one"]), &scalar_graph("pow %x, %c", "2.5"));
}

#[test]
fn cast_chains() {
    check(
        only(&["cast-cast"]),
        "graph t
         input %x: f16[4]
         %a: f32[4] = cast{to=f32} %x
         %b: f64[4] = cast{to=f64} %a
         output \"y\" %b",
        "graph t
         input %x: f16[4]
         %b: f64[4] = cast{to=f64} %x
         output \"y\" %b",
    );
    // f32 → f16 loses values: the chain must stay.
    unchanged(
        only(&["cast-cast"]),
        "graph t
         input %x: f32[4]
         %a: f16[4] = cast{to=f16} %x
         %b: f32[4] = cast{to=f32} %a
         output \"y\" %b",
    );
}

#[test]
fn permutes_compose_and_cancel() {
    check(
        only(&["permute-permute"]),
        "graph t
         input %x: f32[2, 3, 4]
         %a: f32[3, 4, 2] = permute{perm=[1, 2, 0]} %x
         %b: f32[2, 3, 4] = permute{perm=[2, 0, 1]} %a
         output \"y\" %b",
        "graph t
         input %x: f32[2, 3, 4]
         output \"y\" %x",
    );
    check(
        only(&["permute-permute"]),
        "graph t
         input %x: f32[2, 3, 4]
         %a: f32[3, 4, 2] = permute{perm=[1, 2, 0]} %x
         %b: f32[4, 3, 2] = permute{perm=[1, 0, 2]} %a
         output \"y\" %b",
        "graph t
         input %x: f32[2, 3, 4]
         %b: f32[4, 3, 2] = permute{perm=[2, 1, 0]} %x
         output \"y\" %b",
    );
    unchanged(
        only(&["permute-permute"]),
        "graph t
         input %x: f32[2, 3, 4]
         %a: f32[3, 4, 2] = permute{perm=[1, 2, 0]} %x
         %b: f32[3, 4, 2] = exp %a
         output \"y\" %b",
    );
}

#[test]
fn permutes_meet_through_elementwise_ops() {
    check(
        only(&["permute-permute", "exp-of-permute"]),
        "graph t
         input %x: f32[2, 3]
         %a: f32[3, 2] = permute{perm=[1, 0]} %x
         %b: f32[3, 2] = exp %a
         %c: f32[2, 3] = permute{perm=[1, 0]} %b
         output \"y\" %c",
        "graph t
         input %x: f32[2, 3]
         %c: f32[2, 3] = exp %x
         output \"y\" %c",
    );
    check(
        only(&["permute-permute", "add-of-permutes"]),
        "graph t
         input %x: f32[2, 3]
         input %z: f32[2, 3]
         %a: f32[3, 2] = permute{perm=[1, 0]} %x
         %b: f32[3, 2] = permute{perm=[1, 0]} %z
         %s: f32[3, 2] = add %a, %b
         %c: f32[2, 3] = permute{perm=[1, 0]} %s
         output \"y\" %c",
        "graph t
         input %x: f32[2, 3]
         input %z: f32[2, 3]
         %c: f32[2, 3] = add %x, %z
         output \"y\" %c",
    );
    // Different permutations: nothing to move.
    unchanged(
        only(&["permute-permute", "add-of-permutes"]),
        "graph t
         input %x: f32[2, 2, 2]
         input %z: f32[2, 2, 2]
         %a: f32[2, 2, 2] = permute{perm=[1, 0, 2]} %x
         %b: f32[2, 2, 2] = permute{perm=[0, 2, 1]} %z
         %s: f32[2, 2, 2] = add %a, %b
         output \"y\" %s",
    );
}

#[test]
fn reshapes_and_expands_compose() {
    check(
        only(&["reshape-reshape", "reshape-identity"]),
        "graph t
         input %x: f32[2, 6]
         %a: f32[3, 4] = reshape{shape=[3, 4]} %x
         %b: f32[12] = reshape{shape=[12]} %a
         output \"y\" %b",
        "graph t
         input %x: f32[2, 6]
         %b: f32[12] = reshape{shape=[12]} %x
         output \"y\" %b",
    );
    check(
        only(&["reshape-reshape", "reshape-identity"]),
        "graph t
         input %x: f32[2, 6]
         %a: f32[3, 4] = reshape{shape=[3, 4]} %x
         %b: f32[2, 6] = reshape{shape=[2, 6]} %a
         output \"y\" %b",
        X_ONLY.replace("f32[2, 3]", "f32[2, 6]").as_str(),
    );
    check(
        only(&["expand-expand"]),
        "graph t
         input %x: f32[1, 1]
         %a: f32[1, 4] = expand{shape=[1, 4]} %x
         %b: f32[3, 4] = expand{shape=[3, 4]} %a
         output \"y\" %b",
        "graph t
         input %x: f32[1, 1]
         %b: f32[3, 4] = expand{shape=[3, 4]} %x
         output \"y\" %b",
    );
    unchanged(
        only(&["reshape-reshape", "expand-expand"]),
        "graph t
         input %x: f32[2, 6]
         %a: f32[3, 4] = reshape{shape=[3, 4]} %x
         %b: f32[3, 4] = exp %a
         output \"y\" %b",
    );
}

#[test]
fn a_scale_moves_onto_a_weight() {
    // (x @ W) * s → x @ (W * s): W * s is constant, so it costs nothing at run time.
    let g = parse(&dedent(
        "graph t
         input %x: f32[8, 16]
         weight %w: f32[16, 32]
         %m: f32[8, 32] = matmul %x, %w
         %s: f32[] = full{shape=[], value=0.125, dtype=f32}
         %y: f32[8, 32] = mul %m, %s
         output \"y\" %y",
    ));
    let out = only(&["scaled-matmul"])(&g);
    let text = kiln_ir::text::print(&out);
    assert!(text.contains("= mul %w, %s") && text.contains("= matmul %x, "), "{text}");
    let w = weights_for(&g);
    let x = kiln_ir::Tensor::from_f64(
        kiln_ir::DType::F32,
        vec![8, 16],
        &(0..128).map(|i| i as f64 * 0.01).collect::<Vec<_>>(),
    );
    let a = kiln_ir::interp::run(&g, &w, std::slice::from_ref(&x)).unwrap();
    let b = kiln_ir::interp::run(&out, &w, &[x]).unwrap();
    let c = kiln_ir::tensor::compare(&b[0], &a[0], 1e-6, 1e-6).unwrap();
    assert_eq!(c.bad, 0, "{c:?}");
    // A scale that is not a scalar stays where it is.
    unchanged(
        only(&["scaled-matmul"]),
        "graph t
         input %x: f32[8, 16]
         input %v: f32[32]
         weight %w: f32[16, 32]
         %m: f32[8, 32] = matmul %x, %w
         %y: f32[8, 32] = mul %m, %v
         output \"y\" %y",
    );
}

#[test]
fn every_rule_has_a_name_a_theme_and_a_doc() {
    let all = rules::all();
    let mut names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "rule names are unique");
    for r in &all {
        assert!(
            !r.doc.is_empty() && ["algebra", "layout", "linalg", "folding", "fused"].contains(&r.theme),
            "{}",
            r.name
        );
    }
}

#[test]
fn limits_stop_saturation_and_are_reported() {
    let g = parse(&dedent(
        "graph t
         input %x: f32[2, 3]
         %a: f32[3, 2] = permute{perm=[1, 0]} %x
         %b: f32[3, 2] = exp %a
         %c: f32[3, 2] = neg %b
         %d: f32[3, 2] = tanh %c
         %e: f32[2, 3] = permute{perm=[1, 0]} %d
         output \"y\" %e",
    ));
    let opts = EgraphOptions { iter_limit: 1, ..EgraphOptions::default() };
    let (_, report) = optimize_egraph(&g, &opts).unwrap();
    assert_eq!(report.stop_reason, "iteration limit");
    assert_eq!(report.iterations, 1);
    // The time limit (kiln's own, checked before every iteration): nothing is rewritten, and
    // the graph comes back as it was.
    let opts = EgraphOptions { time_limit: std::time::Duration::ZERO, ..EgraphOptions::default() };
    let (out, report) = optimize_egraph(&g, &opts).unwrap();
    assert_eq!(report.stop_reason, "time limit");
    assert_eq!(kiln_ir::text::print(&out), kiln_ir::text::print(&g));
    let (out, report) = optimize_egraph(&g, &EgraphOptions::default()).unwrap();
    assert_eq!(report.stop_reason, "saturated", "{report:?}");
    // Both permutes moved out and cancelled.
    assert!(!kiln_ir::text::print(&out).contains("permute"), "{}", kiln_ir::text::print(&out));
    assert!(report.applied.contains_key("permute-permute"), "{:?}", report.applied);
}

const MODELS: &[&str] = &["mlp", "resblock", "encoder", "gpt", "mobile", "dynbatch", "views", "dynseq"];

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// Every fixture, optimized by the graph passes and then the e-graph: the interpreter gives
/// the same outputs within rtol 1e-5 / atol 1e-6 (the linear-algebra rules may round
/// differently), two runs print the same graph, and the report adds up. `--nocapture` prints
/// a table.
#[test]
fn every_fixture_keeps_its_outputs_through_the_egraph() {
    let mut bad = Vec::new();
    println!(
        "{:<22} {:>5} {:>5} {:>7} {:>7} {:>5} {:>8}  stop",
        "fixture", "ops", "out", "nodes", "classes", "iters", "ms"
    );
    for m in MODELS {
        for form in ["aten", "core"] {
            let archive = format!("{m}.t215.{form}.pt2");
            let model = kiln_frontend::load(&fixture(&archive)).unwrap();
            let opts = kiln_passes::Options { egraph: None, ..Default::default() };
            let (g, w, _) = kiln_passes::optimize(&model.graph, &model.weights, &opts).unwrap();
            let (out, report) =
                optimize_egraph(&g, &EgraphOptions::default()).unwrap_or_else(|e| panic!("{archive}: {e}"));
            let (again, _) = optimize_egraph(&g, &EgraphOptions::default()).unwrap();
            assert_eq!(kiln_ir::text::print(&again), kiln_ir::text::print(&out), "{archive}: not deterministic");
            assert_eq!((report.ops_in, report.ops_out), (g.node_count(), out.node_count()));
            println!(
                "{archive:<22} {:>5} {:>5} {:>7} {:>7} {:>5} {:>8.1}  {} {:?}",
                report.ops_in,
                report.ops_out,
                report.nodes,
                report.classes,
                report.iterations,
                report.seconds * 1e3,
                report.stop_reason,
                report.applied
            );
            for set in ["in", "in2"] {
                let path = fixture(&format!("{m}.t215.{set}.npz"));
                if !path.exists() {
                    continue;
                }
                let given = kiln_ir::npz::read_npz(&path).unwrap();
                let inputs = |g: &Graph| -> Vec<kiln_ir::Tensor> {
                    g.inputs()
                        .iter()
                        .map(|&v| given.iter().find(|(k, _)| *k == g.value(v).name).unwrap().1.clone())
                        .collect()
                };
                let want = kiln_ir::interp::run(&g, &w, &inputs(&g)).unwrap();
                let got = kiln_ir::interp::run(&out, &w, &inputs(&out)).unwrap_or_else(|e| panic!("{archive}: {e}"));
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    match kiln_ir::tensor::compare(a, b, 1e-5, 1e-6) {
                        Some(c) if c.bad == 0 => {}
                        other => bad.push(format!("{archive} {set} output {i}: {other:?}")),
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn rules_from_a_file_run_with_the_built_in_ones() {
    let file = "# a comment line\n\
                double-to-add: (mul ?x (full {shape=[],value=2.0,dtype=f32})) => (add ?x ?x)  # trailing comment\n";
    let g = parse(&dedent(&scalar_graph("mul %x, %c", "2.0")));
    let opts = EgraphOptions { extra_rules: Some(file.into()), ..EgraphOptions::default() };
    let (out, report) = optimize_egraph(&g, &opts).unwrap();
    assert_eq!(
        kiln_ir::text::print(&out),
        dedent(
            "graph t
             input %x: f32[2, 3]
             %y: f32[2, 3] = add %x, %x
             output \"y\" %y"
        )
    );
    assert_eq!(report.applied.get("double-to-add"), Some(&1));
}

#[test]
fn a_bad_rule_file_names_the_line() {
    let cases = [
        ("ok: (neg (neg ?x)) => ?x\nno-arrow: (neg ?x) ?x", "line 2", "=>"),
        ("bad-pattern: (neg ?x => ?x", "line 1", "searcher"),
        ("unbound: (neg ?x) => ?y", "line 1", "?y"),
        ("dup: (neg ?x) => (neg ?x)\n\ndup: (abs ?x) => (abs ?x)", "line 3", "second rule"),
        ("everything: ?x => (neg (neg ?x))", "line 1", "bare variable"),
        ("two words: (neg ?x) => ?x", "line 1", "rule name"),
        ("(neg ?x) => ?x", "line 1", "name: searcher => applier"),
    ];
    let g = parse(&dedent(X_ONLY));
    for (file, line, what) in cases {
        let opts = EgraphOptions { extra_rules: Some(file.into()), ..EgraphOptions::default() };
        let e = optimize_egraph(&g, &opts).err().unwrap_or_else(|| panic!("accepted: {file}")).to_string();
        assert!(e.contains(line) && e.contains(what), "{file}: {e}");
    }
}

#[test]
fn the_report_explains_rewritten_values() {
    let g = parse(&dedent(&scalar_graph("pow %x, %c", "3.0")));
    let (out, report) = optimize_egraph(&g, &EgraphOptions::default()).unwrap();
    let text = kiln_ir::text::print(&out);
    assert_eq!(report.explain.get("y").map(Vec::as_slice), Some(&["pow-three".to_string()][..]), "{report:?}\n{text}");
    assert!(report.explain.keys().all(|v| out.value_named(v).is_some()), "{:?}", report.explain);
}

/// docs/egraph.md lists every rule (the generated permute rules by their `{op}-of-permute`
/// and `{op}-of-permutes` families).
#[test]
fn the_docs_list_every_rule() {
    let docs = std::fs::read_to_string(fixture("../../docs/egraph.md")).unwrap();
    for r in rules::all() {
        let listed = if r.name.ends_with("-of-permute") {
            "`{op}-of-permute`".to_string()
        } else if r.name.ends_with("-of-permutes") {
            "`{op}-of-permutes`".to_string()
        } else {
            format!("`{}`", r.name)
        };
        assert!(docs.contains(&listed), "docs/egraph.md does not list {listed}");
    }
}

#[test]
fn a_scale_moves_from_an_operand_to_the_output() {
    // The output (8×4) is smaller than the scaled operand (8×32): scaling it is cheaper.
    let scaled_left = "graph t
         input %x: f32[8, 32]
         weight %w: f32[32, 4]
         %s: f32[] = full{shape=[], value=0.125, dtype=f32}
         %xs: f32[8, 32] = mul %x, %s
         %y: f32[8, 4] = matmul %xs, %w
         output \"y\" %y";
    let g = parse(&dedent(scaled_left));
    let text = kiln_ir::text::print(&only(&["matmul-scaled-left"])(&g));
    assert!(text.contains("= matmul %x, %w") && text.contains("= mul %y.matmul, %s"), "{text}");
    // The other way round (output larger than the operand) the scale stays on the operand.
    unchanged(
        only(&["matmul-scaled-left"]),
        &scaled_left.replace("[32, 4]", "[32, 64]").replace("f32[8, 4]", "f32[8, 64]"),
    );
    // A per-column scale is not a scalar: no move.
    unchanged(
        only(&["matmul-scaled-left", "matmul-scaled-right"]),
        "graph t
         input %x: f32[8, 16]
         input %v: f32[16]
         weight %w: f32[16, 32]
         %xs: f32[8, 16] = mul %x, %v
         %y: f32[8, 32] = matmul %xs, %w
         output \"y\" %y",
    );
}

#[test]
fn parallel_matmuls_of_one_input_merge() {
    let qkv = "graph t
         input %x: f32[4, 8]
         weight %wq: f32[8, 8]
         weight %wk: f32[8, 8]
         weight %wv: f32[8, 16]
         %q: f32[4, 8] = matmul %x, %wq
         %k: f32[4, 8] = matmul %x, %wk
         %v: f32[4, 16] = matmul %x, %wv
         %qk: f32[4, 8] = add %q, %k
         output \"qk\" %qk
         output \"v\" %v";
    let g = parse(&dedent(qkv));
    let out = only(&["merge-parallel-matmuls"])(&g);
    let text = kiln_ir::text::print(&out);
    assert_eq!(text.matches("= matmul").count(), 1, "{text}");
    assert!(text.contains("concat{axis=1} %wq, %wk, %wv"), "{text}");
    assert!(text.contains("slice{axis=1, start=8, end=16, step=1}"), "{text}");
    let w = weights_for(&g);
    common::assert_bit_identical(&g, &w, &out, &w);
    // Different inputs, or an operand that is not a weight: nothing to merge.
    unchanged(
        only(&["merge-parallel-matmuls"]),
        "graph t
         input %x: f32[4, 8]
         input %y: f32[4, 8]
         weight %wq: f32[8, 8]
         weight %wk: f32[8, 8]
         %q: f32[4, 8] = matmul %x, %wq
         %k: f32[4, 8] = matmul %y, %wk
         %qk: f32[4, 8] = add %q, %k
         output \"qk\" %qk",
    );
    unchanged(
        only(&["merge-parallel-matmuls"]),
        "graph t
         input %x: f32[4, 8]
         input %b: f32[8, 8]
         weight %wk: f32[8, 8]
         %q: f32[4, 8] = matmul %x, %b
         %k: f32[4, 8] = matmul %x, %wk
         %qk: f32[4, 8] = add %q, %k
         output \"qk\" %qk",
    );
}

#[test]
fn matmul_chains_reassociate_by_cost() {
    // x is 8×4: x @ (A @ B) with A @ B folded (4×4) beats (x @ A) @ B through 64 columns.
    let chain = "graph t
         input %x: f32[8, 4]
         weight %a: f32[4, 64]
         weight %b: f32[64, 4]
         %xa: f32[8, 64] = matmul %x, %a
         %y: f32[8, 4] = matmul %xa, %b
         output \"y\" %y";
    let g = parse(&dedent(chain));
    let text = kiln_ir::text::print(&only(&["matmul-reassociate-left"])(&g));
    assert!(text.contains("= matmul %a, %b") && text.contains("= matmul %x, %y.matmul"), "{text}");
    // A rank-4 adapter on a 256-wide layer: (x @ A) @ B is far less work than x @ (A @ B)
    // with a folded 256×256 weight (the cost model counts the launch saved, but not enough).
    unchanged(
        only(&["matmul-reassociate-left", "matmul-reassociate-right"]),
        "graph t
         input %x: f32[64, 256]
         weight %a: f32[256, 4]
         weight %b: f32[4, 256]
         %xa: f32[64, 4] = matmul %x, %a
         %y: f32[64, 256] = matmul %xa, %b
         output \"y\" %y",
    );
}

#[test]
fn matmuls_of_one_input_and_summed_weights_become_one() {
    // x @ A + x @ B (a base weight plus an adapter's delta): one matmul with A + B folded.
    let g = parse(&dedent(
        "graph t
         input %x: f32[8, 16]
         weight %a: f32[16, 16]
         weight %b: f32[16, 16]
         %xa: f32[8, 16] = matmul %x, %a
         %xb: f32[8, 16] = matmul %x, %b
         %y: f32[8, 16] = add %xa, %xb
         output \"y\" %y",
    ));
    let text = kiln_ir::text::print(&only(&["matmul-distribute"])(&g));
    assert!(text.contains("= add %a, %b") && text.matches("= matmul").count() == 1, "{text}");
    // Operands of different shapes (a broadcast) are left alone.
    unchanged(
        only(&["matmul-distribute"]),
        "graph t
         input %x: f32[8, 16]
         weight %a: f32[16, 16]
         weight %b: f32[2, 16, 16]
         %xa: f32[8, 16] = matmul %x, %a
         %xb: f32[2, 8, 16] = matmul %x, %b
         %y: f32[2, 8, 16] = add %xa, %xb
         output \"y\" %y",
    );
}

/// Decomposed attention as the frontend writes `scaled_dot_product_attention` with a causal
/// mask and an additive one; `{scale}` and `{axis}` vary for the must-not-fire cases.
fn attention_graph(dtype: &str, scale: &str, axis: usize) -> String {
    format!(
        "graph t
         input %q: {dtype}[2, 4, 6]
         input %k: {dtype}[2, 5, 6]
         input %v: {dtype}[2, 5, 3]
         input %keep: bool[4, 5]
         input %bias: {dtype}[2, 1, 5]
         %kt: {dtype}[2, 6, 5] = permute{{perm=[0, 2, 1]}} %k
         %qk: {dtype}[2, 4, 5] = matmul %q, %kt
         %c: {dtype}[] = full{{shape=[], value=2.449489742783178, dtype={dtype}}}
         %s: {dtype}[2, 4, 5] = {scale}
         %ninf: {dtype}[] = full{{shape=[], value=-inf, dtype={dtype}}}
         %masked: {dtype}[2, 4, 5] = where %keep, %s, %ninf
         %biased: {dtype}[2, 4, 5] = add %masked, %bias
         %max: {dtype}[2, {rows}, {cols}] = reduce_max{{axes=[{axis}], keepdim=true}} %biased
         %d: {dtype}[2, 4, 5] = sub %biased, %max
         %e: {dtype}[2, 4, 5] = exp %d
         %sum: {dtype}[2, {rows}, {cols}] = reduce_sum{{axes=[{axis}], keepdim=true}} %e
         %p: {dtype}[2, 4, 5] = div %e, %sum
         %y: {dtype}[2, 4, 3] = matmul %p, %v
         output \"y\" %y",
        rows = if axis == 2 { 4 } else { 1 },
        cols = if axis == 2 { 1 } else { 5 },
    )
}

#[test]
fn attention_is_recognized() {
    let g = parse(&dedent(&attention_graph("f32", "div %qk, %c", 2)));
    let out = only(&["recognize-attention"])(&g);
    let text = kiln_ir::text::print(&out);
    assert!(
        text.contains("= attention{scale=div(2.449489742783178), masks=[keep(-inf), add]} %q, %k, %v, %keep, %bias"),
        "{text}"
    );
    assert!(!text.contains("matmul") && !text.contains("reduce_"), "{text}");
    // Exact: attention is defined as the decomposed ops (NaN, ±0 and ±∞ in the inputs).
    let w = weights_for(&g);
    common::assert_bit_identical(&g, &w, &out, &w);
    // No scale at all, and a multiplied one.
    let plain = attention_graph("f64", "add %qk, %c", 2).replace("add %qk, %c", "mul %qk, %c");
    let text = kiln_ir::text::print(&only(&["recognize-attention"])(&parse(&dedent(&plain))));
    assert!(text.contains("attention{scale=mul(2.449489742783178)"), "{text}");
}

#[test]
fn attention_is_not_recognized_where_it_differs() {
    let rule = || only(&["recognize-attention"]);
    // Softmax over another axis.
    unchanged(rule(), &attention_graph("f32", "div %qk, %c", 1));
    // A scale that is not a constant (here: the scores themselves).
    let g = parse(&dedent(&attention_graph("f32", "mul %qk, %qk", 2)));
    let text = kiln_ir::text::print(&rule()(&g));
    assert!(!text.contains("attention") && text.contains("%s: f32[2, 4, 5] = mul %qk, %qk"), "{text}");
    // Half precision: the fused kernel would accumulate in f16.
    unchanged(rule(), &attention_graph("f16", "div %qk, %c", 2));
}

#[test]
fn rules_can_be_left_out_by_name() {
    let g = parse(&dedent(&attention_graph("f32", "div %qk, %c", 2)));
    let off = EgraphOptions { disabled_rules: vec!["recognize-attention".into()], ..EgraphOptions::default() };
    let (out, report) = optimize_egraph(&g, &off).unwrap();
    assert!(!kiln_ir::text::print(&out).contains("attention"), "{}", kiln_ir::text::print(&out));
    assert!(!report.applied.contains_key("recognize-attention"));
    let (on, _) = optimize_egraph(&g, &EgraphOptions::default()).unwrap();
    assert!(kiln_ir::text::print(&on).contains("attention"));
    let bad = EgraphOptions { disabled_rules: vec!["no-such-rule".into()], ..EgraphOptions::default() };
    let e = optimize_egraph(&g, &bad).unwrap_err().to_string();
    assert!(e.contains("no rule is named `no-such-rule`") && e.contains("recognize-attention"), "{e}");
}

/// A convolution with a bias, then an inference batch norm as the frontend writes it:
/// `((conv + bias) - mean) * scale + shift`, all per channel.
const CONV_BN: &str = "graph t
     input %x: f32[1, 2, 5, 5]
     weight %w: f32[3, 2, 3, 3]
     weight %bias: f32[3, 1, 1]
     weight %mean: f32[3, 1, 1]
     weight %scale: f32[3, 1, 1]
     weight %shift: f32[3, 1, 1]
     %conv: f32[1, 3, 3, 3] = conv{stride=[1, 1], padding=[0, 0], dilation=[1, 1], groups=1, transposed=false, output_padding=[0, 0]} %x, %w
     %biased: f32[1, 3, 3, 3] = add %conv, %bias
     %centered: f32[1, 3, 3, 3] = sub %biased, %mean
     %scaled: f32[1, 3, 3, 3] = mul %centered, %scale
     %y: f32[1, 3, 3, 3] = add %scaled, %shift
     output \"y\" %y";

const FOLDING: &[&str] = &[
    "scale-over-shift",
    "scale-over-centering",
    "combine-shifts",
    "combine-shift-and-centering",
    "combine-centering-and-shift",
    "conv-scaled-channels",
    "matmul-scaled-columns",
];

#[test]
fn batch_norm_folds_into_the_convolution() {
    let g = parse(&dedent(CONV_BN));
    let out = only(FOLDING)(&g);
    let text = kiln_ir::text::print(&out);
    // One convolution of a scaled weight and one add of a folded constant remain: everything
    // else is computed from weights (constant folding does it at compile time).
    assert!(text.contains("%y.mul_1: f32[3, 2, 3, 3] = mul %w, %y.reshape"), "{text}");
    assert!(text.contains("output_padding=[0, 0]} %x, %y.mul_1"), "{text}");
    assert!(text.contains("%y: f32[1, 3, 3, 3] = add %y.conv, %y.add"), "{text}");
    let on_input = text.lines().filter(|l| l.contains(" = ") && (l.contains("%x") || l.contains("%y.conv"))).count();
    assert_eq!(on_input, 2, "{text}");
    let w = weights_for(&g);
    let x = common::sample_inputs(&g).unwrap();
    // Finite inputs: the rules are equal in real arithmetic, not bit for bit.
    let finite = |t: &kiln_ir::Tensor| {
        let v: Vec<f64> = t.to_f64().iter().map(|v| if v.is_finite() { *v } else { 0.5 }).collect();
        kiln_ir::Tensor::from_f64(t.dtype, t.shape.clone(), &v)
    };
    let x: Vec<_> = x.iter().map(finite).collect();
    let (a, b) = (kiln_ir::interp::run(&g, &w, &x).unwrap(), kiln_ir::interp::run(&out, &w, &x).unwrap());
    let c = kiln_ir::tensor::compare(&b[0], &a[0], 1e-5, 1e-5).unwrap();
    assert_eq!(c.bad, 0, "{c:?}");
}

#[test]
fn weight_folding_needs_constants_that_fit_the_weight() {
    // A scale that varies along the spatial dims cannot move into the weight.
    let spatial = CONV_BN.replace("%scale: f32[3, 1, 1]", "%scale: f32[3, 3, 3]");
    let text = kiln_ir::text::print(&only(&["conv-scaled-channels"])(&parse(&dedent(&spatial))));
    assert!(!text.contains("= mul %w"), "{text}");
    // A scale computed from the input is not a constant: nothing moves.
    unchanged(
        only(FOLDING),
        "graph t
         input %x: f32[4, 8]
         input %s: f32[8]
         weight %w: f32[8, 8]
         %m: f32[4, 8] = matmul %x, %w
         %y: f32[4, 8] = mul %m, %s
         output \"y\" %y",
    );
    // A per-column weight scale folds (LayerScale after a linear layer).
    let g = parse(&dedent(
        "graph t
         input %x: f32[4, 8]
         weight %w: f32[8, 8]
         weight %gamma: f32[8]
         %m: f32[4, 8] = matmul %x, %w
         %y: f32[4, 8] = mul %m, %gamma
         output \"y\" %y",
    ));
    let text = kiln_ir::text::print(&only(&["matmul-scaled-columns"])(&g));
    assert!(text.contains("= mul %w, %") && text.contains("%y: f32[4, 8] = matmul %x"), "{text}");
}

#[test]
fn explanations_come_from_egg_proofs_and_change_nothing() {
    // y = (x * 1) ^ 3: the proof that the extracted `x * x * x` equals y is `pow-three` (egg
    // proves it on the e-class of `x * 1`, which `x` joined, so no `mul-one` step is needed).
    let g = parse(&dedent(
        "graph t
         input %x: f32[2, 3]
         %one: f32[] = full{shape=[], value=1.0, dtype=f32}
         %three: f32[] = full{shape=[], value=3.0, dtype=f32}
         %x1: f32[2, 3] = mul %x, %one
         %y: f32[2, 3] = pow %x1, %three
         output \"y\" %y",
    ));
    let explained = EgraphOptions { explanations: true, ..EgraphOptions::default() };
    let (out, report) = optimize_egraph(&g, &explained).unwrap();
    let rules = report.explain.get("y").cloned().unwrap_or_default();
    assert_eq!(rules, ["pow-three"], "{:?}\n{}", report.explain, kiln_ir::text::print(&out));
    let (plain, _) = optimize_egraph(&g, &EgraphOptions::default()).unwrap();
    assert_eq!(kiln_ir::text::print(&plain), kiln_ir::text::print(&out));
    // Attention: one rule, and the same graph either way on a fixture-sized model.
    let g = parse(&dedent(&attention_graph("f32", "div %qk, %c", 2)));
    let (out, report) = optimize_egraph(&g, &explained).unwrap();
    assert_eq!(report.explain.get("y").map(Vec::as_slice), Some(&["recognize-attention".to_string()][..]));
    let (plain, _) = optimize_egraph(&g, &EgraphOptions::default()).unwrap();
    assert_eq!(kiln_ir::text::print(&plain), kiln_ir::text::print(&out));
}

#[test]
fn parallel_convolutions_of_one_input_merge() {
    let conv = |w: &str, stride: i64| {
        format!("conv{{stride=[{stride}, {stride}], padding=[0, 0], dilation=[1, 1], groups=1, transposed=false, output_padding=[0, 0]}} %x, %{w}")
    };
    let two = format!(
        "graph t
         input %x: f32[1, 4, 6, 6]
         weight %wa: f32[3, 4, 1, 1]
         weight %wb: f32[5, 4, 1, 1]
         %a: f32[1, 3, 6, 6] = {}
         %b: f32[1, 5, 6, 6] = {}
         output \"a\" %a
         output \"b\" %b",
        conv("wa", 1),
        conv("wb", 1)
    );
    let g = parse(&dedent(&two));
    let out = only(&["merge-parallel-convs"])(&g);
    let text = kiln_ir::text::print(&out);
    assert_eq!(text.matches("= conv").count(), 1, "{text}");
    assert!(
        text.contains("concat{axis=0} %wa, %wb") && text.contains("slice{axis=1, start=3, end=8, step=1}"),
        "{text}"
    );
    let w = weights_for(&g);
    common::assert_bit_identical(&g, &w, &out, &w);
    // Different strides: two convolutions stay.
    let strided = two.replace(&conv("wb", 1), &conv("wb", 2)).replace("%b: f32[1, 5, 6, 6]", "%b: f32[1, 5, 3, 3]");
    unchanged(only(&["merge-parallel-convs"]), &strided);
}

#[test]
fn constant_scales_and_shifts_combine() {
    let chain = "graph t
         input %x: f32[2, 3]
         input %s: f32[3]
         weight %c1: f32[3]
         %c2: f32[] = full{shape=[], value=3.0, dtype=f32}
         %a: f32[2, 3] = mul %x, %c1
         %b: f32[2, 3] = mul %a, %c2
         %d: f32[2, 3] = add %b, %c1
         %e: f32[2, 3] = add %d, %c2
         output \"y\" %e";
    let g = parse(&dedent(chain));
    let text = kiln_ir::text::print(&only(&["combine-scales", "combine-shifts"])(&g));
    assert!(text.contains("= mul %c1, %c2") && text.contains("= add %c1, %c2"), "{text}");
    assert_eq!(text.matches("%x").count(), 2, "one multiply of x remains: {text}");
    // A scale that is an input is not a constant: nothing combines.
    let g = parse(&dedent(&chain.replace("%b: f32[2, 3] = mul %a, %c2", "%b: f32[2, 3] = mul %a, %s")));
    let text = kiln_ir::text::print(&only(&["combine-scales"])(&g));
    assert!(!text.contains("= mul %c1"), "{text}");
}
