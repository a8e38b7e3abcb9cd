//! Damaged and foreign `.kiln` artifacts through the CLI: `kiln run` and `kiln inspect` exit
//! non-zero with a one-paragraph error that names the file and the problem, and never panic.
//! The fixture `mlp` is compiled with `kiln compile` into a temporary folder, then copied
//! truncated, with a flipped byte in each checksummed part (header, manifest, weights, code),
//! with trailing bytes and with an unknown format version; and compiled for the other CPU
//! architecture only (`kiln run` refuses it, `kiln inspect` describes it).
//!
//! The runtime's own tests (`runtime/tests/artifact.rs`) cover every byte and every rule of the
//! format through the library; `tests/compiled.rs` covers a relabelled code object through
//! `Model::load`. This file checks what a user of the CLI sees.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_runtime::artifact::{Artifact, SectionKind};

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("kiln-bad-artifacts-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kiln(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs kiln");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// `kiln compile tests/fixtures/mlp.t215.aten.pt2 --target <target> -o <out>`.
fn compile(target: &str, out: &Path) {
    let (code, stdout, stderr) =
        kiln(&["compile", "tests/fixtures/mlp.t215.aten.pt2", "--target", target, "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "kiln compile failed:\n{stdout}\n{stderr}");
}

/// `kiln <sub> <path>` fails with one paragraph on stderr that starts with `error:` and
/// mentions the file and every part of `mentions`.
fn assert_clean_failure(sub: &str, path: &Path, mentions: &[&str]) {
    let p = path.to_str().unwrap();
    let (code, stdout, stderr) = kiln(&[sub, p]);
    let what = format!("kiln {sub} {}", path.file_name().unwrap().to_string_lossy());
    assert_ne!(code, 0, "{what} succeeded:\n{stdout}");
    assert!(stderr.starts_with("error:"), "{what}: stderr does not start with `error:`:\n{stderr}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "{what}: stderr mentions `{bad}`:\n{stderr}");
    }
    assert!(!stderr.trim().contains("\n\n"), "{what}: more than one paragraph:\n{stderr}");
    for m in [p].iter().chain(mentions) {
        assert!(stderr.contains(m), "{what}: stderr does not mention `{m}`:\n{stderr}");
    }
}

/// A copy of `bytes` named `name` in `dir`.
fn variant(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.0.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn damaged_artifacts_are_clear_errors_in_run_and_inspect() {
    let dir = TempDir::new("damaged");
    let good = dir.0.join("mlp.kiln");
    compile(if cfg!(target_arch = "x86_64") { "x86_64" } else { "aarch64" }, &good);
    for sub in ["run", "inspect"] {
        let (code, stdout, stderr) = kiln(&[sub, good.to_str().unwrap()]);
        assert_eq!(code, 0, "kiln {sub} on the undamaged artifact:\n{stdout}\n{stderr}");
    }
    let bytes = std::fs::read(&good).unwrap();
    let sections = Artifact::open(&good).unwrap().sections().to_vec();

    let mut cases: Vec<(PathBuf, Vec<String>)> = vec![
        (variant(&dir, "half.kiln", &bytes[..bytes.len() / 2]), vec!["truncated".into()]),
        (variant(&dir, "header-only.kiln", &bytes[..20]), vec!["truncated".into()]),
        (
            variant(&dir, "trailing.kiln", &[&bytes[..], &[0u8; 16]].concat()),
            vec!["16 bytes follow the end of the artifact".into()],
        ),
    ];
    let mut version = bytes.clone();
    version[8..12].copy_from_slice(&7u32.to_le_bytes());
    cases.push((
        variant(&dir, "version.kiln", &version),
        vec!["version 7".into(), "not supported".into(), "recompile".into()],
    ));

    // One flipped byte in the header (the compiler version string at byte 32), then in the middle
    // of each section: the checksum error names the part.
    let mut header = bytes.clone();
    header[32] ^= 0x01;
    cases.push((variant(&dir, "flip-header.kiln", &header), vec!["checksum".into(), "header".into()]));
    for (i, s) in sections.iter().enumerate().filter(|(_, s)| s.length > 0) {
        let kind = match s.kind {
            SectionKind::Manifest => "manifest",
            SectionKind::Weights => "weights",
            SectionKind::CodeObject => "code object",
        };
        let mut flipped = bytes.clone();
        flipped[(s.offset + s.length / 2) as usize] ^= 0x10;
        let name = format!("flip-{}.kiln", kind.replace(' ', "-"));
        cases.push((variant(&dir, &name, &flipped), vec!["checksum".into(), format!("section {i} ({kind})")]));
    }
    let kinds: Vec<SectionKind> = sections.iter().map(|s| s.kind).collect();
    for k in [SectionKind::Manifest, SectionKind::Weights, SectionKind::CodeObject] {
        assert!(kinds.contains(&k), "the fixture's artifact has no {k} section: {kinds:?}");
    }

    for (path, mentions) in &cases {
        let mentions: Vec<&str> = mentions.iter().map(String::as_str).collect();
        for sub in ["run", "inspect"] {
            assert_clean_failure(sub, path, &mentions);
        }
    }
}

#[test]
fn an_artifact_for_another_cpu_is_refused_by_run_and_described_by_inspect() {
    let (host, other) = if cfg!(target_arch = "x86_64") { ("x86_64", "aarch64") } else { ("aarch64", "x86_64") };
    let dir = TempDir::new("other-cpu");
    let path = dir.0.join(format!("mlp-{other}.kiln"));
    compile(other, &path);
    let host_msg = format!("no code for this machine ({host})");
    let hint = format!("--target {host}");
    assert_clean_failure("run", &path, &[&host_msg, &format!("compiled for: {other}"), &hint]);

    let (code, stdout, stderr) = kiln(&["inspect", path.to_str().unwrap()]);
    assert_eq!(code, 0, "kiln inspect on an artifact for {other}:\n{stderr}");
    assert!(stdout.contains(&format!("{other} (elf-relocatable)")), "{stdout}");
}

/// `kiln run --device cuda|hip` where the GPU, its driver or code for it is missing: one clear
/// error, never a crash; an unknown device name lists the devices.
#[test]
fn missing_gpu_devices_are_clear_errors() {
    let dir = TempDir::new("devices");
    let path = dir.0.join("mlp-cpu.kiln");
    compile(if cfg!(target_arch = "x86_64") { "x86_64" } else { "aarch64" }, &path);
    let p = path.to_str().unwrap();
    for (device, name) in [("cuda", "cuda:0"), ("hip", "hip:0"), ("cuda:7", "cuda:7")] {
        let (code, stdout, stderr) = kiln(&["run", p, "--device", device]);
        assert_ne!(code, 0, "--device {device} succeeded:\n{stdout}");
        assert!(stderr.starts_with("error:"), "--device {device}:\n{stderr}");
        assert!(!stderr.contains("panicked"), "--device {device}:\n{stderr}");
        // No driver or GPU here (the usual case), or a GPU without code for it in this CPU-only
        // artifact.
        assert!(stderr.contains(name) || stderr.contains("no code for this machine"), "--device {device}:\n{stderr}");
    }
    let (code, _, stderr) = kiln(&["run", p, "--device", "tpu"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown device `tpu`") && stderr.contains("cuda, cuda:N, hip"), "{stderr}");
}
