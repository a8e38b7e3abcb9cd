//! `kiln bench`: `--json` prints one JSON object with the documented keys, for scripts; text
//! stays the default; `--profile` lists the time of every step of the plan. (Only the output's shape is checked; timings are never asserted.)

use std::path::PathBuf;
use std::process::Command;

fn kiln(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs kiln");
    assert!(out.status.success(), "kiln {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Compiles the mlp fixture, runs `kiln bench ARTIFACT <args>` and returns its output.
fn bench_mlp(tag: &str, args: &[&str]) -> (String, String) {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-cli-{}-{tag}.kiln", std::process::id()));
    let artifact = path.to_str().unwrap().to_string();
    kiln(&["compile", "tests/fixtures/mlp.t215.aten.pt2", "-o", &artifact]);
    let out = kiln(&[&["bench", artifact.as_str()], args].concat());
    let _ = std::fs::remove_file(&path);
    (artifact, out)
}

#[test]
fn bench_json_is_one_object_with_the_documented_keys() {
    let args = ["--inputs", "tests/fixtures/mlp.t215.in.npz", "--iters", "3", "--threads", "1", "--json"];
    let (artifact, out) = bench_mlp("json", &args);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}"));
    let obj = v.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "device",
            "graphs",
            "iters",
            "mean_ms",
            "median_ms",
            "min_ms",
            "model",
            "p90_ms",
            "threads",
            "throughput_per_s"
        ]
    );
    assert_eq!(obj["model"], artifact.as_str());
    assert_eq!(obj["device"], "cpu");
    assert_eq!(obj["graphs"], serde_json::Value::Null, "no graphs on the CPU");
    assert_eq!(obj["threads"], 1);
    assert_eq!(obj["iters"], 3);
    let num = |k: &str| obj[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number: {out}"));
    for k in ["median_ms", "p90_ms", "min_ms", "mean_ms", "throughput_per_s"] {
        assert!(num(k).is_finite() && num(k) > 0.0, "{k} = {}", obj[k]);
    }
    assert!(num("min_ms") <= num("median_ms") && num("median_ms") <= num("p90_ms"), "{out}");
}

#[test]
fn bench_text_output_stays_the_default() {
    let (_, out) = bench_mlp("text", &["--iters", "3", "--threads", "1"]);
    assert!(out.contains("latency ms  median") && out.contains("throughput"), "{out}");
    assert!(serde_json::from_str::<serde_json::Value>(out.trim()).is_err(), "text output parsed as JSON:\n{out}");
}

#[test]
fn bench_profile_lists_every_plan_step() {
    let (_, out) = bench_mlp("profile", &["--iters", "3", "--threads", "1", "--profile"]);
    let profile = out.split("profile:").nth(1).unwrap_or_else(|| panic!("no profile section:\n{out}"));
    // The mlp fixture compiles to one kernel per linear layer (with its epilogue): 3 steps.
    let steps = profile.lines().filter(|l| l.contains("kernel `")).count();
    assert_eq!(steps, 3, "{out}");
    assert!(profile.contains("total"), "{out}");
    // Each step's bytes: mlp's first kernel reads x (4×16 f32) and the 16×32 weight and writes
    // its 4×32 output: 256 + 2048 + 512 bytes.
    assert!(profile.contains("GB/s"), "{out}");
    let mb: Vec<f64> = profile
        .lines()
        .filter(|l| l.contains("kernel `"))
        .map(|l| l.split_whitespace().nth(2).and_then(|v| v.parse().ok()).expect("an MB column"))
        .collect();
    assert!(mb.iter().all(|&m| m > 0.0), "{out}");
    assert!(mb.contains(&0.003), "{out}");
}
