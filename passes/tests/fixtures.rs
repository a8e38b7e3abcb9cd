//! The pipeline on every fixture model (`tests/fixtures/`, torch 2.15 exports, both IR forms):
//! the optimized graph must give the un-optimized graph's outputs in the interpreter (within
//! rtol 1e-5 / atol 1e-6: folding may round differently), and PyTorch's within the fixture
//! tolerance; dynamic models must still run at their second input size.
//!
//! Run with `--nocapture` to see the node counts before and after per fixture.

use kiln_ir::{npz, tensor::compare, Graph, Op, Tensor, ValueDef, WeightStore};
use kiln_passes::{optimize, Options};
use std::path::PathBuf;

const MODELS: &[&str] = &["mlp", "resblock", "encoder", "gpt", "mobile", "dynbatch", "views", "dynseq"];
const FORMS: &[&str] = &["aten", "core"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// The arrays of an `.npz` fixture, or `None` when the file does not exist.
fn arrays(name: &str) -> Option<Vec<(String, Tensor)>> {
    let path = fixture(name);
    path.exists().then(|| npz::read_npz(&path).unwrap_or_else(|e| panic!("{name}: {e}")))
}

/// The graph's inputs from `given`, matched by name.
fn inputs_for(g: &Graph, given: &[(String, Tensor)]) -> Vec<Tensor> {
    g.inputs()
        .iter()
        .map(|&v| {
            let name = &g.value(v).name;
            given.iter().find(|(k, _)| k == name).map(|(_, t)| t.clone()).unwrap_or_else(|| panic!("no input `{name}`"))
        })
        .collect()
}

fn run(g: &Graph, w: &WeightStore, inputs: &[Tensor]) -> Vec<Tensor> {
    kiln_ir::interp::run(g, w, inputs).unwrap_or_else(|e| panic!("{}: {e}", g.name))
}

/// Mismatches between `got` and `want`, described.
fn mismatches(what: &str, got: &[Tensor], want: &[Tensor], rtol: f64, atol: f64) -> Vec<String> {
    assert_eq!(got.len(), want.len(), "{what}: output count");
    let mut bad = Vec::new();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        match compare(g, w, rtol, atol) {
            None => bad.push(format!("{what} output {i}: shape {:?} vs {:?}", g.shape, w.shape)),
            Some(c) if c.bad > 0 => bad.push(format!("{what} output {i}: {c:?}")),
            Some(_) => {}
        }
    }
    bad
}

fn count_ops(g: &Graph, name: &str) -> usize {
    g.nodes().filter(|(_, n)| n.op.name() == name).count()
}

/// `permute` nodes whose operand is a weight.
fn permuted_weights(g: &Graph) -> usize {
    g.nodes()
        .filter(|(_, n)| matches!(n.op, Op::Permute { .. }) && matches!(g.value(n.inputs[0]).def, ValueDef::Weight(_)))
        .count()
}

#[test]
fn optimized_fixtures_match_the_interpreter() {
    let mut bad = Vec::new();
    let mut table = vec![format!(
        "{:<22} {:>6} {:>6} {:>8} {:>8} {:>10} {:>10}",
        "fixture", "nodes", "opt", "weights", "opt", "bytes", "opt"
    )];
    for m in MODELS {
        for f in FORMS {
            let archive = format!("{m}.t215.{f}.pt2");
            let model = kiln_frontend::load(&fixture(&archive)).unwrap_or_else(|e| panic!("{archive}: {e}"));
            let (g, w) = (&model.graph, &model.weights);
            let (opt, opt_w, report) = optimize(g, w, &Options::default()).unwrap_or_else(|e| panic!("{archive}: {e}"));
            kiln_ir::verify::verify(&opt).unwrap();
            table.push(format!(
                "{archive:<22} {:>6} {:>6} {:>8} {:>8} {:>10} {:>10}",
                g.node_count(),
                opt.node_count(),
                g.weights().len(),
                opt.weights().len(),
                w.total_bytes(),
                opt_w.total_bytes()
            ));
            assert!(opt.node_count() <= g.node_count(), "{archive}: more nodes after optimizing\n{report}");

            // Deterministic: a second run prints the same bytes.
            let (again, again_w, _) = optimize(g, w, &Options::default()).unwrap();
            assert_eq!(kiln_ir::text::print(&again), kiln_ir::text::print(&opt), "{archive}: not deterministic");
            assert_eq!(again_w, opt_w, "{archive}: weights not deterministic");

            for set in ["", "2"] {
                let Some(given) = arrays(&format!("{m}.t215.in{set}.npz")) else { continue };
                let what = format!("{archive} (in{set})");
                let want = run(g, w, &inputs_for(g, &given));
                let got = run(&opt, &opt_w, &inputs_for(&opt, &given));
                bad.extend(mismatches(&what, &got, &want, 1e-5, 1e-6));
                if let Some(torch) = arrays(&format!("{m}.t215.out{set}.npz")) {
                    let torch: Vec<Tensor> = torch.into_iter().map(|(_, t)| t).collect();
                    bad.extend(mismatches(&format!("{what} vs PyTorch"), &got, &torch, 1e-4, 1e-5));
                }
            }

            match *m {
                "resblock" => {
                    // Batch-norm parameter arithmetic is folded: fewer nodes, no rsqrt left.
                    assert!(opt.node_count() < g.node_count(), "{archive}");
                    assert!(count_ops(g, "rsqrt") > 0 && count_ops(&opt, "rsqrt") == 0, "{archive}");
                }
                "mlp" => {
                    assert!(permuted_weights(g) > 0, "{archive}: the fixture has transposed linear weights");
                    assert_eq!(permuted_weights(&opt), 0, "{archive}: a weight is still permuted at run time");
                }
                _ => {}
            }
            assert_eq!(permuted_weights(&opt), 0, "{archive}: a weight is still permuted at run time");
        }
    }
    println!("{}", table.join("\n"));
    assert!(bad.is_empty(), "mismatches:\n{}", bad.join("\n"));
}
