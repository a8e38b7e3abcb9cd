//! The compiler driver: one readable function from a graph to a compiled model, with the text
//! of every stage on request (`kiln compile --emit ir,opt,fusion,kernel,gpu-kernel,clif,mlir,llvm,asm,ptx,amdgcn`).
//! One compilation may produce code for several targets (`--target x86_64,sm_90,gfx942`):
//! each target's code comes from the requested backend when it supports the target, else
//! (GPU targets) from the `llvm` backend ([`target::backend_for`]).
//!
//! `graph → optimize (kiln-passes) → lower to kernels (fusion) → expand transcendentals →
//! backend → memory plan → manifest`. Writing the artifact is [`Compiled::write`].

use crate::kernel::{lower_graph, math, text::print_kernel, BufferKind, Program};
use crate::plan::{elem_type, launch_steps, plan_memory, signature, size_expr, MemoryPlan};
use crate::target::{self, CodeObject, CodegenError, CodegenOptions, Listing};
use kiln_ir::{Dim, Graph, WeightStore};
use kiln_runtime::artifact::{write_artifact, ArtifactError, CodeObjectData, WeightData};
use kiln_runtime::manifest::{KernelSpec, Manifest, TileGrid};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

/// A stage whose text `--emit` can print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The IR as read from the archive.
    Ir,
    /// The IR after the graph passes.
    Opt,
    /// Kernels, the ops fused into each, bytes kept out of memory, the memory plan.
    Fusion,
    /// For each kernel, the e-graph rules that produced the values it computes.
    Explain,
    /// The kernel IR (after transcendental expansion).
    Kernel,
    /// The kernel IR as the GPU targets schedule it (one thread per element where sound).
    GpuKernel,
    /// Cranelift IR (the `cranelift` backend).
    Clif,
    /// MLIR as built from the kernels and after the pass pipeline (the `llvm` backend).
    Mlir,
    /// LLVM IR after LLVM's optimizations (the `llvm` backend).
    Llvm,
    /// Assembly of the CPU targets.
    Asm,
    /// PTX of the NVIDIA targets (the `llvm` backend).
    Ptx,
    /// AMDGCN assembly of the AMD targets (the `llvm` backend).
    Amdgcn,
}

impl Stage {
    pub const ALL: [Stage; 12] = [
        Stage::Ir,
        Stage::Opt,
        Stage::Fusion,
        Stage::Explain,
        Stage::Kernel,
        Stage::GpuKernel,
        Stage::Clif,
        Stage::Mlir,
        Stage::Llvm,
        Stage::Asm,
        Stage::Ptx,
        Stage::Amdgcn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Ir => "ir",
            Stage::Opt => "opt",
            Stage::Fusion => "fusion",
            Stage::Explain => "explain",
            Stage::Kernel => "kernel",
            Stage::GpuKernel => "gpu-kernel",
            Stage::Clif => "clif",
            Stage::Mlir => "mlir",
            Stage::Llvm => "llvm",
            Stage::Asm => "asm",
            Stage::Ptx => "ptx",
            Stage::Amdgcn => "amdgcn",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.name() == s)
    }
}

#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub targets: Vec<String>,
    pub backend: String,
    /// Run the graph passes (on by default).
    pub optimize: bool,
    /// Run the e-graph optimizer as part of the graph passes (on by default).
    pub egraph: bool,
    /// The text of a rule file for the e-graph optimizer (`kiln compile --rules`).
    pub rules: Option<String>,
    /// E-graph rules to leave out, by name (`kiln compile --disable-rule`).
    pub disabled_rules: Vec<String>,
    pub emit: BTreeSet<Stage>,
    /// Let backends fuse float multiplies and adds into FMAs (see [`CodegenOptions`]).
    pub fp_contract: bool,
    /// Let GPU targets use their matrix instructions (see [`CodegenOptions`]).
    pub matrix_instructions: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            targets: vec!["x86_64".into()],
            backend: target::DEFAULT_BACKEND.into(),
            optimize: true,
            egraph: true,
            rules: None,
            disabled_rules: Vec::new(),
            emit: BTreeSet::new(),
            fp_contract: true,
            matrix_instructions: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    // Not `#[from]`: that would also make the inner error the source, and `{:#}` printing
    // would repeat its message.
    #[error("graph passes: {0}")]
    Pass(kiln_passes::PassError),
    #[error("lowering to kernels: {0}")]
    Lower(crate::kernel::LowerError),
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error("no target given")]
    NoTarget,
    #[error("target `{0}` is named twice")]
    DuplicateTarget(String),
}

impl From<kiln_passes::PassError> for CompileError {
    fn from(e: kiln_passes::PassError) -> Self {
        CompileError::Pass(e)
    }
}

impl From<crate::kernel::LowerError> for CompileError {
    fn from(e: crate::kernel::LowerError) -> Self {
        CompileError::Lower(e)
    }
}

/// A compiled model, ready to be written as an artifact.
pub struct Compiled {
    pub graph: Graph,
    pub weights: WeightStore,
    pub program: Program,
    pub memory: MemoryPlan,
    pub manifest: Manifest,
    pub code: Vec<CodeObject>,
    /// Requested stage texts, in stage order.
    pub listings: Vec<(Stage, String)>,
    /// What the graph passes did (`None` with `optimize` off).
    pub pass_report: Option<kiln_passes::PassReport>,
    /// Nodes of the graph as loaded, before any pass.
    pub ops_in: usize,
}

/// Compiles a model. `progress` receives one line per stage.
/// The graph passes and the e-graph optimizer as `opts` asks (the cost model prices the first
/// target's machine), with their report; the graph as it is with `optimize` off.
fn optimize(
    graph: &Graph,
    weights: &WeightStore,
    opts: &CompileOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(Graph, WeightStore, Option<kiln_passes::PassReport>), CompileError> {
    if !opts.optimize {
        return Ok((graph.clone(), weights.clone(), None));
    }
    progress("optimizing the graph");
    let egraph = opts.egraph.then(|| kiln_passes::EgraphOptions {
        target: opts.targets.first().cloned().unwrap_or_default(),
        extra_rules: opts.rules.clone(),
        disabled_rules: opts.disabled_rules.clone(),
        explanations: opts.emit.contains(&Stage::Explain),
        ..kiln_passes::EgraphOptions::default()
    });
    let pass_options = kiln_passes::Options { egraph, ..kiln_passes::Options::default() };
    let (g, w, report) = kiln_passes::optimize(graph, weights, &pass_options)?;
    Ok((g, w, Some(report)))
}

/// The graph as `compile` optimizes it (for `opts.targets[0]`'s machine), its weights and its
/// kernels (with kiln's transcendental expansions, as backends see them), without generating
/// code: what `kiln run --simulate` runs in the evaluator.
pub fn kernels(
    graph: &Graph,
    weights: &WeightStore,
    opts: &CompileOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(Graph, WeightStore, Program), CompileError> {
    let (graph, weights, _) = optimize(graph, weights, opts, progress)?;
    progress("fusing into kernels");
    let mut program = lower_graph(&graph)?;
    program.kernels = program.kernels.iter().map(math::expand).collect();
    Ok((graph, weights, program))
}

pub fn compile(
    graph: &Graph,
    weights: &WeightStore,
    opts: &CompileOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Compiled, CompileError> {
    if opts.targets.is_empty() {
        return Err(CompileError::NoTarget);
    }
    let requested = target::lookup(&opts.backend)?;
    let mut backends = Vec::new();
    for (i, t) in opts.targets.iter().enumerate() {
        if opts.targets[..i].contains(t) {
            return Err(CompileError::DuplicateTarget(t.clone()));
        }
        backends.push(target::backend_for(requested, t)?);
    }
    let mut listings = Vec::new();
    let ops_in = graph.node_count();
    let wants = |s: Stage| opts.emit.contains(&s);
    if wants(Stage::Ir) {
        listings.push((Stage::Ir, kiln_ir::text::print(graph)));
    }

    let (graph, weights, pass_report) = optimize(graph, weights, opts, progress)?;
    if let (true, Some(report)) = (wants(Stage::Opt), &pass_report) {
        listings.push((Stage::Opt, format!("{}\n# passes\n{report}", kiln_ir::text::print(&graph))));
    }

    progress("fusing into kernels");
    let program = lower_graph(&graph)?;
    let memory = plan_memory(&graph, &program);
    if wants(Stage::Fusion) {
        listings.push((Stage::Fusion, fusion_report(&graph, &program, &memory)));
    }
    if wants(Stage::Explain) {
        let egraph = pass_report.as_ref().and_then(|r| r.egraph.as_ref());
        listings.push((Stage::Explain, explain_report(egraph, &program)));
    }
    let kernels: Vec<_> = program.kernels.iter().map(math::expand).collect();
    if wants(Stage::Kernel) {
        listings.push((
            Stage::Kernel,
            kernels.iter().map(|k| print_kernel(k, &graph.symbols)).collect::<Vec<_>>().join("\n"),
        ));
    }
    if wants(Stage::GpuKernel) {
        use crate::kernel::gpu_schedule::{describe_warp_rows, schedule, warp_rows, GpuGrid};
        let text = kernels.iter().map(|k| {
            let s = schedule(k);
            let mut t = print_kernel(&s.kernel, &graph.symbols);
            match &s.grid {
                GpuGrid::Threads(n) if n.is_const(1) => {}
                GpuGrid::Threads(n) => {
                    t = format!(
                        "{}\n  # GPU: {} threads per item of the launch range\n",
                        t.trim_end(),
                        n.display(&graph.symbols)
                    );
                }
                GpuGrid::Tiles { batch_rows, row_tile, columns, column_tile: 1, .. } if columns.is_const(1) => {
                    let batches = match batch_rows {
                        Some(b) => format!(" of each {}", b.display(&graph.symbols)),
                        None => String::new(),
                    };
                    t = format!(
                        "{}\n  # GPU: one block of {} threads per {row_tile} rows{batches} (items of the launch range), in shared memory\n",
                        t.trim_end(),
                        crate::kernel::gpu_schedule::BLOCK,
                    );
                }
                GpuGrid::Tiles { rows_per_item, batch_rows, row_tile, columns, column_tile } => {
                    let batches = match batch_rows {
                        Some(b) => format!(", in batches of {} rows", b.display(&graph.symbols)),
                        None => String::new(),
                    };
                    t = format!(
                        "{}\n  # GPU: one block of {} threads per {row_tile}x{column_tile} tile of a ({}) x {} matrix per item of the launch range{batches}, in shared memory\n",
                        t.trim_end(),
                        crate::kernel::gpu_schedule::BLOCK,
                        rows_per_item.display(&graph.symbols),
                        columns.display(&graph.symbols)
                    );
                }
            }
            // Reassociated reductions only where the backends may fuse operations.
            if let Some(plan) = warp_rows(&s.kernel).filter(|_| opts.fp_contract) {
                t = format!("{}\n{}\n", t.trim_end(), describe_warp_rows(&s.kernel, &plan));
            }
            t
        });
        listings.push((Stage::GpuKernel, text.collect::<Vec<_>>().join("\n")));
    }

    let mut code = Vec::new();
    for (t, backend) in opts.targets.iter().zip(&backends) {
        progress(&format!("generating {t} code with {} ({} kernels)", backend.name(), kernels.len()));
        let listings = wants(Stage::Asm) || wants(Stage::Llvm) || wants(Stage::Amdgcn);
        let codegen =
            CodegenOptions { listings, fp_contract: opts.fp_contract, matrix_instructions: opts.matrix_instructions };
        code.push(backend.compile(&kernels, t, &codegen)?);
    }
    for stage in [Stage::Clif, Stage::Mlir, Stage::Llvm, Stage::Asm, Stage::Ptx, Stage::Amdgcn] {
        if wants(stage) {
            let mut text = String::new();
            for (obj, backend) in code.iter().zip(&backends) {
                match obj.listings.iter().find(|(name, _)| *name == stage.name()).map(|(_, l)| l) {
                    Some(Listing::PerKernel(l)) => {
                        let _ = writeln!(text, "# target {}", obj.target);
                        for (k, body) in kernels.iter().zip(l) {
                            let _ = writeln!(text, "\n# kernel `{}`\n{}", k.name, body.trim_end());
                        }
                    }
                    Some(Listing::Whole(body)) => {
                        let _ = writeln!(text, "# target {}\n{}", obj.target, body.trim_end());
                    }
                    None => {
                        let _ = writeln!(
                            text,
                            "# target {}: backend `{}` has no `{}` stage",
                            obj.target,
                            backend.name(),
                            stage.name()
                        );
                    }
                }
            }
            listings.push((stage, text));
        }
    }

    // GPU code runs the scheduled kernels (the llvm backend schedules them the same way):
    // the artifact says how many threads each item of a launch range is.
    let has_gpu_code = opts.targets.iter().any(|t| target::GPU_TARGETS.contains(&t.as_str()));
    let kernel_specs = program
        .kernels
        .iter()
        .zip(&code[0].symbols)
        .zip(&kernels)
        .map(|((k, sym), expanded)| {
            let scheduled = has_gpu_code.then(|| crate::kernel::gpu_schedule::schedule(expanded));
            let matrix = scheduled
                .as_ref()
                .and_then(|s| s.kernel.matrix_operands())
                .filter(|_| opts.matrix_instructions)
                .map(|d| d.name().to_string());
            let (gpu_threads_per_item, gpu_tiles) = match scheduled.map(|s| s.grid) {
                Some(crate::kernel::gpu_schedule::GpuGrid::Threads(n)) if !n.is_const(1) => (Some(size_expr(&n)), None),
                Some(crate::kernel::gpu_schedule::GpuGrid::Tiles {
                    rows_per_item,
                    batch_rows,
                    row_tile,
                    columns,
                    column_tile,
                }) => {
                    let tiles = TileGrid {
                        rows_per_item: size_expr(&rows_per_item),
                        batch_rows: batch_rows.as_ref().map(size_expr),
                        row_tile: row_tile as u32,
                        columns: size_expr(&columns),
                        column_tile: column_tile as u32,
                        matrix,
                    };
                    (None, Some(tiles))
                }
                _ => (None, None),
            };
            KernelSpec {
                name: k.name.clone(),
                symbol: sym.clone(),
                buffers: k.buffers.len() as u32,
                work_per_item: expanded.work_per_item(),
                gpu_threads_per_item,
                gpu_tiles,
            }
        })
        .collect();
    let manifest = Manifest {
        compiler_version: format!("kiln {}", env!("CARGO_PKG_VERSION")),
        model_name: graph.name.clone(),
        signature: signature(&graph),
        weights: Vec::new(),
        code_objects: Vec::new(),
        kernels: kernel_specs,
        arena_bytes: size_expr(&memory.arena_bytes),
        plan: launch_steps(&program, &memory),
    };
    Ok(Compiled { graph, weights, program, memory, manifest, code, listings, pass_report, ops_in })
}

impl Compiled {
    /// Writes the `.kiln` artifact (atomically) and returns the manifest as stored.
    pub fn write(&self, path: &Path) -> Result<Manifest, ArtifactError> {
        let shapes: Vec<(String, Vec<i64>)> = self
            .graph
            .weights()
            .iter()
            .map(|&v| (self.graph.value(v).name.clone(), self.graph.ty(v).static_shape().unwrap_or_default()))
            .collect();
        let mut weights = Vec::new();
        for (name, shape) in &shapes {
            let t = self
                .weights
                .get(name)
                .ok_or_else(|| ArtifactError::Invalid(format!("no bytes for weight `{name}`")))?;
            weights.push(WeightData { name, dtype: elem_type(t.dtype), shape, bytes: &t.bytes });
        }
        let code: Vec<CodeObjectData> = self
            .code
            .iter()
            .map(|c| CodeObjectData {
                target: &c.target,
                format: &c.format,
                bytes: &c.bytes,
                cpu_features: &c.cpu_features,
            })
            .collect();
        write_artifact(path, &self.manifest, &weights, &code)
    }
}

/// `--emit explain`: for each kernel, the e-graph rules that produced the values it computes
/// (from the rewrites recorded on their e-classes), or that none did.
pub fn explain_report(egraph: Option<&kiln_passes::EgraphReport>, prog: &Program) -> String {
    let mut s = String::new();
    let Some(e) = egraph else {
        return "the e-graph optimizer did not run (--no-egraph or --no-opt)\n".into();
    };
    let _ = writeln!(
        s,
        "e-graph: {} ops in, {} out; {} e-nodes, {} e-classes, {} iterations, stopped: {}",
        e.ops_in, e.ops_out, e.nodes, e.classes, e.iterations, e.stop_reason
    );
    let mut rewritten = 0;
    for (i, k) in prog.kernels.iter().enumerate() {
        let mut rules = BTreeSet::new();
        let mut values = Vec::new();
        for v in &k.fused {
            if let Some(r) = e.explain.get(v) {
                rules.extend(r.iter().cloned());
                values.push(v.as_str());
            }
        }
        if values.is_empty() {
            let _ = writeln!(s, "kernel {i} `{}`: as exported", k.name);
        } else {
            rewritten += 1;
            let rules: Vec<String> = rules.into_iter().collect();
            let _ = writeln!(
                s,
                "kernel {i} `{}`: rewritten by {} (values {})",
                k.name,
                if rules.is_empty() { "(rules on other values)".to_string() } else { rules.join(", ") },
                values.join(", ")
            );
        }
    }
    let _ = writeln!(s, "{rewritten} of {} kernels hold rewritten values", prog.kernels.len());
    s
}

/// `--emit fusion`: each kernel, the graph values it computes and fuses, and the bytes of the
/// fused intermediates that never touch memory; then the memory plan.
pub fn fusion_report(g: &Graph, prog: &Program, memory: &MemoryPlan) -> String {
    let mut s = String::new();
    let bytes_of = |name: &str| -> Dim {
        g.value_named(name)
            .map(|v| Dim::product(&g.ty(v).shape).mul(&Dim::constant(g.ty(v).dtype.size_bytes() as i64)))
            .unwrap_or(Dim::constant(0))
    };
    let mut total_saved = Dim::constant(0);
    for (i, k) in prog.kernels.iter().enumerate() {
        let inlined: Vec<&String> = k.fused.iter().filter(|n| **n != k.name).collect();
        let saved = inlined.iter().fold(Dim::constant(0), |acc, n| acc.add(&bytes_of(n)));
        total_saved = total_saved.add(&saved);
        let ops: Vec<String> = k
            .fused
            .iter()
            .map(|n| {
                let op = g.value_named(n).and_then(|v| match g.value(v).def {
                    kiln_ir::ValueDef::Node(id) => Some(g.node(id).op.name()),
                    _ => None,
                });
                format!("{n}:{}", op.unwrap_or("?"))
            })
            .collect();
        let _ = writeln!(
            s,
            "kernel {i} `{}`: {} ops [{}], keeps {} bytes out of memory",
            k.name,
            k.fused.len(),
            ops.join(" "),
            saved.display(&g.symbols)
        );
    }
    let scratch = prog
        .buffers
        .iter()
        .enumerate()
        .filter(|(i, b)| b.kind == BufferKind::Computed && !prog.outputs.contains(i))
        .count();
    let _ = writeln!(
        s,
        "\n{} kernels; fused intermediates kept out of memory: {} bytes",
        prog.kernels.len(),
        total_saved.display(&g.symbols)
    );
    let _ = writeln!(
        s,
        "memory plan: {scratch} scratch buffers in an arena of {} bytes (peak){}",
        memory.arena_bytes.display(&g.symbols),
        memory.reused_bytes.map(|r| format!(", {r} bytes saved by reuse")).unwrap_or_default()
    );
    s
}
