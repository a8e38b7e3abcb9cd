//! GPU targets, checked without a GPU: every fixture compiles into one artifact with code for
//! the CPU and every GPU target; every PTX is assembled by NVIDIA's `ptxas` for its
//! architecture and declares each kernel with the parameters the CUDA device passes; every
//! AMD code object is a linked HSA code object whose kernel metadata
//! (`llvm-readobj --notes`) lists each kernel with the arguments kiln's GPU devices pass
//! (`kiln_runtime::device::gpu_launch`); and every fixture's GPU-scheduled kernels, PTX and
//! AMDGCN are snapshotted.
//!
//! `ptxas` is found as `$KILN_PTXAS` or on the `PATH` (the README's test command installs the
//! `nvidia-cuda-nvcc-cu12` wheel, which ships it, and sets `KILN_PTXAS`); `llvm-readobj` as
//! `$KILN_LLVM_READOBJ`, on the `PATH` or in `/usr/lib/llvm-19/bin`. Without them those checks
//! skip with a message, unless `KILN_REQUIRE_GPU_TOOLS=1` (set by the test command) makes a
//! missing tool a failure.
#![cfg(feature = "llvm")]

use kiln_codegen::compile::{compile, CompileOptions, Compiled, Stage};
use kiln_codegen::kernel::gpu_schedule::{schedule, GpuGrid};
use kiln_runtime::artifact::Artifact;
use kiln_runtime::device::gpu_launch::{kernel_arg_layout, BLOCK_THREADS};
use kiln_runtime::manifest::TileGrid;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixtures, `half` (an f16 CNN and token MLP) and `gpt_half` (the gpt model in f16 at 32
/// tokens), exported for torch 2.15 only: their convolutions, linear layers and (gpt_half's
/// aten form) attention products run on tensor cores and matrix cores.
const MODELS: &[&str] =
    &["mlp", "resblock", "encoder", "gpt", "mobile", "dynbatch", "views", "dynseq", "half", "gpt_half"];
const NVIDIA: &[&str] = &["sm_80", "sm_90", "sm_90a"];
const AMD: &[&str] = &["gfx90a", "gfx942", "gfx1100"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn compile_for(model: &str, form: &str, targets: &[&str], emit: &[Stage]) -> Compiled {
    let m = kiln_frontend::load(&fixture(&format!("{model}.t215.{form}.pt2"))).unwrap();
    let opts = CompileOptions {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        emit: emit.iter().copied().collect::<BTreeSet<_>>(),
        ..CompileOptions::default()
    };
    compile(&m.graph, &m.weights, &opts, &mut |_| {}).unwrap_or_else(|e| panic!("{model} ({form}): {e:#}"))
}

/// A tool the checks need: `$env`, else `name` on the `PATH`, else `fallback`; `None` (after
/// saying so) when it is missing and missing tools are allowed.
fn tool(env: &str, name: &str, fallback: Option<&str>) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).filter(|p| p.is_file()).or_else(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .or_else(|| fallback.map(PathBuf::from).filter(|p| p.is_file()))
    });
    if found.is_none() {
        if std::env::var("KILN_REQUIRE_GPU_TOOLS").is_ok_and(|v| v == "1") {
            panic!("`{name}` is required (KILN_REQUIRE_GPU_TOOLS=1) but was not found; set {env}");
        }
        eprintln!("skipped: `{name}` not found (set {env} or put it on the PATH)");
    }
    found
}

/// The parameter types of kernel `symbol` in `ptx` (`.u64`, ...) and the directives between
/// its parameter list and its body (`.maxntid ...`), or `None` when it has no such entry.
fn ptx_entry(ptx: &str, symbol: &str) -> Option<(Vec<String>, String)> {
    let start = ptx.find(&format!(".entry {symbol}("))?;
    let rest = &ptx[start..];
    let (params, after) = rest.split_once(')')?;
    let types = params.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1).map(String::from)).collect();
    Some((types, after.split('{').next()?.to_string()))
}

/// `ptxas` assembles `ptx` (the code of `name`) for `target`.
fn assert_ptxas_assembles(ptxas: &Path, name: &str, target: &str, ptx: &[u8]) {
    let file = temp(&format!("{name}-{target}.ptx"));
    std::fs::write(&file, ptx).unwrap();
    let out = Command::new(ptxas)
        .args(["--gpu-name", target, "-o"])
        .arg(temp(&format!("{name}.cubin")))
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "ptxas rejects {name} for {target}: {}", String::from_utf8_lossy(&out.stderr));
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kiln-gpu-{}-{name}", std::process::id()))
}

/// A kernel of an AMD code object: its name, its explicit arguments' (offset, size), its other
/// metadata as `key: value` lines.
type AmdKernel = (String, Vec<(usize, usize)>, Vec<String>);

/// The kernels of an AMD code object's metadata as `llvm-readobj --notes` prints it (YAML):
/// for each kernel, its `.name`, its explicit arguments' (offset, size) (hidden arguments,
/// which the HIP runtime fills, left out), and its other `key: value` lines.
fn amd_kernels(notes: &str) -> Vec<AmdKernel> {
    struct Kernel {
        name: String,
        args: Vec<(usize, usize)>,
        other: Vec<String>,
    }
    let mut kernels: Vec<Kernel> = Vec::new();
    let Some(list) = notes.split_once("amdhsa.kernels:\n").map(|(_, l)| l) else { return Vec::new() };
    // Each kernel starts with `- .key` at the list's indentation, each argument with `- .key`
    // deeper; an argument's keys are (offset, size, kind).
    let mut arg: Option<(Option<usize>, Option<usize>, String)> = None;
    let mut kernel_indent = None;
    let flush = |arg: &mut Option<(Option<usize>, Option<usize>, String)>, kernels: &mut Vec<Kernel>| {
        if let (Some((offset, size, kind)), Some(k)) = (arg.take(), kernels.last_mut()) {
            if !kind.starts_with("hidden_") {
                k.args.push((offset.expect("an offset"), size.expect("a size")));
            }
        }
    };
    for line in list.lines() {
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            break;
        }
        let text = line.trim_start();
        let (starts, entry) = match text.strip_prefix("- ") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if !entry.starts_with('.') {
            continue; // an item of a list value (`.reqd_workgroup_size`)
        }
        let kernel_indent = *kernel_indent.get_or_insert(indent);
        if starts && indent == kernel_indent {
            flush(&mut arg, &mut kernels);
            kernels.push(Kernel { name: String::new(), args: Vec::new(), other: Vec::new() });
        } else if starts && indent > kernel_indent + 2 {
            flush(&mut arg, &mut kernels);
            arg = Some((None, None, String::new()));
        }
        let Some((key, value)) = entry.split_once(':') else { continue };
        let value = value.trim();
        let in_arg = indent > kernel_indent + 2 && arg.is_some();
        if in_arg {
            let a = arg.as_mut().unwrap();
            match key {
                ".offset" => a.0 = value.parse().ok(),
                ".size" => a.1 = value.parse().ok(),
                ".value_kind" => a.2 = value.to_string(),
                _ => {}
            }
        } else {
            flush(&mut arg, &mut kernels);
            let k = kernels.last_mut().expect("a kernel");
            if key == ".name" {
                k.name = value.to_string();
            } else if !value.is_empty() {
                k.other.push(format!("{key}: {value}"));
            }
        }
    }
    flush(&mut arg, &mut kernels);
    kernels.into_iter().map(|k| (k.name, k.args, k.other)).collect()
}

#[test]
fn every_fixture_compiles_into_one_artifact_for_the_cpu_and_every_gpu() {
    let ptxas = tool("KILN_PTXAS", "ptxas", None);
    let readobj = tool("KILN_LLVM_READOBJ", "llvm-readobj-19", Some("/usr/lib/llvm-19/bin/llvm-readobj"));
    let targets: Vec<&str> = ["x86_64"].iter().chain(NVIDIA).chain(AMD).copied().collect();
    for model in MODELS {
        for form in ["aten", "core"] {
            let compiled = compile_for(model, form, &targets, &[]);
            let path = temp(&format!("{model}.{form}.kiln"));
            compiled.write(&path).unwrap();
            let artifact = Artifact::open(&path).unwrap();
            assert_eq!(artifact.targets().collect::<Vec<_>>(), targets, "{model}");
            // One copy of the weights whatever the number of targets.
            let single = compile_for(model, form, &["x86_64"], &[]);
            assert_eq!(compiled.manifest.weights.len(), single.manifest.weights.len());
            let kernels = &compiled.manifest.kernels;
            // The GPU code runs each item of a launch range as the schedule's threads; the
            // manifest says how many (a CPU-only artifact says nothing).
            // Bytes of shared memory (LDS) each kernel's blocks use, from its GPU form.
            let mut shared_bytes = Vec::new();
            for (index, (spec, k)) in kernels.iter().zip(&compiled.program.kernels).enumerate() {
                let scheduled = schedule(&kiln_codegen::kernel::math::expand(k));
                let size = kiln_codegen::plan::size_expr;
                let shared: i64 = scheduled
                    .kernel
                    .buffers
                    .iter()
                    .filter(|b| b.access == kiln_codegen::kernel::Access::Shared)
                    .map(|b| b.len.as_const().expect("shared memory of a constant size") * b.dtype.size_bytes() as i64)
                    .sum();
                shared_bytes.push(shared);
                match scheduled.grid {
                    GpuGrid::Threads(n) => {
                        assert_eq!(shared, 0, "{model}: {}", spec.name);
                        assert_eq!(
                            spec.gpu_threads_per_item,
                            (!n.is_const(1)).then(|| size(&n)),
                            "{model}: {}",
                            spec.name
                        );
                        assert_eq!(spec.gpu_tiles, None);
                    }
                    GpuGrid::Tiles { rows_per_item, batch_rows, row_tile, columns, column_tile } => {
                        let want = TileGrid {
                            rows_per_item: size(&rows_per_item),
                            batch_rows: batch_rows.as_ref().map(size),
                            row_tile: row_tile as u32,
                            columns: size(&columns),
                            column_tile: column_tile as u32,
                            matrix: scheduled.kernel.matrix_operands().map(|d| d.name().to_string()),
                        };
                        assert_eq!(spec.gpu_tiles.as_ref(), Some(&want), "{model}: {}", spec.name);
                        if want.matrix.is_some() {
                            // Tensor-core tiles: two f16/bf16 panels of 64 rows of 40.
                            assert_eq!(shared, 2 * 2 * 64 * 40, "{model}: {}", spec.name);
                        } else if column_tile > 1 {
                            // A matrix product: f32 panels of 16 steps, A's leading dimension
                            // padded by one.
                            assert_eq!(shared, 4 * 16 * (row_tile + 1 + column_tile), "{model}: {}", spec.name);
                        } else {
                            // Attention: its tiles fit the static limit of every target.
                            assert!(shared > 0 && shared <= 48 * 1024, "{model}: {}: {shared} bytes", spec.name);
                        }
                        // The runtime launches as many blocks as the kernel's blocks loop has
                        // iterations, for each (static) launch of it.
                        use kiln_codegen::kernel::{Expr, Stmt};
                        let [Stmt::Loop { extent, .. }] = scheduled.kernel.body.as_slice() else { panic!() };
                        for step in &compiled.manifest.plan {
                            let kiln_runtime::manifest::Step::Launch { kernel, range, .. } = step else { continue };
                            let (Some(items), Expr::Int(blocks)) = (range.as_const(), extent) else { continue };
                            if *kernel as usize == index {
                                assert_eq!(want.blocks(items, &[]), Some(*blocks as u64), "{model}: {}", spec.name);
                            }
                        }
                    }
                }
            }
            let cpu_only = &single.manifest.kernels;
            assert!(cpu_only.iter().all(|k| k.gpu_threads_per_item.is_none() && k.gpu_tiles.is_none()));
            if ["mlp", "gpt", "resblock"].contains(model) {
                assert!(kernels.iter().any(|k| k.gpu_threads_per_item.is_some()), "{model}");
            }
            if ["gpt", "encoder"].contains(model) {
                assert!(kernels.iter().any(|k| k.gpu_tiles.is_some()), "{model}: no matmul in tiles");
            }
            // half: every convolution (the downsampling block's two in one kernel) and the
            // token MLP's linear layer; gpt_half: every linear layer and the LM head, and in the
            // aten form attention's two products per batch and head (the core form's attention
            // is f32: PyTorch's decomposition upcasts it).
            let expected = match (*model, form) {
                ("half", _) => 4,
                ("gpt_half", "aten") => 13,
                ("gpt_half", _) => 9,
                _ => 0,
            };
            let matrix = kernels.iter().filter(|k| k.gpu_tiles.as_ref().is_some_and(|t| t.matrix.is_some())).count();
            assert_eq!(matrix, expected, "{model} ({form}): kernels on matrix instructions");
            for obj in &compiled.code {
                let code = artifact.code_object(&obj.target).unwrap();
                assert_eq!(code, obj.bytes.as_slice());
                assert_eq!(obj.symbols.len(), kernels.len());
                if NVIDIA.contains(&obj.target.as_str()) {
                    assert_eq!(obj.format, "ptx");
                    let ptx = std::str::from_utf8(code).expect("PTX is text");
                    assert!(ptx.contains(&format!(".target {}", obj.target)), "{model} {}", obj.target);
                    assert!(!ptx.contains(".extern"), "{model} {}: an unresolved function", obj.target);
                    // Accumulators live in registers: no thread-local (stack) memory.
                    assert!(!ptx.contains(".local"), "{model} {}: a kernel uses local memory", obj.target);
                    for k in kernels {
                        // The parameters are the argument block the CUDA device passes
                        // (`gpu_launch::kernel_args`: 8-byte buffer addresses, the symbol
                        // buffer, the range's start and end), for blocks of its size.
                        let (params, directives) = ptx_entry(ptx, &k.symbol)
                            .unwrap_or_else(|| panic!("{model} {}: no kernel {}", obj.target, k.symbol));
                        let want = vec![".u64"; kernel_arg_layout(k.buffers as usize).len()];
                        assert_eq!(params, want, "{model} {}: the parameters of {}", obj.target, k.symbol);
                        let block = format!(".maxntid {BLOCK_THREADS}, 1, 1");
                        assert!(directives.contains(&block), "{model} {}: {}: {directives}", obj.target, k.symbol);
                    }
                    if let Some(ptxas) = &ptxas {
                        assert_ptxas_assembles(ptxas, &format!("{model}.{form}"), &obj.target, code);
                    }
                } else if AMD.contains(&obj.target.as_str()) {
                    assert_eq!(obj.format, "hsaco");
                    assert!(code.starts_with(b"\x7fELF"), "{model} {}", obj.target);
                    let Some(readobj) = &readobj else { continue };
                    let file = temp(&format!("{model}.{form}.{}.hsaco", obj.target));
                    std::fs::write(&file, code).unwrap();
                    let out = Command::new(readobj).arg("--notes").arg(&file).output().unwrap();
                    let _ = std::fs::remove_file(&file);
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                    let notes = String::from_utf8_lossy(&out.stdout);
                    assert!(notes.contains(&format!("amdgcn-amd-amdhsa--{}", obj.target)), "{model}: {notes}");
                    let found = amd_kernels(&notes);
                    assert_eq!(found.len(), kernels.len(), "{model} {}: kernels in the metadata", obj.target);
                    for (k, lds) in kernels.iter().zip(&shared_bytes) {
                        let (_, args, other) = found
                            .iter()
                            .find(|(name, ..)| *name == k.symbol)
                            .unwrap_or_else(|| panic!("{model} {}: no metadata for {}", obj.target, k.symbol));
                        assert_eq!(
                            *args,
                            kernel_arg_layout(k.buffers as usize),
                            "{model} {}: the arguments of {} are not what the runtime passes",
                            obj.target,
                            k.symbol
                        );
                        let has = |key: &str| other.iter().any(|o| o.starts_with(key));
                        for key in
                            [".kernarg_segment_size", ".sgpr_count", ".vgpr_count", ".private_segment_fixed_size"]
                        {
                            assert!(has(key), "{model} {}: {} has no {key}: {other:?}", obj.target, k.symbol);
                        }
                        // Shared memory (LDS): exactly the GPU form's shared buffers (the
                        // panels of matmuls in tiles, attention's query, key, value and score
                        // tiles), none elsewhere; blocks of the runtime's size.
                        let group = format!(".group_segment_fixed_size: {lds}");
                        assert!(other.contains(&group), "{model} {}: {other:?}", k.symbol);
                        // Accumulators live in registers: no scratch memory, no spills.
                        for zero in [".private_segment_fixed_size: 0", ".sgpr_spill_count: 0", ".vgpr_spill_count: 0"] {
                            assert!(
                                other.contains(&zero.to_string()),
                                "{model} {} {}: {other:?}",
                                obj.target,
                                k.symbol
                            );
                        }
                        assert!(other.contains(&format!(".max_flat_workgroup_size: {BLOCK_THREADS}")), "{other:?}");
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[test]
fn emit_ptx_and_amdgcn_print_each_gpu_targets_assembly() {
    let c = compile_for("mlp", "aten", &["x86_64", "sm_90", "gfx942"], &[Stage::Ptx, Stage::Amdgcn]);
    let text = |s: Stage| &c.listings.iter().find(|(st, _)| *st == s).unwrap().1;
    let ptx = text(Stage::Ptx);
    assert!(ptx.contains("# target sm_90\n") && ptx.contains(".target sm_90"), "{ptx}");
    assert!(ptx.contains("# target x86_64: backend `cranelift` has no `ptx` stage"), "{ptx}");
    let amdgcn = text(Stage::Amdgcn);
    assert!(
        amdgcn.contains("# target gfx942\n") && amdgcn.contains(".amdgcn_target \"amdgcn-amd-amdhsa--gfx942"),
        "{amdgcn}"
    );
}

#[test]
fn a_target_named_twice_is_an_error() {
    let m = kiln_frontend::load(&fixture("mlp.t215.aten.pt2")).unwrap();
    let opts = CompileOptions { targets: vec!["sm_90".into(), "sm_90".into()], ..CompileOptions::default() };
    let e = compile(&m.graph, &m.weights, &opts, &mut |_| {}).err().expect("a duplicate target");
    assert!(e.to_string().contains("`sm_90` is named twice"), "{e}");
}

/// `--no-matrix-instructions`: the `half` fixture's tensor-core tiles run per thread on every
/// GPU target — no `mma.sync` in the PTX (which `ptxas` still assembles), no MFMA or WMMA in
/// the AMD code, no matrix operands in the manifest — while the same tiles (the same shared
/// memory) stay.
#[test]
fn without_matrix_instructions_the_tensor_core_tiles_run_per_thread() {
    let ptxas = tool("KILN_PTXAS", "ptxas", None);
    let m = kiln_frontend::load(&fixture("half.t215.aten.pt2")).unwrap();
    let targets: Vec<&str> = ["x86_64"].iter().chain(NVIDIA).chain(AMD).copied().collect();
    let opts = CompileOptions {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        emit: BTreeSet::from([Stage::Amdgcn]),
        matrix_instructions: false,
        ..CompileOptions::default()
    };
    let c = compile(&m.graph, &m.weights, &opts, &mut |_| {}).unwrap();
    let tiled: Vec<_> = c.manifest.kernels.iter().filter_map(|k| k.gpu_tiles.as_ref()).collect();
    assert_eq!(tiled.len(), 4, "the same tiles");
    assert!(tiled.iter().all(|t| t.matrix.is_none()), "{tiled:?}");
    let amdgcn = &c.listings.iter().find(|(s, _)| *s == Stage::Amdgcn).unwrap().1;
    assert!(!amdgcn.contains("v_mfma") && !amdgcn.contains("v_wmma"), "matrix instructions in the AMD code");
    for obj in c.code.iter().filter(|o| NVIDIA.contains(&o.target.as_str())) {
        let ptx = std::str::from_utf8(&obj.bytes).unwrap();
        assert!(!ptx.contains("mma.sync") && !ptx.contains("wgmma") && ptx.contains(".shared"), "{}", obj.target);
        if let Some(ptxas) = &ptxas {
            assert_ptxas_assembles(ptxas, "half-no-matrix", &obj.target, &obj.bytes);
        }
    }
}

/// The kernels as the GPU targets schedule them (`--emit gpu-kernel`), for every fixture: a
/// snapshot, reviewed like the CPU kernels of `stages`.
#[test]
fn every_fixture_gpu_kernel_matches_its_snapshot() {
    for model in MODELS {
        let c = compile_for(model, "aten", &["x86_64"], &[Stage::GpuKernel]);
        insta::assert_snapshot!(format!("{model}.gpu-kernel"), c.listings[0].1);
    }
}

/// The LLVM version the GPU snapshots were made with (see `tests/stages.rs`).
const SNAPSHOT_LLVM: (u32, u32, u32) = (19, 1, 7);

/// The PTX (sm_90) and AMDGCN (gfx942) of every fixture, and the `half` fixture's sm_90a PTX
/// (Hopper's `wgmma`).
#[test]
fn gpu_assembly_of_every_fixture_matches_its_snapshots() {
    let version = kiln_codegen::llvm::llvm_version();
    if version != SNAPSHOT_LLVM {
        eprintln!("skipped: the GPU snapshots were made with LLVM {SNAPSHOT_LLVM:?}; this build links {version:?}");
        return;
    }
    for m in MODELS {
        let c = compile_for(m, "aten", &["sm_90", "gfx942"], &[Stage::Ptx, Stage::Amdgcn]);
        for (stage, text) in &c.listings {
            insta::assert_snapshot!(format!("{m}.{}", stage.name()), text);
        }
    }
    let c = compile_for("half", "aten", &["sm_90a"], &[Stage::Ptx]);
    insta::assert_snapshot!("half.sm_90a.ptx", c.listings[0].1);
}

/// How the GPU schedule spreads each fixture's kernels: the kernels that run one thread per
/// output element (elementwise nests, matmul rows, convolution planes), printed per fixture;
/// in mlp and gpt every matmul kernel must be one of them, in resblock and mobile (CNNs) every
/// kernel.
#[test]
fn the_gpu_schedule_runs_matmuls_convolutions_and_elementwise_kernels_one_thread_per_element() {
    use kiln_codegen::kernel::{Expr, Stmt};
    for model in MODELS {
        let c = compile_for(model, "aten", &["x86_64"], &[]);
        let (mut per_element, mut threads_before, mut threads_after) = (Vec::new(), 0i64, 0i64);
        let kernels: Vec<_> = c.program.kernels.iter().map(kiln_codegen::kernel::math::expand).collect();
        for k in &kernels {
            let extent = |k: &kiln_codegen::kernel::Kernel| match k.body.as_slice() {
                [Stmt::Loop { extent: Expr::Int(n), .. }] => Some(*n),
                _ => None,
            };
            let s = schedule(k);
            let (Some(before), Some(after)) = (extent(k), extent(&s.kernel)) else { continue };
            // The plan launches `before` items; the GPU runs the grid's threads (or blocks).
            let launched = s.grid.iterations(before, &|_| None).unwrap();
            assert_eq!(launched, after, "{model}: {}", k.name);
            threads_before += before;
            let written = k.buffers.iter().find(|b| b.access == kiln_codegen::kernel::Access::Write);
            match s.grid {
                // One block per tile of the output: every element has its thread.
                GpuGrid::Tiles { .. } => {
                    threads_after += after * 256;
                    per_element.push(k.name.clone());
                }
                GpuGrid::Threads(_) => {
                    threads_after += after;
                    if written.and_then(|b| b.len.as_const()) == Some(after) {
                        per_element.push(k.name.clone());
                    }
                }
            }
        }
        eprintln!(
            "{model}: {} of {} kernels run one thread per output element (or in tiles); threads {threads_before} -> {threads_after}",
            per_element.len(),
            kernels.len()
        );
        if ["resblock", "mobile"].contains(model) {
            // Convolutions (planes zeroed, accumulated and finished element by element), pools
            // and elementwise kernels: all of them.
            assert_eq!(per_element.len(), kernels.len(), "{model}: {per_element:?}");
        }
        if ["mlp", "gpt"].contains(model) {
            for k in &kernels {
                if k.name.contains("matmul") || k.name == "tanh" {
                    assert!(per_element.contains(&k.name), "{model}: `{}` is not one thread per element", k.name);
                }
            }
        }
    }
}

/// Row reductions (layer norm, softmax, means) run one warp per row on GPUs: every layer norm
/// of gpt shuffles its sums across lanes in the PTX and the AMDGCN, and the `--no-fp-contract`
/// code keeps the sequential order (no shuffles), so it still matches the CPU bit for bit.
#[test]
fn row_reductions_run_one_warp_per_row_unless_operations_must_round_in_order() {
    use kiln_codegen::kernel::gpu_schedule::warp_rows;
    let c = compile_for("gpt", "aten", &["x86_64"], &[]);
    let kernels: Vec<_> = c.program.kernels.iter().map(kiln_codegen::kernel::math::expand).collect();
    let norms: Vec<&str> =
        kernels.iter().filter(|k| k.name.starts_with("layer_norm")).map(|k| k.name.as_str()).collect();
    assert!(norms.len() >= 4, "{norms:?}");
    for k in &kernels {
        let warp = warp_rows(&schedule(k).kernel).is_some();
        // layer_norm_4 also holds the matmul whose output it normalizes: one thread per row.
        if k.name.starts_with("layer_norm") && k.name != "layer_norm_4" {
            assert!(warp, "{}: not one warp per row", k.name);
        }
    }
    let m = kiln_frontend::load(&fixture("gpt.t215.aten.pt2")).unwrap();
    for (contract, want) in [(true, true), (false, false)] {
        let opts = CompileOptions {
            targets: vec!["sm_90".into(), "gfx942".into()],
            emit: [Stage::Ptx, Stage::Amdgcn, Stage::GpuKernel].into_iter().collect(),
            fp_contract: contract,
            ..CompileOptions::default()
        };
        let c = compile(&m.graph, &m.weights, &opts, &mut |_| {}).unwrap();
        let text = |s: Stage| c.listings.iter().find(|(st, _)| *st == s).unwrap().1.clone();
        assert_eq!(text(Stage::Ptx).contains("shfl.sync.bfly"), want, "fp_contract {contract}");
        assert_eq!(text(Stage::Amdgcn).contains("ds_bpermute"), want, "fp_contract {contract}");
        assert_eq!(text(Stage::GpuKernel).contains("one warp of 32 lanes per row"), want, "fp_contract {contract}");
    }
}

/// f16 and bf16 products and convolutions (the fixtures are f32): NVIDIA code runs them
/// through tensor cores — `mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32`,
/// 8 per warp per panel of 32 steps, which `ptxas` assembles for sm_80 and sm_90; on sm_90a
/// Hopper's `wgmma.mma_async.sync.aligned.m64n32k16.f32.{f16,bf16}.{f16,bf16}`, 2 per
/// warpgroup per panel in one group waited for once, after a proxy fence of the panel
/// stores before each barrier — and AMD
/// code runs the same blocks on CDNA's matrix cores (`v_mfma_f32_16x16x16*`, gfx90a and
/// gfx942) and on RDNA 3's WMMA (`v_wmma_f32_16x16x16_*`, gfx1100, wavefronts of 32); the
/// tiled kernel's LDS is the two f16/bf16 panels
/// (10240 bytes). The scheduled kernels (NVIDIA's layout) are snapshotted: the product's,
/// and the convolution's with its bias and ReLU (an implicit GEMM over a padded input).
#[test]
fn half_precision_products_run_on_tensor_cores_and_matrix_cores() {
    let ptxas = tool("KILN_PTXAS", "ptxas", None);
    let readobj = tool("KILN_LLVM_READOBJ", "llvm-readobj", Some("/usr/lib/llvm-19/bin/llvm-readobj"));
    let graphs = [
        (
            "half",
            "input %x: {t}[2, 50, 64]\ninput %w: {t}[64, 96]\n%y: {t}[2, 50, 96] = matmul %x, %w\noutput \"y\" %y",
        ),
        (
            "half-conv",
            "input %x: {t}[2, 16, 10, 10]\ninput %w: {t}[32, 16, 3, 3]\ninput %b: {t}[32, 1, 1]\n\
             %c: {t}[2, 32, 10, 10] = conv{stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1, \
             transposed=false, output_padding=[0, 0]} %x, %w\n%z: {t}[2, 32, 10, 10] = add %c, %b\n\
             %y: {t}[2, 32, 10, 10] = relu %z\noutput \"y\" %y",
        ),
    ];
    for ((graph, body), dtype) in graphs.iter().flat_map(|g| ["f16", "bf16"].map(|d| (g, d))) {
        let name = &format!("{graph}-{dtype}");
        let text = format!("graph {}\n{}", graph.replace('-', "_"), body.replace("{t}", dtype));
        let g = kiln_ir::text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let weights = kiln_ir::WeightStore::default();
        let targets = ["x86_64", "sm_80", "sm_90", "sm_90a", "gfx90a", "gfx942", "gfx1100"];
        let opts = CompileOptions {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            emit: BTreeSet::from([Stage::GpuKernel, Stage::Amdgcn]),
            ..CompileOptions::default()
        };
        let c = compile(&g, &weights, &opts, &mut |_| {}).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        // The tensor-core kernel as GPU targets schedule it, pinned.
        let listing = |s: Stage| &c.listings.iter().find(|(st, _)| *st == s).unwrap().1;
        insta::assert_snapshot!(format!("{name}.gpu-kernel"), listing(Stage::GpuKernel));
        // AMD CDNA (gfx90a, gfx942) runs them on matrix cores; RDNA 3 (gfx1100) without.
        for part in listing(Stage::Amdgcn).split("# target ").skip(1) {
            let target = part.split(|c: char| c.is_whitespace() || c == ':').next().unwrap();
            if !AMD.contains(&target) {
                continue;
            }
            let (mfma, wmma) =
                (part.matches("v_mfma_f32_16x16x16").count(), part.matches("v_wmma_f32_16x16x16").count());
            if target == "gfx1100" {
                // 2 steps of 16 × 2 tiles of 16 columns per wavefront of 32 per panel (LLVM's
                // unrolling and tail duplication leave no fixed multiple here).
                assert!(mfma == 0 && wmma >= 4, "{name} {target}: {wmma} WMMA instructions");
            } else {
                // 2 steps of 16 × 2 × 2 tiles per wavefront of 64 per panel.
                assert!(wmma == 0 && mfma >= 8 && mfma % 8 == 0, "{name} {target}: {mfma} MFMA instructions");
            }
        }
        // One kernel in tiles (the convolution's padding is a kernel of its own).
        let tiled: Vec<_> = c.manifest.kernels.iter().filter_map(|k| k.gpu_tiles.as_ref()).collect();
        let [tiles] = tiled.as_slice() else { panic!("{name}: {} kernels in tiles", tiled.len()) };
        assert_eq!((tiles.row_tile, tiles.column_tile), (64, 64), "{name}");
        assert_eq!(
            tiles.matrix.as_deref(),
            Some(dtype),
            "{name}: the manifest names the matrix instructions' operands"
        );
        for obj in &c.code {
            if NVIDIA.contains(&obj.target.as_str()) {
                let ptx = std::str::from_utf8(&obj.bytes).unwrap();
                let mma = format!("mma.sync.aligned.m16n8k16.row.col.f32.{dtype}.{dtype}.f32");
                let wgmma = format!("wgmma.mma_async.sync.aligned.m64n32k16.f32.{dtype}.{dtype}");
                let (n, w) = (ptx.matches(&mma).count(), ptx.matches(&wgmma).count());
                if obj.target == "sm_90a" {
                    // 2 per panel (2 steps of 16; one tile of 64 × 32 per warpgroup), in one
                    // group: one wait per 2, a proxy fence before the panels are read.
                    let waits = ptx.matches("wgmma.wait_group.sync.aligned 0;").count();
                    assert!(n == 0 && w >= 2 && w == 2 * waits, "{name} sm_90a: {w} wgmma, {waits} waits, {n} mma");
                    assert!(ptx.contains("fence.proxy.async.shared::cta;"), "{name} sm_90a: no proxy fence");
                } else {
                    // 8 per panel (2 steps of 16 × 4 tiles of 8 columns), times LLVM's unrolling.
                    assert!(w == 0 && n >= 8 && n % 8 == 0, "{name} {}: {n} tensor-core instructions", obj.target);
                }
                if let Some(ptxas) = &ptxas {
                    assert_ptxas_assembles(ptxas, name, &obj.target, &obj.bytes);
                }
            } else if AMD.contains(&obj.target.as_str()) {
                let Some(readobj) = &readobj else { continue };
                let file = temp(&format!("{name}-{}.hsaco", obj.target));
                std::fs::write(&file, &obj.bytes).unwrap();
                let out = Command::new(readobj).arg("--notes").arg(&file).output().unwrap();
                let _ = std::fs::remove_file(&file);
                let notes = String::from_utf8_lossy(&out.stdout);
                let found = amd_kernels(&notes);
                let lds = ".group_segment_fixed_size: 10240".to_string();
                assert!(found.iter().any(|(_, _, other)| other.contains(&lds)), "{name} {}: {found:?}", obj.target);
                // The layouts assume the wavefront size: 64 on CDNA, 32 on RDNA 3 (WMMA).
                let wave = format!(".wavefront_size: {}", if obj.target == "gfx1100" { 32 } else { 64 });
                assert!(found.iter().all(|(_, _, other)| other.contains(&wave)), "{name} {}: {found:?}", obj.target);
            }
        }
    }
}
