//! `kiln run --compare-steps`: a compiled model run on two devices step by step. Without a
//! GPU here, the CPU against itself must match at every step; a device that cannot be opened
//! is a one-line error.

use std::path::PathBuf;
use std::process::Command;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs kiln")
}

fn compiled(model: &str, extra: &[&str]) -> String {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("run-cli-{}-{model}.kiln", std::process::id()));
    let artifact = path.to_str().unwrap().to_string();
    let source = format!("tests/fixtures/{model}.t215.aten.pt2");
    let out = kiln(&[&["compile", source.as_str(), "-o", &artifact], extra].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    artifact
}

#[test]
fn comparing_the_cpu_with_itself_matches_at_every_step() {
    for (model, extra) in [("gpt", &[][..]), ("dynseq", &["--no-fp-contract"][..])] {
        let artifact = compiled(model, extra);
        let inputs = format!("tests/fixtures/{model}.t215.in.npz");
        let out = kiln(&["run", &artifact, "--device", "cpu", "--compare-steps", "cpu", "--inputs", &inputs]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("steps of the plan match bit for bit (cpu and cpu)"), "{text}");
        let _ = std::fs::remove_file(&artifact);
    }
}

#[test]
fn comparing_with_a_missing_device_or_an_archive_is_an_error() {
    let artifact = compiled("mlp", &[]);
    let out = kiln(&["run", &artifact, "--device", "cpu", "--compare-steps", "cuda:7"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cuda"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = kiln(&["run", "tests/fixtures/mlp.t215.aten.pt2", "--compare-steps", "cpu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("needs a compiled `.kiln` artifact"), "{err}");
    let _ = std::fs::remove_file(&artifact);
}
