//! The fixture zoo (`tests/fixtures/`, made by `examples/export_models.py`): every model, in
//! both IR forms (default export and core ATen) and from both PyTorch releases (2.11: schema
//! 8.17, 2.15: schema 8.20), must load, verify, round-trip through the text form and reproduce
//! PyTorch's outputs in the reference interpreter. The IR text of each model is snapshotted.

use kiln_ir::{npz, tensor::compare, Tensor};
use std::path::PathBuf;

const MODELS: &[&str] = &["mlp", "resblock", "encoder", "gpt", "mobile", "dynbatch", "views", "dynseq"];
/// Models exported with dynamic dims, with a second input set of other sizes.
const DYNAMIC: &[&str] = &["dynbatch", "dynseq"];
const VERSIONS: &[&str] = &["t211", "t215"];
const FORMS: &[&str] = &["aten", "core"];
const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn arrays(name: &str) -> Vec<(String, Tensor)> {
    npz::read_npz(&fixture(name)).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs one archive on one input set and returns a description of every mismatch.
fn mismatches(archive: &str, inputs: &str, outputs: &str) -> Vec<String> {
    let model = match kiln_frontend::load(&fixture(archive)) {
        Ok(m) => m,
        Err(e) => return vec![format!("{archive}: {e}")],
    };
    let g = &model.graph;
    let given = arrays(inputs);
    let ins: Vec<Tensor> = g
        .inputs()
        .iter()
        .map(|&v| given.iter().find(|(k, _)| *k == g.value(v).name).map(|(_, t)| t.clone()).expect("input by name"))
        .collect();
    let got = match kiln_ir::interp::run(g, &model.weights, &ins) {
        Ok(o) => o,
        Err(e) => return vec![format!("{archive}: {e}")],
    };
    let want = arrays(outputs);
    assert_eq!(got.len(), want.len(), "{archive}: output count");
    let mut bad = Vec::new();
    for (i, (g, (_, w))) in got.iter().zip(&want).enumerate() {
        match compare(g, w, RTOL, ATOL) {
            None => bad.push(format!("{archive} output {i}: shape {:?} vs {:?}", g.shape, w.shape)),
            Some(c) if c.bad > 0 => bad.push(format!("{archive} output {i}: {c:?}")),
            Some(_) => {}
        }
    }
    bad
}

#[test]
fn interpreter_reproduces_pytorch_on_every_fixture() {
    let mut bad = Vec::new();
    let mut runs = 0;
    for m in MODELS {
        for v in VERSIONS {
            for f in FORMS {
                bad.extend(mismatches(&format!("{m}.{v}.{f}.pt2"), &format!("{m}.{v}.in.npz"), &format!("{m}.{v}.out.npz")));
                runs += 1;
            }
        }
    }
    assert_eq!(runs, MODELS.len() * VERSIONS.len() * FORMS.len());
    assert!(bad.is_empty(), "mismatches:\n{}", bad.join("\n"));
}

#[test]
fn dynamic_models_run_at_both_sizes_from_one_archive() {
    for m in DYNAMIC {
        for v in VERSIONS {
            for f in FORMS {
                let archive = format!("{m}.{v}.{f}.pt2");
                let first = arrays(&format!("{m}.{v}.in.npz"));
                let second = arrays(&format!("{m}.{v}.in2.npz"));
                assert_ne!(first[0].1.shape, second[0].1.shape, "the two input sets must differ in size");
                let mut bad = mismatches(&archive, &format!("{m}.{v}.in.npz"), &format!("{m}.{v}.out.npz"));
                bad.extend(mismatches(&archive, &format!("{m}.{v}.in2.npz"), &format!("{m}.{v}.out2.npz")));
                assert!(bad.is_empty(), "{}", bad.join("\n"));
                let g = kiln_frontend::load(&fixture(&archive)).unwrap().graph;
                assert!(!g.symbols.is_empty(), "{archive}: expected symbolic dims");
                for (_, sym) in g.symbols.iter() {
                    assert_eq!(sym.max, Some(64), "{archive}: range of {} from range_constraints", sym.name);
                    assert!(sym.min >= 1);
                }
            }
        }
    }
}

#[test]
fn both_schema_versions_are_read() {
    let old = kiln_frontend::load(&fixture("mlp.t211.aten.pt2")).unwrap();
    let new = kiln_frontend::load(&fixture("mlp.t215.aten.pt2")).unwrap();
    assert_eq!(old.info.schema, (8, 17));
    assert_eq!(new.info.schema, (8, 20));
}

#[test]
fn every_fixture_round_trips_through_the_text_form() {
    for m in MODELS {
        for v in VERSIONS {
            for f in FORMS {
                let g = kiln_frontend::load(&fixture(&format!("{m}.{v}.{f}.pt2"))).unwrap().graph;
                let text = kiln_ir::text::print(&g);
                let back = kiln_ir::text::parse(&text).unwrap_or_else(|e| panic!("{m}.{v}.{f}: {e}\n{text}"));
                assert_eq!(kiln_ir::text::print(&back), text, "{m}.{v}.{f}: print(parse(print(g))) differs");
                assert_eq!(back.node_count(), g.node_count());
            }
        }
    }
}

#[test]
fn ir_text_snapshots() {
    for m in MODELS {
        for f in FORMS {
            let g = kiln_frontend::load(&fixture(&format!("{m}.t215.{f}.pt2"))).unwrap().graph;
            insta::assert_snapshot!(format!("{m}.{f}"), kiln_ir::text::print(&g));
        }
    }
}

#[test]
fn docs_ops_md_matches_the_op_table() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/ops.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == kiln_frontend::lower::ops_markdown(),
        "docs/ops.md is stale: regenerate it with `cargo run -- ops --markdown > docs/ops.md`"
    );
}
