//! `kiln run --compare-steps`: a compiled model run on two devices step by step. Without a
//! GPU here, the CPU against itself must match at every step; a device that cannot be opened
//! is a one-line error. `kiln run --simulate`: a model's GPU schedule in the kernel evaluator.

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

/// `kiln run MODEL.pt2 --simulate TARGET`: the kernels as that GPU target schedules them, run
/// in the kernel evaluator, give the compiled CPU code's outputs bit for bit (the `gpt_half`
/// fixture: tensor-core tiles in NVIDIA Hopper's and AMD CDNA's layouts, attention's products
/// per batch and head); a CPU target or an artifact is a clear error.
#[test]
fn simulating_a_gpu_schedule_gives_the_cpu_codes_outputs() {
    let artifact = compiled("gpt_half", &[]);
    let inputs = "tests/fixtures/gpt_half.t215.in.npz";
    let cpu = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("run-cli-{}-gpt_half.npz", std::process::id()));
    let cpu = cpu.to_str().unwrap();
    let out = kiln(&["run", &artifact, "--device", "cpu", "--inputs", inputs, "--output", cpu]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for target in ["sm_90a", "gfx942"] {
        let model = "tests/fixtures/gpt_half.t215.aten.pt2";
        let out = kiln(&[
            "run",
            model,
            "--simulate",
            target,
            "--inputs",
            inputs,
            "--check",
            cpu,
            "--rtol",
            "0",
            "--atol",
            "0",
        ]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{target}: {stdout}{stderr}");
        assert!(
            stdout.contains("check passed") && stderr.contains(&format!("simulating the {target} schedule")),
            "{stderr}"
        );
    }
    for (args, says) in [
        (vec!["run", "tests/fixtures/mlp.t215.aten.pt2", "--simulate", "x86_64"], "`x86_64` is not a GPU target"),
        (vec!["run", artifact.as_str(), "--simulate", "sm_90"], "--simulate runs a `.pt2`"),
    ] {
        let out = kiln(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says) && stderr.lines().count() == 1, "{stderr}");
    }
    let _ = std::fs::remove_file(&artifact);
    let _ = std::fs::remove_file(cpu);
}

/// `kiln run MODEL.pt2 --emulate TARGET`: the model's code for that GPU target, run on a GPU
/// emulated on this CPU, matches PyTorch (the f16 `gpt_half`: attention and linear layers on
/// NVIDIA's `wgmma` and AMD's MFMA); a CPU target or an artifact is a clear error, and so is a
/// build without the llvm backend.
#[test]
fn emulating_a_gpu_runs_the_models_gpu_code() {
    let model = "tests/fixtures/gpt_half.t215.aten.pt2";
    let (inputs, outputs) = ("tests/fixtures/gpt_half.t215.in.npz", "tests/fixtures/gpt_half.t215.out.npz");
    if !cfg!(feature = "llvm") {
        let out = kiln(&["run", model, "--emulate", "sm_90a", "--inputs", inputs]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("needs kiln built with the llvm backend"), "{stderr}");
        return;
    }
    for target in ["sm_90a", "gfx942"] {
        let out = kiln(&[
            "run",
            model,
            "--emulate",
            target,
            "--inputs",
            inputs,
            "--check",
            outputs,
            "--rtol",
            "1e-2",
            "--atol",
            "1e-2",
        ]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{target}: {stdout}{stderr}");
        assert!(
            stdout.contains("check passed") && stderr.contains(&format!("running the {target} code of")),
            "{stderr}"
        );
    }
    let artifact = compiled("mlp", &[]);
    for (args, says) in [
        (vec!["run", "tests/fixtures/mlp.t215.aten.pt2", "--emulate", "x86_64"], "the GPU emulator runs sm_80"),
        (vec!["run", artifact.as_str(), "--emulate", "sm_90"], "--emulate runs a `.pt2`"),
    ] {
        let out = kiln(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says) && stderr.lines().count() == 1, "{stderr}");
    }
    let _ = std::fs::remove_file(&artifact);
}
