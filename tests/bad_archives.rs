//! Malformed `.pt2` archives: each class of damage gives its own typed [`FrontendError`] with a
//! message that names the offending thing, and nothing panics (design convention 10: "no panic
//! on any user input"). The archives are built here from the real fixtures by rewriting their
//! zip entries in memory.

use kiln_frontend::{FrontendError, Model, Pt2};
use serde_json::{json, Value};
use std::io::{Cursor, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

const MLP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mlp.t215.aten.pt2");
const MLP_CORE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mlp.t215.core.pt2");
const MLP_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mlp.t215.in.npz");
const MLP_OUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mlp.t215.out.npz");
const GPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt.t215.aten.pt2");

// ---------------------------------------------------------------------------------------------
// Helpers: read a fixture's entries, edit them, write a new zip.
// ---------------------------------------------------------------------------------------------

mod common;
use common::{entries_of, write_zip, write_zip_with, Entries};

fn fixture(path: &str) -> Vec<u8> {
    common::read_fixture(path)
}

fn mlp_entries() -> Entries {
    entries_of(&fixture(MLP))
}

/// The entry whose name ends with `suffix` (names carry the archive's top-level folder).
fn entry_mut<'a>(entries: &'a mut Entries, suffix: &str) -> &'a mut Vec<u8> {
    let names: Vec<String> = entries.iter().map(|(n, _)| n.clone()).collect();
    &mut entries.iter_mut().find(|(n, _)| n.ends_with(suffix)).unwrap_or_else(|| panic!("no entry `{suffix}` in {names:?}")).1
}

fn remove_entry(entries: &mut Entries, suffix: &str) {
    let before = entries.len();
    entries.retain(|(n, _)| !n.ends_with(suffix));
    assert_eq!(entries.len(), before - 1, "expected exactly one entry ending with `{suffix}`");
}

fn edit_json(entries: &mut Entries, suffix: &str, f: impl FnOnce(&mut Value)) {
    let data = entry_mut(entries, suffix);
    let mut doc: Value = serde_json::from_slice(data).unwrap();
    f(&mut doc);
    *data = serde_json::to_vec(&doc).unwrap();
}

const MODEL_JSON: &str = "models/model.json";
const WEIGHTS_CONFIG: &str = "data/weights/model_weights_config.json";

/// The mlp fixture with one JSON entry edited.
fn mlp_with_json(suffix: &str, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut e = mlp_entries();
    edit_json(&mut e, suffix, f);
    write_zip(&e)
}

fn open(bytes: Vec<u8>) -> Result<Pt2<Cursor<Vec<u8>>>, FrontendError> {
    Pt2::new(Cursor::new(bytes))
}

fn load(bytes: Vec<u8>) -> Result<Model, FrontendError> {
    open(bytes)?.lower()
}

/// Loads, turning a panic into a test failure that says which case panicked.
fn load_no_panic(bytes: Vec<u8>, what: &str) -> Result<Model, FrontendError> {
    match catch_unwind(AssertUnwindSafe(|| load(bytes))) {
        Ok(r) => r,
        Err(_) => panic!("the frontend panicked on {what}"),
    }
}

fn expect_err(r: Result<Model, FrontendError>, what: &str) -> FrontendError {
    match r {
        Ok(_) => panic!("{what}: loaded without error"),
        Err(e) => e,
    }
}

fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("kiln-bad-archives-{}-{n}-{tag}", std::process::id()))
}

/// A temp file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> TempFile {
        let p = temp_path(tag);
        std::fs::write(&p, bytes).unwrap();
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// 1. Not a zip at all.
// ---------------------------------------------------------------------------------------------

#[test]
fn not_a_zip_is_a_zip_error() {
    // Deterministic "random" bytes (xorshift), plus a few recognizable non-zips.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("empty file", Vec::new()),
        ("one byte", vec![0x50]),
        ("text", b"this is not a model\n".to_vec()),
        ("a bare zip signature", b"PK\x03\x04".to_vec()),
        ("JSON", br#"{"schema_version": {"major": 8}}"#.to_vec()),
    ];
    for (what, bytes) in cases {
        let err = match open(bytes) {
            Ok(_) => panic!("{what}: opened as an archive"),
            Err(e) => e,
        };
        assert!(matches!(err, FrontendError::Zip(_)), "{what}: expected Zip, got {err:?}");
        let msg = err.to_string();
        assert!(msg.contains("not a valid .pt2 archive"), "{what}: unclear message: {msg}");
    }
}

#[test]
fn empty_file_on_disk_is_a_zip_error() {
    let f = TempFile::new("empty.pt2", &[]);
    let err = expect_err(kiln_frontend::load(&f.0), "empty file");
    assert!(matches!(err, FrontendError::Zip(_)), "got {err:?}");
}

#[test]
fn a_zip_without_model_json_is_missing_entry() {
    let bytes = write_zip(&vec![("hello.txt".to_string(), b"hi".to_vec())]);
    let err = expect_err(load(bytes), "unrelated zip");
    assert!(matches!(err, FrontendError::MissingEntry(ref e) if e.contains("models/model.json")), "got {err:?}");
    assert!(err.to_string().contains("torch.export.save"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 2. Truncated archives.
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_archives_error_without_panicking() {
    for path in [MLP, MLP_CORE] {
        let full = fixture(path);
        let n = full.len();
        let mut cuts: Vec<usize> = vec![0, 1, 4, 22, 30, 100, n / 4, n / 3, n / 2, 2 * n / 3, n - 100, n - 22, n - 21, n - 2, n - 1];
        cuts.extend((0..n).step_by(1009));
        for cut in cuts {
            let what = format!("{path} cut to {cut} of {n} bytes");
            let err = expect_err(load_no_panic(full[..cut].to_vec(), &what), &what);
            assert!(
                matches!(err, FrontendError::Zip(_) | FrontendError::CorruptEntry { .. } | FrontendError::MissingEntry(_)),
                "{what}: got {err:?}"
            );
        }
        // Cut in half: the central directory is gone, so it is not a zip any more.
        let err = expect_err(load(full[..n / 2].to_vec()), "half");
        assert!(matches!(err, FrontendError::Zip(_)), "got {err:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Corrupted bytes inside entries.
// ---------------------------------------------------------------------------------------------

#[test]
fn flipped_byte_in_model_json_is_corrupt_entry() {
    let mut bytes = fixture(MLP);
    // The fixture stores entries uncompressed, so the JSON text is visible in the file.
    let at = find_bytes(&bytes, b"\"graph_module\"").expect("model.json is stored") + 3;
    bytes[at] ^= 0x20;
    let err = expect_err(load(bytes), "flipped model.json byte");
    assert!(matches!(err, FrontendError::CorruptEntry { ref entry, .. } if entry.ends_with(MODEL_JSON)), "got {err:?}");
    let msg = err.to_string();
    assert!(msg.contains("models/model.json") && msg.contains("corrupt"), "{msg}");
}

#[test]
fn flipped_byte_in_a_weight_is_corrupt_entry() {
    let entries = mlp_entries();
    let weight = entries.iter().find(|(n, _)| n.ends_with("data/weights/weight_0")).unwrap().1.clone();
    let mut bytes = fixture(MLP);
    let at = find_bytes(&bytes, &weight[..64]).expect("weight_0 is stored") + 100;
    bytes[at] ^= 0x01;
    // Opening reads only JSON; the weight is read (and its CRC checked) when lowering.
    let err = expect_err(load(bytes), "flipped weight byte");
    assert!(matches!(err, FrontendError::CorruptEntry { ref entry, .. } if entry.ends_with("data/weights/weight_0")), "got {err:?}");
    assert!(err.to_string().contains("weight_0"), "{err}");
}

#[test]
fn flipping_any_byte_never_panics() {
    let stored = fixture(MLP);
    let deflated = write_zip_with(&mlp_entries(), CompressionMethod::Deflated);
    for (kind, bytes) in [("stored", &stored), ("deflated", &deflated)] {
        let mut errors = 0;
        let mut offsets: Vec<usize> = (0..bytes.len()).step_by(97).collect();
        offsets.extend((bytes.len().saturating_sub(200)..bytes.len()).step_by(3)); // the central directory
        for &i in &offsets {
            for mask in [0x01u8, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                let what = format!("{kind} mlp with byte {i} ^ {mask:#x}");
                if load_no_panic(b, &what).is_err() {
                    errors += 1;
                }
            }
        }
        // Most flips land in CRC-checked data that is read; some hit unread entries or ignored
        // header fields and are harmless.
        assert!(errors > offsets.len() / 2, "{kind}: only {errors} of {} flips were noticed", 2 * offsets.len());
    }
}

#[test]
fn flipping_bytes_in_a_larger_model_never_panics() {
    let bytes = fixture(GPT);
    for i in (0..bytes.len()).step_by(997) {
        let mut b = bytes.clone();
        b[i] = b[i].wrapping_add(0x5a);
        let _ = load_no_panic(b, &format!("gpt with byte {i} changed"));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Missing entries.
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_model_json_is_missing_entry() {
    let mut e = mlp_entries();
    remove_entry(&mut e, MODEL_JSON);
    let err = expect_err(load(write_zip(&e)), "no model.json");
    assert!(matches!(err, FrontendError::MissingEntry(ref m) if m.contains("models/model.json")), "got {err:?}");
    assert!(err.to_string().contains("models/model.json"), "{err}");
}

#[test]
fn missing_weight_file_is_missing_entry() {
    let mut e = mlp_entries();
    remove_entry(&mut e, "data/weights/weight_2");
    let bytes = write_zip(&e);
    // The configs still name it; only reading the weight notices.
    let err = expect_err(load(bytes), "no weight_2");
    assert!(matches!(err, FrontendError::MissingEntry(ref m) if m.ends_with("data/weights/weight_2")), "got {err:?}");
    assert!(err.to_string().contains("data/weights/weight_2"), "{err}");
}

#[test]
fn missing_constant_file_is_missing_entry() {
    let mut e = mlp_entries();
    remove_entry(&mut e, "data/constants/tensor_0");
    let err = expect_err(load(write_zip(&e)), "no tensor_0");
    assert!(matches!(err, FrontendError::MissingEntry(ref m) if m.ends_with("data/constants/tensor_0")), "got {err:?}");
}

#[test]
fn missing_weights_config_is_missing_entry_naming_the_weight() {
    let mut e = mlp_entries();
    remove_entry(&mut e, WEIGHTS_CONFIG);
    let err = expect_err(load(write_zip(&e)), "no weights config");
    assert!(matches!(err, FrontendError::MissingEntry(ref m) if m.contains("fc1.weight")), "got {err:?}");
}

// ---------------------------------------------------------------------------------------------
// 5. Malformed JSON and wrong structure.
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_model_json_is_json_error() {
    let mut e = mlp_entries();
    let data = entry_mut(&mut e, MODEL_JSON);
    data.truncate(data.len() / 2);
    let err = expect_err(load(write_zip(&e)), "truncated JSON");
    assert!(matches!(err, FrontendError::Json { ref entry, .. } if entry.ends_with(MODEL_JSON)), "got {err:?}");
    let msg = err.to_string();
    assert!(msg.contains("models/model.json") && msg.contains("not valid JSON"), "{msg}");
}

#[test]
fn non_json_weights_config_is_json_error() {
    let mut e = mlp_entries();
    *entry_mut(&mut e, WEIGHTS_CONFIG) = b"\xff\xfe not json".to_vec();
    let err = match open(write_zip(&e)) {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    };
    assert!(matches!(err, FrontendError::Json { ref entry, .. } if entry.ends_with(WEIGHTS_CONFIG)), "got {err:?}");
}

fn schema_err(bytes: Vec<u8>, what: &str) -> (String, String) {
    let err = expect_err(load_no_panic(bytes, what), what);
    let msg = err.to_string();
    match err {
        FrontendError::Schema { path, reason, .. } => {
            assert!(msg.contains(&path), "{what}: message does not give the path: {msg}");
            (path, reason)
        }
        other => panic!("{what}: expected Schema, got {other:?}"),
    }
}

#[test]
fn wrong_json_structure_is_schema_error_with_path() {
    let (path, reason) = schema_err(mlp_with_json(MODEL_JSON, |d| *d = json!({})), "empty object");
    assert_eq!(path, "$");
    assert!(reason.contains("schema_version"), "{reason}");

    let (path, _) = schema_err(mlp_with_json(MODEL_JSON, |d| *d = json!([1, 2, 3])), "array document");
    assert_eq!(path, "$");

    let (path, reason) = schema_err(mlp_with_json(MODEL_JSON, |d| d["graph_module"]["graph"]["nodes"] = json!(42)), "nodes not an array");
    assert_eq!(path, "$.graph_module.graph.nodes");
    assert!(reason.contains("array"), "{reason}");

    let (path, _) = schema_err(mlp_with_json(MODEL_JSON, |d| d["graph_module"]["graph"]["nodes"][2]["target"] = json!(5)), "target not a string");
    assert_eq!(path, "$.graph_module.graph.nodes[2].target");

    let (path, reason) = schema_err(
        mlp_with_json(MODEL_JSON, |d| {
            d["graph_module"].as_object_mut().unwrap().remove("signature");
        }),
        "no signature",
    );
    assert_eq!(path, "$.graph_module");
    assert!(reason.contains("signature"), "{reason}");

    let (path, _) = schema_err(mlp_with_json(MODEL_JSON, |d| d["graph_module"]["graph"]["tensor_values"]["x"]["sizes"] = json!("big")), "sizes a string");
    assert_eq!(path, "$.graph_module.graph.tensor_values.x.sizes");

    let (path, _) = schema_err(
        mlp_with_json(MODEL_JSON, |d| d["graph_module"]["graph"]["nodes"][0]["inputs"][0]["arg"] = json!({"as_tensor": {}, "as_int": 1})),
        "arg with two kinds",
    );
    assert_eq!(path, "$.graph_module.graph.nodes[0].inputs[0].arg");

    let (path, _) = schema_err(mlp_with_json(WEIGHTS_CONFIG, |d| d["config"] = json!([])), "weights config not an object");
    assert_eq!(path, "$.config");
}

#[test]
fn arbitrary_json_shapes_never_panic() {
    // Replace each top-level part of the document by values of every JSON type.
    let keys = ["schema_version", "graph_module", "range_constraints", "torch_version"];
    let values = [json!(null), json!(0), json!(-1), json!(1e300), json!("x"), json!([]), json!([{}]), json!({}), json!({"a": {}})];
    for key in keys {
        for v in &values {
            let bytes = mlp_with_json(MODEL_JSON, |d| d[key] = v.clone());
            let _ = load_no_panic(bytes, &format!("{key} = {v}"));
        }
    }
    for node in 0..4 {
        for field in ["target", "inputs", "outputs", "metadata", "name"] {
            for v in &values {
                let bytes = mlp_with_json(MODEL_JSON, |d| d["graph_module"]["graph"]["nodes"][node][field] = v.clone());
                let _ = load_no_panic(bytes, &format!("node {node} {field} = {v}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Weight bytes that don't match dtype x shape.
// ---------------------------------------------------------------------------------------------

#[test]
fn short_weight_file_is_weight_error_with_byte_counts() {
    for keep in [1000usize, 0, 2047] {
        let mut e = mlp_entries();
        entry_mut(&mut e, "data/weights/weight_0").truncate(keep);
        let err = expect_err(load(write_zip(&e)), "short weight_0");
        assert!(matches!(err, FrontendError::Weight { ref name, .. } if name == "fc1.weight"), "got {err:?}");
        let msg = err.to_string();
        // fc1.weight is f32[32, 16]: 2048 bytes.
        for part in ["fc1.weight", &keep.to_string(), "2048", "weight_0"] {
            assert!(msg.contains(part), "message does not mention `{part}`: {msg}");
        }
    }
}

#[test]
fn longer_weight_file_is_accepted() {
    // A weight may be a view into a larger storage: extra bytes after the tensor are fine.
    let mut e = mlp_entries();
    entry_mut(&mut e, "data/weights/weight_0").extend_from_slice(&[0u8; 4096]);
    let model = load(write_zip(&e)).expect("extra storage bytes are allowed");
    let reference = kiln_frontend::load(Path::new(MLP)).unwrap();
    let all = |m: &Model| m.weights.iter().map(|(n, t)| (n.to_string(), t.dtype, t.shape.clone(), t.bytes.clone())).collect::<Vec<_>>();
    assert_eq!(all(&model), all(&reference));
}

#[test]
fn weight_shape_disagreeing_with_graph_is_weight_error() {
    let bytes = mlp_with_json(WEIGHTS_CONFIG, |d| {
        d["config"]["fc1.weight"]["tensor_meta"]["sizes"] = json!([{"as_int": 16}, {"as_int": 32}]);
        d["config"]["fc1.weight"]["tensor_meta"]["strides"] = json!([{"as_int": 32}, {"as_int": 1}]);
    });
    let err = expect_err(load(bytes), "transposed weight meta");
    assert!(matches!(err, FrontendError::Weight { ref name, .. } if name == "fc1.weight"), "got {err:?}");
    let msg = err.to_string();
    assert!(msg.contains("[16, 32]") && msg.contains("32, 16"), "{msg}");
}

#[test]
fn negative_or_overflowing_weight_layout_is_weight_error() {
    let cases = [
        ("negative size", json!([{"as_int": -32}, {"as_int": 16}]), json!([{"as_int": 16}, {"as_int": 1}]), json!({"as_int": 0})),
        ("negative stride", json!([{"as_int": 32}, {"as_int": 16}]), json!([{"as_int": -16}, {"as_int": 1}]), json!({"as_int": 0})),
        ("negative offset", json!([{"as_int": 32}, {"as_int": 16}]), json!([{"as_int": 16}, {"as_int": 1}]), json!({"as_int": -1})),
        ("stride overflow", json!([{"as_int": 32}, {"as_int": 16}]), json!([{"as_int": i64::MAX}, {"as_int": 1}]), json!({"as_int": 0})),
        ("offset past the file", json!([{"as_int": 32}, {"as_int": 16}]), json!([{"as_int": 16}, {"as_int": 1}]), json!({"as_int": 1})),
        ("numel overflow", json!([{"as_int": i64::MAX}, {"as_int": i64::MAX}]), json!([{"as_int": 1}, {"as_int": 1}]), json!({"as_int": 0})),
    ];
    for (what, sizes, strides, offset) in cases {
        let bytes = mlp_with_json(WEIGHTS_CONFIG, |d| {
            let m = &mut d["config"]["fc1.weight"]["tensor_meta"];
            m["sizes"] = sizes;
            m["strides"] = strides;
            m["storage_offset"] = offset;
        });
        let err = expect_err(load_no_panic(bytes, what), what);
        assert!(
            matches!(err, FrontendError::Weight { ref name, .. } if name == "fc1.weight") || matches!(err, FrontendError::TooLarge { .. }),
            "{what}: got {err:?}"
        );
    }
}

#[test]
fn empty_weight_with_offset_past_the_storage_does_not_panic() {
    // Zero elements need zero bytes, wherever the (empty) view starts.
    let bytes = mlp_with_json(WEIGHTS_CONFIG, |d| {
        let m = &mut d["config"]["fc1.weight"]["tensor_meta"];
        m["sizes"] = json!([{"as_int": 0}, {"as_int": 16}]);
        m["storage_offset"] = json!({"as_int": 100000});
    });
    let err = expect_err(load_no_panic(bytes, "empty view"), "empty view");
    // The graph still declares f32[32, 16], so this is a disagreement, not a crash.
    assert!(matches!(err, FrontendError::Weight { ref name, .. } if name == "fc1.weight"), "got {err:?}");
}

// ---------------------------------------------------------------------------------------------
// 7. Unknown and unsupported dtypes.
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_dtype_code_is_unknown_dtype() {
    let bytes = mlp_with_json(MODEL_JSON, |d| d["graph_module"]["graph"]["tensor_values"]["x"]["dtype"] = json!(99));
    let err = expect_err(load(bytes), "dtype 99");
    assert!(matches!(err, FrontendError::UnknownDType { ref name, code: 99 } if name == "x"), "got {err:?}");
    let msg = err.to_string();
    assert!(msg.contains("99") && msg.contains("`x`"), "{msg}");

    let bytes = mlp_with_json(WEIGHTS_CONFIG, |d| d["config"]["fc2.bias"]["tensor_meta"]["dtype"] = json!(-3));
    let err = expect_err(load(bytes), "weight dtype -3");
    assert!(matches!(err, FrontendError::UnknownDType { ref name, code: -3 } if name == "fc2.bias"), "got {err:?}");
}

#[test]
fn complex_dtype_is_unsupported_dtype() {
    let bytes = mlp_with_json(MODEL_JSON, |d| d["graph_module"]["graph"]["tensor_values"]["relu"]["dtype"] = json!(10));
    let err = expect_err(load(bytes), "complex");
    assert!(matches!(err, FrontendError::UnsupportedDType { ref name, ref dtype } if name == "relu" && dtype == "complex"), "got {err:?}");
    let msg = err.to_string();
    assert!(msg.contains("complex") && msg.contains("relu") && msg.contains("not supported"), "{msg}");

    let bytes = mlp_with_json(WEIGHTS_CONFIG, |d| d["config"]["fc1.weight"]["tensor_meta"]["dtype"] = json!(30));
    let err = expect_err(load(bytes), "float8 weight");
    assert!(matches!(err, FrontendError::UnsupportedDType { ref name, ref dtype } if name == "fc1.weight" && dtype == "float8"), "got {err:?}");
}

// ---------------------------------------------------------------------------------------------
// 8. Paths that escape the archive.
// ---------------------------------------------------------------------------------------------

#[test]
fn entry_paths_escaping_the_archive_are_unsafe() {
    for evil in ["../evil", "/abs/path", "mlp.t215.aten/../../evil", "a/b/../../../evil", "..\\evil", "C:/windows/evil"] {
        let mut e = mlp_entries();
        e.push((evil.to_string(), b"gotcha".to_vec()));
        let err = expect_err(load(write_zip(&e)), evil);
        assert!(matches!(err, FrontendError::UnsafePath { ref entry } if entry == evil), "{evil}: got {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(evil) && msg.contains("unsafe path"), "{msg}");
    }
}

#[test]
fn weights_config_path_escaping_the_archive_is_unsafe() {
    for evil in ["../../etc/passwd", "/etc/passwd", "sub/weight_0", ".."] {
        let bytes = mlp_with_json(WEIGHTS_CONFIG, |d| d["config"]["fc1.weight"]["path_name"] = json!(evil));
        let err = expect_err(load(bytes), evil);
        assert!(matches!(err, FrontendError::UnsafePath { ref entry } if entry == evil), "{evil}: got {err:?}");
        assert!(err.to_string().contains(evil), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Absurd sizes and zip bombs.
// ---------------------------------------------------------------------------------------------

#[test]
fn absurd_weight_sizes_fail_fast_without_allocating() {
    let start = std::time::Instant::now();
    for sizes in [vec![1_000_000_000i64, 1_000_000_000], vec![1 << 40], vec![10_000_000_000, 10_000_000_000, 10_000_000_000]] {
        let strides: Vec<i64> = (0..sizes.len()).map(|i| sizes[i + 1..].iter().fold(1i64, |a, &b| a.saturating_mul(b))).collect();
        let bytes = mlp_with_json(WEIGHTS_CONFIG, |d| {
            let m = &mut d["config"]["fc1.weight"]["tensor_meta"];
            m["sizes"] = sizes.iter().map(|&s| json!({"as_int": s})).collect();
            m["strides"] = strides.iter().map(|&s| json!({"as_int": s})).collect();
        });
        let what = format!("sizes {sizes:?}");
        let err = expect_err(load_no_panic(bytes.clone(), &what), &what);
        assert!(
            matches!(err, FrontendError::TooLarge { .. }) || matches!(err, FrontendError::Weight { ref name, .. } if name == "fc1.weight"),
            "{what}: got {err:?}"
        );
        // `inspect` sums the weight sizes; absurd ones must not overflow there either.
        let summary = catch_unwind(AssertUnwindSafe(|| open(bytes).and_then(|mut p| p.summary())));
        assert!(summary.is_ok(), "{what}: summary() panicked");
    }
    assert!(start.elapsed().as_secs() < 20, "absurd sizes took {:?}", start.elapsed());
}

#[test]
fn absurd_input_sizes_do_not_panic() {
    for sizes in [json!([{"as_int": 1_000_000_000_000i64}, {"as_int": 1_000_000_000_000i64}]), json!([{"as_int": -5}, {"as_int": 16}])] {
        let bytes = mlp_with_json(MODEL_JSON, |d| d["graph_module"]["graph"]["tensor_values"]["x"]["sizes"] = sizes.clone());
        let _ = load_no_panic(bytes, &format!("x sizes {sizes}"));
    }
}

/// Peak resident memory of this process, in bytes (Linux only).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn deflate_bomb_weight_does_not_blow_memory() {
    // 256 MiB of zeros deflate to a few hundred KiB; named as fc1.weight's file (2048 bytes).
    const BOMB: usize = 256 << 20;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated).compression_level(Some(1));
    for (name, data) in mlp_entries() {
        if name.ends_with("data/weights/weight_0") {
            w.start_file(name.as_str(), deflated).unwrap();
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..BOMB >> 20 {
                w.write_all(&chunk).unwrap();
            }
        } else {
            w.start_file(name.as_str(), stored).unwrap();
            w.write_all(&data).unwrap();
        }
    }
    let bytes = w.finish().unwrap().into_inner();
    assert!(bytes.len() < 4 << 20, "bomb is {} bytes", bytes.len());

    let start = std::time::Instant::now();
    match load_no_panic(bytes, "deflate bomb") {
        // The storage is larger than the tensor (allowed: views), the tensor is its first 2048 bytes.
        Ok(model) => {
            let w = model.weights.get("fc1.weight").expect("fc1.weight loaded");
            assert_eq!(w.bytes.len(), 2048);
            assert!(w.bytes.iter().all(|&b| b == 0));
        }
        Err(err) => assert!(matches!(err, FrontendError::Weight { .. } | FrontendError::TooLarge { .. }), "got {err:?}"),
    }
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
    if let Some(peak) = peak_rss() {
        // Other tests share this process, but none comes near this.
        assert!(peak < (BOMB as u64) * 3 / 4, "peak RSS {peak} bytes: the bomb was inflated into memory");
    }
}

/// Sets the uncompressed size of `entry` in both its local and central headers.
fn patch_uncompressed_size(bytes: &mut [u8], entry_suffix: &str, size: u32) {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes.to_vec())).unwrap();
    let name = zip.file_names().find(|n| n.ends_with(entry_suffix)).unwrap().to_string();
    let f = zip.by_name(&name).unwrap();
    let (local, central) = (f.header_start() as usize, f.central_header_start() as usize);
    drop(f);
    assert_eq!(&bytes[local..local + 4], b"PK\x03\x04");
    assert_eq!(&bytes[central..central + 4], b"PK\x01\x02");
    bytes[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
    bytes[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
}

#[test]
fn lying_entry_sizes_are_errors() {
    // Claims ~4 GiB but holds 2048 bytes: must not trust the header for allocation.
    let mut bytes = fixture(MLP);
    patch_uncompressed_size(&mut bytes, "data/weights/weight_0", 0xFFFF_FFF0);
    let err = expect_err(load_no_panic(bytes, "weight claiming 4 GiB"), "weight claiming 4 GiB");
    assert!(matches!(err, FrontendError::CorruptEntry { ref entry, .. } if entry.ends_with("weight_0")), "got {err:?}");
    assert!(err.to_string().contains("4294967280"), "{err}");

    // Claims fewer bytes than it holds.
    let mut bytes = fixture(MLP);
    patch_uncompressed_size(&mut bytes, MODEL_JSON, 10);
    let err = expect_err(load_no_panic(bytes, "model.json claiming 10 bytes"), "short claim");
    assert!(matches!(err, FrontendError::CorruptEntry { ref entry, .. } if entry.ends_with(MODEL_JSON)), "got {err:?}");

    // Claims more than the JSON limit: refused before reading.
    let mut bytes = fixture(MLP);
    patch_uncompressed_size(&mut bytes, MODEL_JSON, 0xFFFF_FFF0);
    let err = expect_err(load_no_panic(bytes, "model.json claiming 4 GiB"), "huge claim");
    assert!(matches!(err, FrontendError::TooLarge { ref entry, size: 0xFFFF_FFF0, .. } if entry.ends_with(MODEL_JSON)), "got {err:?}");
    assert!(err.to_string().contains("too large"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 10. Schema versions.
// ---------------------------------------------------------------------------------------------

#[test]
fn other_schema_major_versions_are_schema_version_errors() {
    for major in [7, 9, 0, -1] {
        let bytes = mlp_with_json(MODEL_JSON, |d| d["schema_version"]["major"] = json!(major));
        let err = expect_err(load(bytes), "schema");
        assert!(matches!(err, FrontendError::SchemaVersion { found, supported: 8 } if found == major), "got {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("version {major}")) && msg.contains("kiln reads major version 8"), "{msg}");
    }
    let (path, _) = schema_err(mlp_with_json(MODEL_JSON, |d| d["schema_version"]["major"] = json!("8")), "major a string");
    assert_eq!(path, "$.schema_version.major");
}

// ---------------------------------------------------------------------------------------------
// 11. Unsupported ops: all reported at once, with their source lines.
// ---------------------------------------------------------------------------------------------

fn mlp_with_fake_ops() -> Vec<u8> {
    mlp_with_json(MODEL_JSON, |d| {
        for n in d["graph_module"]["graph"]["nodes"].as_array_mut().unwrap() {
            match n["name"].as_str() {
                Some("relu") => n["target"] = json!("torch.ops.aten.fancy_op.default"),
                Some("tanh") => n["target"] = json!("torch.ops.aten.other_fancy.default"),
                _ => {}
            }
        }
    })
}

#[test]
fn unsupported_ops_are_all_reported_with_sources() {
    let err = expect_err(load(mlp_with_fake_ops()), "fake ops");
    let FrontendError::Unsupported(ref list) = err else { panic!("expected Unsupported, got {err:?}") };
    assert_eq!(list.len(), 2, "{list:?}");
    let expect = [("torch.ops.aten.fancy_op.default", "relu"), ("torch.ops.aten.other_fancy.default", "tanh")];
    for (op, (target, node)) in list.iter().zip(expect) {
        assert_eq!(op.target, target);
        assert_eq!(op.node, node);
        let source = op.source.as_deref().unwrap_or_else(|| panic!("no source for {node}"));
        assert!(source.contains("export_models.py:"), "{source}");
    }
    let msg = err.to_string();
    assert!(msg.starts_with("2 unsupported op(s)"), "{msg}");
    for part in ["fancy_op", "other_fancy", "`relu`", "`tanh`", "export_models.py:68", "export_models.py:74"] {
        assert!(msg.contains(part), "message does not mention `{part}`: {msg}");
    }

    let summary = open(mlp_with_fake_ops()).unwrap().summary().expect("summary works despite unsupported ops");
    let targets: Vec<&str> = summary.unsupported.iter().map(|u| u.target.as_str()).collect();
    assert_eq!(targets, ["torch.ops.aten.fancy_op.default", "torch.ops.aten.other_fancy.default"]);
    assert_eq!(summary.op_histogram.get("torch.ops.aten.fancy_op.default"), Some(&1));
    assert_eq!(summary.inputs.len(), 1);
    assert_eq!(summary.outputs.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 12. The CLI: clean errors, exit codes, --check.
// ---------------------------------------------------------------------------------------------

fn kiln(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("runs kiln");
    let code = out.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_clean_failure(args: &[&str], mentions: &[&str]) {
    let (code, stdout, stderr) = kiln(args);
    assert_ne!(code, 0, "kiln {args:?} succeeded:\n{stdout}");
    assert!(stderr.starts_with("error:"), "kiln {args:?}: stderr does not start with `error:`:\n{stderr}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "kiln {args:?}: stderr mentions `{bad}`:\n{stderr}");
    }
    for m in mentions {
        assert!(stderr.contains(m), "kiln {args:?}: stderr does not mention `{m}`:\n{stderr}");
    }
}

#[test]
fn cli_reports_bad_archives_cleanly() {
    let mut corrupt = fixture(MLP);
    let at = find_bytes(&corrupt, b"\"graph_module\"").unwrap() + 3;
    corrupt[at] ^= 0x20;
    let corrupt = TempFile::new("corrupt.pt2", &corrupt);
    let truncated = TempFile::new("truncated.pt2", &fixture(MLP)[..5000]);
    let fake_ops = TempFile::new("fake-ops.pt2", &mlp_with_fake_ops());
    let c = corrupt.0.to_str().unwrap();
    let t = truncated.0.to_str().unwrap();
    let f = fake_ops.0.to_str().unwrap();
    let missing = "/nonexistent/kiln/model.pt2";

    for sub in [&["inspect"][..], &["inspect", "--json"], &["ir"], &["run"]] {
        fn with<'a>(sub: &[&'a str], p: &'a str) -> Vec<&'a str> {
            sub.iter().copied().chain([p]).collect()
        }
        let with = |p| with(sub, p);
        assert_clean_failure(&with(c), &["corrupt", "models/model.json"]);
        assert_clean_failure(&with(t), &["not a valid .pt2 archive"]);
        assert_clean_failure(&with(missing), &[missing]);
    }
    // Unsupported ops: `ir` and `run` fail listing both; `inspect` succeeds and lists them.
    for sub in ["ir", "run"] {
        assert_clean_failure(&[sub, f], &["2 unsupported op(s)", "fancy_op", "other_fancy", "export_models.py:"]);
    }
    let (code, stdout, stderr) = kiln(&["inspect", f]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("fancy_op") && stdout.contains("other_fancy"), "{stdout}");
}

#[test]
fn cli_run_check_passes_on_the_reference() {
    let (code, stdout, stderr) = kiln(&["run", "tests/fixtures/mlp.t215.aten.pt2", "--inputs", "tests/fixtures/mlp.t215.in.npz", "--check", "tests/fixtures/mlp.t215.out.npz"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
}

#[test]
fn cli_run_check_fails_on_perturbed_reference() {
    let mut arrays = kiln_ir::npz::read_npz(Path::new(MLP_OUT)).unwrap();
    let t = &mut arrays[0].1;
    let mut values = t.to_f64();
    values[0] += 1.0;
    *t = kiln_ir::Tensor::from_f64(t.dtype, t.shape.clone(), &values);
    let path = temp_path("perturbed.npz");
    kiln_ir::npz::write_npz(&path, &arrays).unwrap();
    let _cleanup = TempFile(path.clone());

    let (code, stdout, stderr) = kiln(&["run", MLP, "--inputs", MLP_IN, "--check", path.to_str().unwrap()]);
    assert_ne!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("MISMATCH") || stderr.contains("MISMATCH"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.starts_with("error:") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn cli_inspect_json_has_the_documented_keys() {
    for path in [MLP, GPT] {
        let (code, stdout, stderr) = kiln(&["inspect", "--json", path]);
        assert_eq!(code, 0, "{stderr}");
        let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
        for key in ["inputs", "outputs", "weights", "ops", "unsupported"] {
            assert!(doc.get(key).is_some(), "{path}: no `{key}` in {doc}");
        }
        assert!(doc["inputs"].as_array().is_some_and(|a| !a.is_empty()), "{doc}");
        assert!(doc["unsupported"].as_array().is_some_and(|a| a.is_empty()), "{doc}");
        assert!(doc["weights"]["count"].as_u64().is_some_and(|n| n > 0), "{doc}");
    }
}
