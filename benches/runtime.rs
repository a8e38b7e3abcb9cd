//! The runtime on compiled fixture models, one criterion group per model (`runtime/<model>`):
//!
//! - `load`: `Model::load` of the `.kiln` artifact (map the file, check it, load and relocate
//!   the code, start the thread pool);
//! - `run/threads=N`: one `Model::run` on the fixture's inputs (`<model>.t215.in.npz`), with a
//!   pool of 1 thread and of all cores.
//!
//! The models are compiled once, before measuring, into the target directory. Run with
//! `cargo bench --bench runtime`; see docs/benchmarks.md.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_runtime::exec::{LoadOptions, Model};

fn runtime(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut thread_counts = vec![1, cores];
    thread_counts.dedup();
    for &m in common::MODELS {
        let artifact = common::scratch(&format!("{m}.runtime.kiln"));
        common::compile_to(&common::archive(m), &artifact);
        let mut g = c.benchmark_group(format!("runtime/{m}"));
        g.bench_function("load", |b| b.iter(|| Model::load(&artifact).unwrap()));
        for &threads in &thread_counts {
            let model = Model::load_with(&artifact, &LoadOptions { threads }).unwrap();
            let inputs = common::inputs(m, model.signature());
            model.run(&inputs).unwrap();
            g.bench_function(format!("run/threads={threads}"), |b| b.iter(|| model.run(&inputs).unwrap()));
        }
        g.finish();
    }
}

criterion_group!(benches, runtime);
criterion_main!(benches);
