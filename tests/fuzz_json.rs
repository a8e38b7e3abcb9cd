//! Hostile-but-valid JSON: mutates numbers, strings and lists inside real fixtures' `model.json`
//! (sizes, op arguments, targets, dtype codes) and checks that reading and lowering the result
//! never panics; every outcome must be `Ok` or a typed `FrontendError`.

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;
use std::io::Cursor;

mod common;
use common::{entries_of as entries, write_zip as rezip};

fn fixture_bytes(name: &str) -> Vec<u8> {
    common::read_fixture(&common::fixture_path(name))
}

/// Paths (as JSON pointers) of every scalar and array in the document's graph.
fn leaves(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                leaves(x, format!("{path}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(a) => {
            out.push(path.clone());
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{path}/{i}"), out);
            }
        }
        _ => out.push(path),
    }
}

fn hostile(rng: &mut StdRng) -> Value {
    let choices = [
        Value::from(-1),
        Value::from(0),
        Value::from(1),
        Value::from(3),
        Value::from(-7),
        Value::from(1i64 << 31),
        Value::from(i64::MAX),
        Value::from(i64::MIN),
        Value::from(2.5),
        Value::from("Infinity"),
        Value::from("torch.ops.aten.view.default"),
        Value::from("torch.ops.aten.conv2d.default"),
        Value::from("torch.ops.aten.transpose.int"),
        Value::from("Symbol('s0', positive=True)"),
        Value::Null,
        Value::Bool(true),
        Value::Array(vec![]),
        Value::Array(vec![Value::from(-1), Value::from(0)]),
        serde_json::json!({"as_int": -5}),
        serde_json::json!({"as_ints": [0, 0, 0]}),
        serde_json::json!({"as_tensor": {"name": "nope"}}),
    ];
    choices[rng.gen_range(0..choices.len())].clone()
}

/// `KILN_FUZZ_SCALE=N` multiplies the iteration counts (for longer runs by hand).
fn fuzz(fixture: &str, iterations: usize, seed: u64) {
    let scale: usize = std::env::var("KILN_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let iterations = iterations * scale;
    let original = entries(&fixture_bytes(fixture));
    let (json_index, _) = original.iter().enumerate().find(|(_, (n, _))| n.ends_with("models/model.json")).unwrap();
    let doc: Value = serde_json::from_slice(&original[json_index].1).unwrap();
    let mut paths = Vec::new();
    leaves(&doc["graph_module"], "/graph_module".into(), &mut paths);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut outcomes = [0usize; 2];
    for _ in 0..iterations {
        let mut d = doc.clone();
        for _ in 0..rng.gen_range(1..4) {
            let p = &paths[rng.gen_range(0..paths.len())];
            if let Some(slot) = d.pointer_mut(p) {
                *slot = hostile(&mut rng);
            }
        }
        let mut files = original.clone();
        files[json_index].1 = serde_json::to_vec(&d).unwrap();
        let bytes = rezip(&files);
        let result = kiln_frontend::Pt2::new(Cursor::new(bytes)).and_then(|mut p| p.lower());
        outcomes[result.is_ok() as usize] += 1;
        if let Ok(model) = result {
            // Whatever lowered must also be a valid graph that prints and parses.
            let text = kiln_ir::text::print(&model.graph);
            kiln_ir::text::parse(&text).unwrap();
        }
    }
    assert!(outcomes[0] > 0, "mutations of {fixture} should produce some errors");
}

#[test]
fn mutated_mlp_never_panics() {
    fuzz("mlp.t215.aten.pt2", 400, 1);
}

#[test]
fn mutated_cnn_never_panics() {
    fuzz("resblock.t215.core.pt2", 300, 2);
}

#[test]
fn mutated_transformer_never_panics() {
    fuzz("gpt.t215.aten.pt2", 300, 3);
}

#[test]
fn mutated_dynamic_batch_never_panics() {
    fuzz("dynbatch.t211.core.pt2", 300, 4);
}
