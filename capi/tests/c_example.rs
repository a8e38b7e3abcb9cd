//! The C side of the C API: `examples/c/run_model.c` built with the system C compiler against
//! libkiln, run on compiled fixtures, its printout checked against the Rust runtime on the
//! same inputs (bit-identical outputs); and `include/kiln.h` checked against the library (every
//! declared function exists, struct layouts and constants match the Rust definitions).
//! Both skip with a message when there is no C compiler (`$CC`, else `cc`).

mod common;

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::*;
use kiln_codegen::plan::dtype_of;
use kiln_ir::{DType, Tensor};
use kiln_runtime::exec::Model;
use kiln_runtime::manifest::Signature;
use kiln_runtime::tensor::HostTensor;

const MODELS: &[&str] = &["mlp", "dynbatch", "encoder", "gpt", "views", "dynseq"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The C compiler, or `None` (after saying so) when there is none.
fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    match Command::new(&cc).arg("--version").output() {
        Ok(o) if o.status.success() => Some(cc),
        _ => {
            eprintln!("skipping: no C compiler (`{cc}`); set CC or install one to test the C API from C");
            None
        }
    }
}

/// Linker arguments for libkiln. Cargo builds the library's cdylib and staticlib with this
/// test, into the folder of the test binary (`<target>/<profile>/deps`); the copies one level up
/// are refreshed only by `cargo build`, so they are used only as a fallback. Prefers the shared
/// library (with an rpath), else the static one.
fn link_args() -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().expect("the test binary is in a folder");
    let so_name = if cfg!(target_os = "macos") { "libkiln.dylib" } else { "libkiln.so" };
    for dir in [deps, deps.parent().unwrap_or(deps)] {
        let (so, a) = (dir.join(so_name), dir.join("libkiln.a"));
        if so.exists() {
            let d = dir.display();
            return vec![format!("-L{d}"), "-lkiln".into(), format!("-Wl,-rpath,{d}")];
        }
        if a.exists() {
            return vec![a.display().to_string(), "-lpthread".into(), "-ldl".into(), "-lm".into()];
        }
    }
    panic!("no {so_name} or libkiln.a next to {}: build them with `cargo build -p kiln-capi`", exe.display())
}

/// Compiles C `sources` into the executable `out` against kiln.h and libkiln.
fn build_c(cc: &str, sources: &[&Path], out: &Path) {
    let include = workspace().join("capi/include");
    let result = Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg(format!("-I{}", include.display()))
        .args(sources)
        .args(link_args())
        .arg("-o")
        .arg(out)
        .output()
        .expect("runs the C compiler");
    assert!(result.status.success(), "building {out:?} failed:\n{}", String::from_utf8_lossy(&result.stderr));
}

/// The inputs `run_model.c` makes (see its header comment).
fn example_inputs(sig: &Signature) -> Vec<HostTensor> {
    let syms: Vec<i64> = sig.symbols.iter().map(|s| s.max.map_or(s.min.max(2), |m| s.min.max(2).min(m))).collect();
    sig.inputs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let shape: Vec<usize> = spec.shape.iter().map(|d| d.eval(&syms).unwrap() as usize).collect();
            let n: usize = shape.iter().product();
            let dtype = dtype_of(spec.dtype);
            let t = match dtype {
                d if d.is_float() => {
                    let v: Vec<f64> = (0..n).map(|j| ((31 * j + 17 * i) % 23) as f64 - 11.0).map(|k| k / 8.0).collect();
                    Tensor::from_f64(d, shape.clone(), &v)
                }
                DType::Bool => {
                    Tensor::from_i64(dtype, shape.clone(), &(0..n).map(|j| ((j + i) % 2) as i64).collect::<Vec<_>>())
                }
                d => Tensor::from_i64(
                    d,
                    shape.clone(),
                    &(0..n).map(|j| ((31 * j + 17 * i) % 10) as i64).collect::<Vec<_>>(),
                ),
            };
            HostTensor::new(spec.dtype, shape, t.bytes).unwrap()
        })
        .collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// What the example prints for one output.
#[derive(Debug, PartialEq)]
struct Printed {
    name: String,
    header: String,
    fnv1a: u64,
    sum: f64,
    first: Vec<f64>,
}

/// Parses the `outputs` part of the example's printout.
fn parse_outputs(stdout: &str) -> Vec<Printed> {
    let lines: Vec<&str> = stdout.lines().skip_while(|l| *l != "outputs").skip(1).collect();
    lines
        .chunks(2)
        .map(|pair| {
            let [head, first] = pair else { panic!("odd output lines in:\n{stdout}") };
            let field = |key: &str| {
                head.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap_or_else(|| panic!("{key} in {head}"))
            };
            let (name, rest) = head.trim().split_once(": ").unwrap();
            Printed {
                name: name.to_string(),
                header: rest.split(" fnv1a=").next().unwrap().to_string(),
                fnv1a: u64::from_str_radix(field("fnv1a="), 16).unwrap(),
                sum: field("sum=").parse().unwrap(),
                first: first
                    .trim()
                    .strip_prefix("first:")
                    .unwrap()
                    .split_whitespace()
                    .map(|v| v.parse().unwrap())
                    .collect(),
            }
        })
        .collect()
}

/// What the example should print for `out`, computed from the Rust runtime's outputs.
fn expected(sig: &Signature, out: &[HostTensor]) -> Vec<Printed> {
    sig.outputs
        .iter()
        .zip(out)
        .map(|(spec, h)| {
            let t = Tensor { dtype: dtype_of(h.dtype), shape: h.shape.clone(), bytes: h.data.clone() };
            let values = t.to_f64();
            let dims: Vec<String> = h.shape.iter().map(|d| d.to_string()).collect();
            Printed {
                name: spec.name.clone(),
                header: format!("{}[{}] bytes={}", t.dtype, dims.join(", "), h.data.len()),
                fnv1a: fnv1a(&h.data),
                sum: values.iter().fold(0.0, |a, v| a + v),
                first: values.iter().take(8).copied().collect(),
            }
        })
        .collect()
}

#[test]
fn the_c_example_matches_the_rust_runtime() {
    let Some(cc) = c_compiler() else { return };
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("run_model");
    build_c(&cc, &[&workspace().join("examples/c/run_model.c")], &exe);
    for m in MODELS {
        let path = common::compile_fixture(&format!("{m}.t215.aten.pt2"), dir.path());
        let out = Command::new(&exe).arg(&path).arg("2").output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{m}: run_model failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

        let model = Model::load(&path).unwrap();
        let sig = model.signature().clone();
        let want = expected(&sig, &model.run(&example_inputs(&sig)).unwrap());
        let got = parse_outputs(&stdout);
        assert_eq!(got.len(), want.len(), "{m}:\n{stdout}");
        for (g, w) in got.iter().zip(&want) {
            // The hash is of the raw bytes: bit-identical. %.17g and %.9g print the sum and the
            // f32 values exactly enough to compare them tightly.
            assert_eq!((&g.name, &g.header, g.fnv1a, g.sum), (&w.name, &w.header, w.fnv1a, w.sum), "{m}:\n{stdout}");
            assert_eq!(g.first.len(), w.first.len(), "{m}");
            for (a, b) in g.first.iter().zip(&w.first) {
                assert!((a - b).abs() <= 1e-7 * b.abs(), "{m}: first values {:?} vs {:?}", g.first, w.first);
            }
        }
        // The signature part names symbolic dims and their ranges.
        for s in &sig.symbols {
            let range = format!("{} in [{}, {}]", s.name, s.min, s.max.map_or("inf".into(), |v| v.to_string()));
            assert!(stdout.contains(&range), "{m}: no `{range}` in\n{stdout}");
        }
    }
}

/// Names of the functions `kiln.h` declares (declaration lines, not comments).
fn declared_functions(header: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in header.lines().filter(|l| !l.trim_start().starts_with(['/', '*'])) {
        for (at, _) in line.match_indices("kiln_") {
            let ident: String = line[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if line[at + ident.len()..].starts_with('(') && !names.contains(&ident) {
                names.push(ident);
            }
        }
    }
    names
}

/// `(C name, field names, [size, field offsets...])` of a `#[repr(C)]` struct of the library.
macro_rules! layout {
    ($c:literal, $ty:ty, $($field:ident),+) => {
        ($c, vec![$(stringify!($field)),+], [std::mem::size_of::<$ty>(), $(std::mem::offset_of!($ty, $field)),+].to_vec())
    };
}

/// The `KILN_*` constants the header defines (`KILN_NAME = value` lines), in order.
fn declared_constants(header: &str) -> Vec<String> {
    header
        .lines()
        .filter_map(|l| l.trim().split_once(" = ").map(|(name, _)| name.to_string()))
        .filter(|name| name.starts_with("KILN_"))
        .collect()
}

#[test]
fn the_header_matches_the_library() {
    let Some(cc) = c_compiler() else { return };
    let header = std::fs::read_to_string(workspace().join("capi/include/kiln.h")).unwrap();
    let functions = declared_functions(&header);
    assert!(functions.len() == 16 && functions.contains(&"kiln_model_run".to_string()), "{functions:?}");
    let layouts = [
        layout!("kiln_tensor", KilnTensor, dtype, rank, shape, data, bytes),
        layout!("kiln_tensor_info", KilnTensorInfo, name, dtype, rank, shape),
        layout!("kiln_dim", KilnDim, size, expr, min, max),
    ];
    let mut constants: Vec<(String, i32)> = [
        ("KILN_OK", KILN_OK),
        ("KILN_ERROR_INVALID_ARGUMENT", KILN_ERROR_INVALID_ARGUMENT),
        ("KILN_ERROR_LOAD", KILN_ERROR_LOAD),
        ("KILN_ERROR_INPUT", KILN_ERROR_INPUT),
        ("KILN_ERROR_RUN", KILN_ERROR_RUN),
        ("KILN_ERROR_INTERNAL", KILN_ERROR_INTERNAL),
    ]
    .map(|(n, v)| (n.to_string(), v))
    .to_vec();
    for (code, _, name) in kiln::signature::DTYPES {
        let name = name.trim_end_matches('\0');
        assert_eq!(unsafe { CStr::from_ptr(kiln_dtype_name(code)) }.to_str(), Ok(name));
        constants.push((format!("KILN_DTYPE_{}", name.to_uppercase()), code));
    }
    let names: Vec<String> = constants.iter().map(|c| c.0.clone()).collect();
    assert_eq!(declared_constants(&header), names, "the header's constants");

    // A C program that takes every declared function's address (so each must be in the
    // library) and prints the struct layouts and constants as the C compiler sees them.
    let mut c = String::from("#include <stddef.h>\n#include <stdio.h>\n#include \"kiln.h\"\n\nint main(void) {\n");
    let addresses: Vec<String> = functions.iter().map(|f| format!("(void *){f}")).collect();
    c += &format!("    void *volatile fns[] = {{{}}};\n    (void)fns;\n", addresses.join(", "));
    let mut want = Vec::new();
    for (ty, fields, numbers) in &layouts {
        let offsets: Vec<String> = fields.iter().map(|f| format!("offsetof({ty}, {f})")).collect();
        let fmt = vec!["%zu"; fields.len() + 1].join(" ");
        c += &format!("    printf(\"{ty} {fmt}\\n\", sizeof({ty}), {});\n", offsets.join(", "));
        want.push(format!("{ty} {}", numbers.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" ")));
    }
    for (name, value) in &constants {
        c += &format!("    printf(\"{name} %d\\n\", (int){name});\n");
        want.push(format!("{name} {value}"));
    }
    c += "    return 0;\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let (src, exe) = (dir.path().join("layout.c"), dir.path().join("layout"));
    std::fs::write(&src, c).unwrap();
    build_c(&cc, &[&src], &exe);
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>(), want);
}
