//! Compiler stages on the fixture models, one criterion group per model (`compile/<model>`):
//!
//! - `frontend_read`: open the `.pt2` zip, decode the ExportedProgram JSON and the weight
//!   configs (`kiln_frontend::open`);
//! - `frontend_lower`: read the weights and lower every ATen node to kiln IR (`Pt2::lower`);
//! - `optimize`: the graph passes (`kiln_passes::optimize`, default options);
//! - `fusion`: lowering the optimized graph to kernels, memory planning and the expansion of
//!   transcendentals (`lower_graph`, `plan_memory`, `math::expand`);
//! - `cranelift_x86_64`: native code for every kernel (`Backend::compile`, no listings);
//! - `whole`: `kiln compile` without the CLI — read, compile with default options, write the
//!   `.kiln` file.
//!
//! Run with `cargo bench --bench compiler`; see docs/benchmarks.md.

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use kiln_codegen::kernel::{lower_graph, math};
use kiln_codegen::plan::plan_memory;
use kiln_codegen::target;
use std::hint::black_box;

fn stages(c: &mut Criterion) {
    for &m in common::MODELS {
        let archive = common::archive(m);
        let mut g = c.benchmark_group(format!("compile/{m}"));
        // Each iteration takes milliseconds to a second: fewer samples keep a run short.
        g.sample_size(10);

        g.bench_function("frontend_read", |b| b.iter(|| kiln_frontend::open(&archive).unwrap()));
        g.bench_function("frontend_lower", |b| {
            b.iter_batched(
                || kiln_frontend::open(&archive).unwrap(),
                |mut pt2| pt2.lower().unwrap(),
                BatchSize::PerIteration,
            )
        });

        let model = kiln_frontend::load(&archive).unwrap();
        let passes = kiln_passes::Options::default();
        g.bench_function("optimize", |b| {
            b.iter(|| kiln_passes::optimize(&model.graph, &model.weights, &passes).unwrap())
        });

        let (graph, _, _) = kiln_passes::optimize(&model.graph, &model.weights, &passes).unwrap();
        g.bench_function("fusion", |b| {
            b.iter(|| {
                let program = lower_graph(&graph).unwrap();
                let memory = plan_memory(&graph, &program);
                let kernels: Vec<_> = program.kernels.iter().map(math::expand).collect();
                black_box((program, memory, kernels))
            })
        });

        let program = lower_graph(&graph).unwrap();
        let kernels: Vec<_> = program.kernels.iter().map(math::expand).collect();
        let backend = target::lookup(target::DEFAULT_BACKEND).unwrap();
        g.bench_function("cranelift_x86_64", |b| {
            b.iter(|| backend.compile(&kernels, "x86_64", &Default::default()).unwrap())
        });

        let out = common::scratch(&format!("{m}.compile.kiln"));
        g.bench_function("whole", |b| b.iter(|| common::compile_to(&archive, &out)));
        g.finish();
    }
}

criterion_group!(benches, stages);
criterion_main!(benches);
