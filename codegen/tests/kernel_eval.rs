//! Every fixture, lowered to kernels and run by the kernel IR evaluator, matches PyTorch within
//! the fixtures' tolerance (rtol 1e-4, atol 1e-5) and the graph interpreter within rtol 1e-5,
//! atol 1e-5 — fusion and lowering are checked independently of backends. (Kernels accumulate
//! f32 sums and products in f32, the interpreter in f64; the differences seen are below 6e-6.)

use kiln_codegen::kernel::{
    eval::{run_program, run_program_launched},
    lower_graph,
};
use kiln_ir::{npz, tensor::compare, Tensor};
use std::path::PathBuf;

#[path = "common/attention.rs"]
mod attention;

const MODELS: &[&str] = &["mlp", "resblock", "encoder", "gpt", "mobile", "dynbatch", "views", "dynseq"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn inputs_for(g: &kiln_ir::Graph, file: &str) -> Vec<Tensor> {
    let arrays = npz::read_npz(&fixture(file)).unwrap();
    g.inputs().iter().map(|&v| arrays.iter().find(|(k, _)| *k == g.value(v).name).unwrap().1.clone()).collect()
}

/// Inputs of `g` (static shapes) whose values cycle through 1013 steps of `1 / scale` from
/// `-offset`, a different phase per input.
fn ramps(g: &kiln_ir::Graph, scale: f64, offset: f64) -> Vec<Tensor> {
    g.inputs()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let shape: Vec<usize> = g.ty(v).static_shape().unwrap().iter().map(|&s| s as usize).collect();
            let n: usize = shape.iter().product();
            let seed = i as u64 + 1;
            let values: Vec<f64> =
                (0..n as u64).map(|j| ((j * 7919 + seed * 104729) % 1013) as f64 / scale - offset).collect();
            Tensor::from_f64(g.ty(v).dtype, shape, &values)
        })
        .collect()
}

#[test]
fn lowered_kernels_match_the_interpreter_on_every_fixture() {
    let mut bad = Vec::new();
    for m in MODELS {
        for form in ["aten", "core"] {
            let model = kiln_frontend::load(&fixture(&format!("{m}.t215.{form}.pt2"))).unwrap();
            let lowered = lower_graph(&model.graph).unwrap_or_else(|e| panic!("{m}.{form}: {e}"));
            // Both as lowered and with kiln's transcendental expansions, as backends see it.
            let mut expanded = lowered.clone();
            expanded.kernels = expanded.kernels.iter().map(kiln_codegen::kernel::math::expand).collect();
            // And scheduled as the GPU targets run them (one thread per element where sound).
            // Each launch covers the plan's range times the kernel's threads per item, as
            // the GPU devices launch it.
            let mut gpu = expanded.clone();
            let scheduled: Vec<_> = gpu.kernels.iter().map(kiln_codegen::kernel::gpu_schedule::schedule).collect();
            let grids: Vec<_> = scheduled.iter().map(|s| s.grid.clone()).collect();
            gpu.kernels = scheduled.into_iter().map(|s| s.kernel).collect();
            for (variant, prog) in [("lowered", &lowered), ("expanded", &expanded), ("gpu-scheduled", &gpu)] {
                let sets: &[&str] = if ["dynbatch", "dynseq"].contains(m) { &["in", "in2"] } else { &["in"] };
                for set in sets {
                    let inputs = inputs_for(&model.graph, &format!("{m}.t215.{set}.npz"));
                    let interp = kiln_ir::interp::run(&model.graph, &model.weights, &inputs).unwrap();
                    let torch = npz::read_npz(&fixture(&format!("{m}.t215.{}.npz", set.replace("in", "out")))).unwrap();
                    let grids: &[_] = if variant == "gpu-scheduled" { &grids } else { &[] };
                    let got = run_program_launched(&model.graph, prog, &model.weights, &inputs, grids)
                        .unwrap_or_else(|e| panic!("{m}.{form}: {e}"));
                    for (i, g) in got.iter().enumerate() {
                        for (what, want, rtol, atol) in
                            [("interpreter", &interp[i], 1e-5, 1e-5), ("pytorch", &torch[i].1, 1e-4, 1e-5)]
                        {
                            match compare(g, want, rtol, atol) {
                                Some(c) if c.bad == 0 => {}
                                other => {
                                    bad.push(format!("{m}.{form}.{set} ({variant}) output {i} vs {what}: {other:?}"))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// A row statistic read through a view that flattens the batch into the rows (a GPT-2 layer
/// norm feeding a 2-D linear layer: the stats of row `i0` at `[(8·i0 + i1) // 32,
/// ((8·i0 + i1) // 8) % 4]`, which names the column `i1` but does not depend on it) is
/// computed once per row, in the row loop, not once per element; and the kernel still matches
/// the interpreter. (Before the hoisting read indices through the loops' ranges, GPT-2 small's
/// layer norms recomputed their mean and variance for each of the 768 elements of a row.)
#[test]
fn row_statistics_read_through_a_view_are_computed_once_per_row() {
    use kiln_codegen::kernel::{LoopKind, Stmt};
    let text = "graph ln_view\ninput %x: f32[2, 4, 8]\n\
                %m: f32[2, 4, 1] = reduce_mean{axes=[2], keepdim=true} %x\n\
                %d: f32[2, 4, 8] = sub %x, %m\n%y: f32[8, 8] = reshape{shape=[8, 8]} %d\noutput \"y\" %y";
    let g = kiln_ir::text::parse(text).unwrap();
    let lowered = lower_graph(&g).unwrap();
    let [k] = lowered.kernels.as_slice() else { panic!("{} kernels", lowered.kernels.len()) };
    let [Stmt::Loop { kind: LoopKind::Parallel, body, .. }] = k.body.as_slice() else { panic!("{:?}", k.body) };
    // The row loop's body: the statistic (its accumulator and reduction loop), then the
    // element loop, which declares nothing.
    assert!(matches!(body.first(), Some(Stmt::Decl { .. })), "the mean is not computed per row: {body:?}");
    let Some(Stmt::Loop { body: elements, .. }) = body.last() else { panic!("{body:?}") };
    assert!(!elements.iter().any(|s| matches!(s, Stmt::Decl { .. } | Stmt::Loop { .. })), "{elements:?}");
    let inputs = ramps(&g, 7.0, 0.5);
    let got = run_program(&g, &lowered, &Default::default(), &inputs).unwrap();
    let want = kiln_ir::interp::run(&g, &Default::default(), &inputs).unwrap();
    let c = compare(&got[0], &want[0], 1e-5, 1e-5).unwrap();
    assert_eq!(c.bad, 0, "{c:?}");
}

/// The kernels as the full pipeline makes them (graph passes and the e-graph optimizer, where
/// matmul rows become the form [`kiln_codegen::kernel::gpu_tiles`] tiles), GPU-scheduled and
/// launched with their grids, match the interpreter of the graph as loaded and PyTorch: every
/// matmul in shared-memory tiles runs block by block, with the barrier checks of the evaluator.
#[test]
fn optimized_gpu_scheduled_kernels_match_the_interpreter() {
    use kiln_codegen::compile::{compile, CompileOptions};
    use kiln_codegen::kernel::gpu_schedule::{schedule, GpuGrid};
    let mut bad = Vec::new();
    let mut tiled = 0;
    for m in MODELS {
        let model = kiln_frontend::load(&fixture(&format!("{m}.t215.aten.pt2"))).unwrap();
        let c = compile(&model.graph, &model.weights, &CompileOptions::default(), &mut |_| {})
            .unwrap_or_else(|e| panic!("{m}: {e}"));
        let mut gpu = c.program.clone();
        let scheduled: Vec<_> = gpu.kernels.iter().map(|k| schedule(&kiln_codegen::kernel::math::expand(k))).collect();
        tiled += scheduled.iter().filter(|s| matches!(s.grid, GpuGrid::Tiles { .. })).count();
        let grids: Vec<_> = scheduled.iter().map(|s| s.grid.clone()).collect();
        gpu.kernels = scheduled.into_iter().map(|s| s.kernel).collect();
        let sets: &[&str] = if ["dynbatch", "dynseq"].contains(m) { &["in", "in2"] } else { &["in"] };
        for set in sets {
            let inputs = inputs_for(&model.graph, &format!("{m}.t215.{set}.npz"));
            let interp = kiln_ir::interp::run(&model.graph, &model.weights, &inputs).unwrap();
            let torch = npz::read_npz(&fixture(&format!("{m}.t215.{}.npz", set.replace("in", "out")))).unwrap();
            let optimized_inputs = inputs_for(&c.graph, &format!("{m}.t215.{set}.npz"));
            let got = run_program_launched(&c.graph, &gpu, &c.weights, &optimized_inputs, &grids)
                .unwrap_or_else(|e| panic!("{m}: {e}"));
            for (i, g) in got.iter().enumerate() {
                for (what, want) in [("interpreter", &interp[i]), ("pytorch", &torch[i].1)] {
                    match compare(g, want, 1e-4, 1e-5) {
                        Some(c) if c.bad == 0 => {}
                        other => bad.push(format!("{m}.{set} output {i} vs {what}: {other:?}")),
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(tiled >= 10, "only {tiled} kernels in tiles");
}

/// Matrix products in shared-memory tiles, of both tile shapes, with ragged edges (rows,
/// columns and steps that no tile size divides) and an epilogue; a batched matmul (B differs
/// per batch); convolutions as implicit matrix products (output channels × output pixels per
/// image, input channels × kernel taps along `k`; stride 1 with padding, stride 2 without):
/// bit for bit the lowered row kernels' results (each element sums in the same order), and
/// the interpreter's within f32.
#[test]
fn matrix_products_in_tiles_match_the_row_kernels_bit_for_bit() {
    use kiln_codegen::kernel::gpu_schedule::{schedule, GpuGrid};
    let conv = |stride: i64| {
        format!(
            "conv{{stride=[{stride}, {stride}], padding=[0, 0], dilation=[1, 1], groups=1, transposed=false, output_padding=[0, 0]}}"
        )
    };
    let cases = [
        // SMALL tiles (64 x 64): 70 rows, 33 columns, 19 steps.
        (
            "small",
            "%x: f32[70, 19]",
            "%w: f32[19, 33]",
            "%b: f32[33]",
            "%y: f32[70, 33] = matmul %x, %w",
            "[70, 33]",
            64,
            false,
        ),
        // LARGE tiles (128 x 128): 130 rows, 140 columns, 40 steps.
        (
            "large",
            "%x: f32[130, 40]",
            "%w: f32[40, 140]",
            "%b: f32[140]",
            "%y: f32[130, 140] = matmul %x, %w",
            "[130, 140]",
            128,
            false,
        ),
        // x @ wᵀ with w stored 150 x 40: one dot product per element as lowered, tiled in
        // its row form (LARGE: 130 x 150).
        (
            "dot",
            "%x: f32[130, 40]",
            "%w: f32[150, 40]",
            "%b: f32[150]",
            "%t: f32[40, 150] = permute{perm=[1, 0]} %w\n%y: f32[130, 150] = matmul %x, %t",
            "[130, 150]",
            128,
            false,
        ),
        // Batched: 3 matrices of 40 x 17 times 17 x 30.
        (
            "batched",
            "%x: f32[3, 40, 17]",
            "%w: f32[3, 17, 30]",
            "%b: f32[30]",
            "%y: f32[3, 40, 30] = matmul %x, %w",
            "[3, 40, 30]",
            64,
            true,
        ),
        // 24 output channels of 9 x 9 pixels, 5 x 3 x 3 steps, 2 images. (Unpadded: the
        // optimizer pads into a buffer of its own; padding inside the kernel splits the rows
        // into edge loops, which stay one thread per element.)
        (
            "conv",
            "%x: f32[2, 5, 11, 11]",
            "%w: f32[24, 5, 3, 3]",
            "%b: f32[9]",
            &format!("%y: f32[2, 24, 9, 9] = {} %x, %w", conv(1)),
            "[2, 24, 9, 9]",
            64,
            true,
        ),
        // Stride 2, no padding: 20 channels of 5 x 5.
        (
            "conv_s2",
            "%x: f32[2, 6, 11, 11]",
            "%w: f32[20, 6, 3, 3]",
            "%b: f32[5]",
            &format!("%y: f32[2, 20, 5, 5] = {} %x, %w", conv(2)),
            "[2, 20, 5, 5]",
            64,
            true,
        ),
    ];
    for (name, x, w, b, op, shape, tile, batched) in cases {
        let text = format!(
            "graph {name}\ninput {x}\ninput {w}\ninput {b}\n{op}\n%z: f32{shape} = add %y, %b\n\
             %r: f32{shape} = relu %z\noutput \"r\" %r"
        );
        let g = kiln_ir::text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let inputs = ramps(&g, 253.0, 2.0);
        let lowered = lower_graph(&g).unwrap();
        let scheduled: Vec<_> = lowered.kernels.iter().map(schedule).collect();
        let tiled: Vec<_> = scheduled.iter().filter(|s| matches!(s.grid, GpuGrid::Tiles { .. })).collect();
        assert_eq!(tiled.len(), 1, "{name}: the product (with its epilogue) in tiles");
        let GpuGrid::Tiles { row_tile, column_tile, batch_rows, .. } = &tiled[0].grid else { unreachable!() };
        assert_eq!((*row_tile, *column_tile, batch_rows.is_some()), (tile, tile, batched), "{name}");
        let grids: Vec<_> = scheduled.iter().map(|s| s.grid.clone()).collect();
        let mut gpu = lowered.clone();
        gpu.kernels = scheduled.into_iter().map(|s| s.kernel).collect();
        let want = run_program(&g, &lowered, &Default::default(), &inputs).unwrap();
        let got = run_program_launched(&g, &gpu, &Default::default(), &inputs, &grids).unwrap();
        assert_eq!(got[0].to_f64(), want[0].to_f64(), "{name}: not bit for bit");
        let interp = kiln_ir::interp::run(&g, &Default::default(), &inputs).unwrap();
        let c = compare(&got[0], &interp[0], 1e-5, 1e-5).unwrap();
        assert_eq!(c.bad, 0, "{name}: {c:?}");
    }
}

/// Fused attention (which only the e-graph optimizer makes, so no fixture has it as loaded):
/// the flash-attention loop nest matches the interpreter's decomposed softmax for every scale
/// and mask form, with leading masked keys, and gives NaN for a fully masked row as it does.
#[test]
fn fused_attention_matches_the_interpreter() {
    for (g, inputs) in attention::cases() {
        let lowered = lower_graph(&g).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        // One kernel, writing only the output: no score matrix.
        assert_eq!(lowered.kernels.len(), 1, "{}", g.name);
        let text = kiln_codegen::kernel::text::print_kernel(&lowered.kernels[0], &g.symbols);
        let written = lowered.kernels[0].buffers.iter().filter(|b| b.access == kiln_codegen::kernel::Access::Write);
        assert_eq!(written.count(), 1, "{}\n{text}", g.name);
        let mut expanded = lowered.clone();
        expanded.kernels = expanded.kernels.iter().map(kiln_codegen::kernel::math::expand).collect();
        let want = kiln_ir::interp::run(&g, &Default::default(), &inputs).unwrap();
        for prog in [&lowered, &expanded] {
            let got = run_program(&g, prog, &Default::default(), &inputs).unwrap();
            let c = compare(&got[0], &want[0], 1e-5, 1e-6).unwrap();
            assert_eq!(c.bad, 0, "{}: {c:?}", g.name);
        }
        let nan_rows = want[0].to_f64().iter().filter(|x| x.is_nan()).count();
        assert_eq!(nan_rows > 0, g.name == "masked", "{}: only the fully masked row is NaN", g.name);
    }
}

/// Fused attention in its GPU form (blocks of 32 queries, keys and values staged in shared
/// memory, run block by block with the evaluator's barrier checks): bit for bit the row
/// kernel's results — NaN rows included — and the interpreter's within f32, for the mask and
/// broadcast cases above and for sizes that no tile divides: 70 queries (3 query tiles), 75
/// keys (the last tile has 2 groups of 4 keys, then 3 single keys), value dims that 8 threads
/// do not divide, head dims above 64 (tiles of 16 keys), and symbolic lengths.
#[test]
fn fused_attention_in_gpu_blocks_matches_the_row_kernel_bit_for_bit() {
    use kiln_codegen::kernel::gpu_schedule::{schedule, GpuGrid};
    let wide = "graph wide
        input %q: f32[2, 70, 64]
        input %k: f32[2, 75, 64]
        input %v: f32[2, 75, 44]
        input %keep: bool[70, 75]
        %y: f32[2, 70, 44] = attention{scale=mul(0.125), masks=[keep(-inf)]} %q, %k, %v, %keep
        output \"y\" %y";
    let deep = "graph deep
        input %q: f32[3, 40, 80]
        input %k: f32[1, 37, 80]
        input %v: f32[1, 37, 72]
        input %bias: f32[3, 1, 37]
        %y: f32[3, 40, 72] = attention{scale=div(8.94427190999916), masks=[add]} %q, %k, %v, %bias
        output \"y\" %y";
    let dynamic = "graph dynamic
        sym s in [1, 128]
        input %q: f32[2, s, 64]
        input %k: f32[2, s, 64]
        input %v: f32[2, s, 64]
        %y: f32[2, s, 64] = attention{scale=mul(0.125), masks=[]} %q, %k, %v
        output \"y\" %y";
    let parse = |text: &str| {
        let text: String = text.lines().map(str::trim).collect::<Vec<_>>().join("\n");
        kiln_ir::text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    };
    let values = |g: &kiln_ir::Graph, shapes: &[Vec<usize>]| -> Vec<Tensor> {
        g.inputs()
            .iter()
            .zip(shapes)
            .enumerate()
            .map(|(i, (&v, shape))| {
                let n: usize = shape.iter().product();
                let cols = *shape.last().unwrap() as u64;
                if g.ty(v).dtype == kiln_ir::DType::Bool {
                    // Causal-style: row 0 masked entirely (a NaN row), row r keeps keys r-1..
                    let bits =
                        (0..n as u64).map(|j| (j / cols > 0 && j % cols + 1 >= j / cols) as i64).collect::<Vec<_>>();
                    return Tensor::from_i64(kiln_ir::DType::Bool, shape.clone(), &bits);
                }
                let seed = i as u64 + 1;
                let x: Vec<f64> =
                    (0..n as u64).map(|j| ((j * 7919 + seed * 104729) % 1013) as f64 / 253.0 - 2.0).collect();
                Tensor::from_f64(kiln_ir::DType::F32, shape.clone(), &x)
            })
            .collect()
    };
    let static_shapes = |g: &kiln_ir::Graph| -> Vec<Vec<usize>> {
        g.inputs().iter().map(|&v| g.ty(v).static_shape().unwrap().iter().map(|&s| s as usize).collect()).collect()
    };
    let mut cases: Vec<(String, kiln_ir::Graph, Vec<Tensor>)> = Vec::new();
    for (g, inputs) in attention::cases() {
        if g.ty(g.inputs()[0]).dtype == kiln_ir::DType::F32 {
            cases.push((g.name.clone(), g, inputs));
        }
    }
    for text in [wide, deep] {
        let g = parse(text);
        let inputs = values(&g, &static_shapes(&g));
        cases.push((g.name.clone(), g, inputs));
    }
    for s in [45, 70] {
        let g = parse(dynamic);
        let inputs = values(&g, &[vec![2, s, 64], vec![2, s, 64], vec![2, s, 64]]);
        cases.push((format!("dynamic s={s}"), g, inputs));
    }
    let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    for (name, g, inputs) in &cases {
        let lowered = lower_graph(g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expanded: Vec<_> = lowered.kernels.iter().map(kiln_codegen::kernel::math::expand).collect();
        let scheduled: Vec<_> = expanded.iter().map(schedule).collect();
        assert_eq!(scheduled.len(), 1, "{name}");
        let GpuGrid::Tiles { row_tile: 32, column_tile: 1, batch_rows: Some(_), .. } = &scheduled[0].grid else {
            panic!("{name}: not in blocks: {:?}", scheduled[0].grid);
        };
        let mut rows = lowered.clone();
        rows.kernels = expanded.clone();
        let mut gpu = lowered.clone();
        gpu.kernels = scheduled.iter().map(|s| s.kernel.clone()).collect();
        let grids: Vec<_> = scheduled.iter().map(|s| s.grid.clone()).collect();
        let want = run_program(g, &rows, &Default::default(), inputs).unwrap();
        let got = run_program_launched(g, &gpu, &Default::default(), inputs, &grids)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (w, o) = (want[0].to_f64(), got[0].to_f64());
        let differ = w.iter().zip(&o).filter(|(a, b)| !same(**a, **b)).count();
        assert_eq!(differ, 0, "{name}: {differ} of {} elements differ from the row kernel's", w.len());
        // The fixtures' tolerance: sums of up to 75 f32 products (the interpreter sums in f64).
        let interp = kiln_ir::interp::run(g, &Default::default(), inputs).unwrap();
        let c = compare(&got[0], &interp[0], 1e-4, 1e-5).unwrap();
        assert_eq!(c.bad, 0, "{name}: {c:?}");
    }
}

/// f16 and bf16 matrix products in tensor-core tiles (64 × 64 per block, panels of 32 steps
/// in shared memory, each warp's part as warp matrix multiply-accumulates in NVIDIA's 16 × 8
/// layout, AMD CDNA's 16 × 16 (wavefronts of 64) or RDNA 3's 16 × 16 (wavefronts of 32), run
/// by the evaluator in their per-thread form): bit for
/// bit the row kernels' results, and the interpreter's within the dtype's rounding — for sizes
/// no tile divides (70 rows, 40 steps, 33 columns), rows in two levels (a batch of 2 × 35), a
/// batched product (3 matrices, the second factor per batch), `x @ wᵀ` with `w` stored
/// `n × k`, a batched product whose heads a view merges into the columns, and the bias and
/// ReLU that follow.
#[test]
fn half_precision_products_in_tensor_core_tiles_match_the_row_kernels_bit_for_bit() {
    let cases = [
        ("plain", "%x: {t}[70, 40]", "%w: {t}[40, 33]", "%y: {t}[70, 33] = matmul %x, %w", "[70, 33]"),
        ("batched_rows", "%x: {t}[2, 35, 40]", "%w: {t}[40, 33]", "%y: {t}[2, 35, 33] = matmul %x, %w", "[2, 35, 33]"),
        ("batched", "%x: {t}[3, 40, 24]", "%w: {t}[3, 24, 33]", "%y: {t}[3, 40, 33] = matmul %x, %w", "[3, 40, 33]"),
        (
            "transposed",
            "%x: {t}[70, 40]",
            "%w: {t}[33, 40]",
            "%p: {t}[40, 33] = permute{{perm=[1, 0]}} %w\n%y: {t}[70, 33] = matmul %x, %p",
            "[70, 33]",
        ),
        (
            // Attention's `p @ v` with its heads merged back by a view: one matrix per batch
            // and head, found by splitting the merged rows and columns.
            "heads",
            "%x: {t}[2, 3, 40, 24]",
            "%w: {t}[2, 3, 24, 11]",
            "%o: {t}[2, 3, 40, 11] = matmul %x, %w\n%p: {t}[2, 40, 3, 11] = permute{{perm=[0, 2, 1, 3]}} %o\n\
             %y: {t}[80, 33] = reshape{{shape=[80, 33]}} %p",
            "[80, 33]",
        ),
    ];
    for (dtype, layout) in HALF_LAYOUTS {
        for (graph_name, x, w, op, shape) in cases {
            let fill = |s: &str| s.replace("{t}", dtype).replace("{{", "{").replace("}}", "}");
            let text = format!(
                "graph {graph_name}\ninput {}\ninput {}\ninput %b: {dtype}[33]\n{}\n%z: {dtype}{shape} = add %y, %b\n\
                 %r: {dtype}{shape} = relu %z\noutput \"r\" %r",
                fill(x),
                fill(w),
                fill(op)
            );
            assert_tensor_core_tiles_match(&text, dtype, layout, ["batched", "heads"].contains(&graph_name));
        }
    }
}

/// f16 and bf16 convolutions with what follows them (bias, ReLU, a residual add, a second
/// convolution of the same input as in a ResNet's downsampling block) in tensor-core tiles as
/// implicit GEMMs — rows the batch's output channels, columns the output pixels, the input
/// channels and kernel window one reduction: bit for bit the row kernels' results, for
/// padding in the kernel (a padded input's zeros in the `B` panel), strides, a batch of two
/// (one matrix per image) and channel counts no panel divides.
#[test]
fn half_precision_convolutions_in_tensor_core_tiles_match_the_row_kernels_bit_for_bit() {
    let conv = |stride: i64, pad: i64| {
        format!(
            "conv{{stride=[{stride}, {stride}], padding=[{pad}, {pad}], dilation=[1, 1], groups=1, transposed=false, \
             output_padding=[0, 0]}}"
        )
    };
    let cases = [
        (
            "padded",
            "input %x: {t}[2, 8, 9, 10]\ninput %w: {t}[20, 8, 3, 3]\ninput %b: {t}[20, 1, 1]\n".to_string(),
            format!("%y: {{t}}[2, 20, 9, 10] = {} %x, %w\n%z: {{t}}[2, 20, 9, 10] = add %y, %b", conv(1, 1)),
            "[2, 20, 9, 10]",
        ),
        (
            "strided",
            "input %x: {t}[1, 16, 11, 11]\ninput %w: {t}[32, 16, 3, 3]\ninput %b: {t}[32, 1, 1]\n".to_string(),
            format!("%y: {{t}}[1, 32, 5, 5] = {} %x, %w\n%z: {{t}}[1, 32, 5, 5] = add %y, %b", conv(2, 0)),
            "[1, 32, 5, 5]",
        ),
        (
            "downsample",
            "input %x: {t}[1, 16, 12, 12]\ninput %w: {t}[32, 16, 3, 3]\ninput %d: {t}[32, 16, 1, 1]\n\
             input %b: {t}[32, 1, 1]\n"
                .to_string(),
            format!(
                "%y: {{t}}[1, 32, 6, 6] = {} %x, %w\n%s: {{t}}[1, 32, 6, 6] = {} %x, %d\n\
                 %u: {{t}}[1, 32, 6, 6] = add %y, %b\n%z: {{t}}[1, 32, 6, 6] = add %u, %s",
                conv(2, 1),
                conv(2, 0)
            ),
            "[1, 32, 6, 6]",
        ),
    ];
    // Each dtype and each layout once (the products' test runs every pair).
    for (dtype, layout) in [HALF_LAYOUTS[0], HALF_LAYOUTS[3], HALF_LAYOUTS[4], HALF_LAYOUTS[7]] {
        for (graph_name, inputs, ops, shape) in &cases {
            let fill = |s: &str| s.replace("{t}", dtype);
            let text = format!(
                "graph {graph_name}\n{}{}\n%r: {dtype}{shape} = relu %z\noutput \"r\" %r",
                fill(inputs),
                fill(ops)
            );
            assert_tensor_core_tiles_match(&text, dtype, layout, graph_name == &"padded");
        }
    }
}

/// The f16 fixtures exported by PyTorch through the full pipeline, their kernels as each GPU
/// layout schedules them, run by the evaluator block by block: the CPU kernels' results bit
/// for bit, and PyTorch's outputs within f16's tolerance (1e-2, as PyTorch's CPU rounds its
/// intermediate f16 results its own way), in both IR forms. `half` (a CNN and a token MLP):
/// every convolution (a ResNet downsampling block's two in one kernel) and the linear layer
/// in tensor-core tiles. `gpt_half` (the gpt model in f16 at 32 tokens): every linear layer
/// and the LM head, and in the aten form attention's `q @ kᵀ` and `p @ v` per batch and head
/// (`p @ v` in the kernel of the view that merges the heads, split into its matrices); the
/// core form's attention computes in f32 (PyTorch's decomposition upcasts it).
#[test]
fn half_precision_fixtures_in_tensor_core_tiles_match_the_cpu_kernels_and_pytorch() {
    use kiln_codegen::compile::{compile, CompileOptions};
    use kiln_codegen::kernel::gpu_schedule::schedule_for;
    for (fixture_name, on_tensor_cores) in [("half", [4, 4]), ("gpt_half", [13, 9])] {
        let torch = npz::read_npz(&fixture(&format!("{fixture_name}.t215.out.npz"))).unwrap();
        for (form, expected) in ["aten", "core"].into_iter().zip(on_tensor_cores) {
            let model = kiln_frontend::load(&fixture(&format!("{fixture_name}.t215.{form}.pt2"))).unwrap();
            let c = compile(&model.graph, &model.weights, &CompileOptions::default(), &mut |_| {})
                .unwrap_or_else(|e| panic!("{fixture_name} ({form}): {e}"));
            let inputs = inputs_for(&c.graph, &format!("{fixture_name}.t215.in.npz"));
            let mut cpu = c.program.clone();
            cpu.kernels = cpu.kernels.iter().map(kiln_codegen::kernel::math::expand).collect();
            let want = run_program(&c.graph, &cpu, &c.weights, &inputs).unwrap();
            for (dtype, layout) in [HALF_LAYOUTS[0], HALF_LAYOUTS[2], HALF_LAYOUTS[4], HALF_LAYOUTS[6]] {
                assert_eq!(dtype, "f16");
                let name = format!("{fixture_name} ({form}, {layout:?})");
                let scheduled: Vec<_> = cpu.kernels.iter().map(|k| schedule_for(k, layout)).collect();
                let on_matrix = scheduled.iter().filter(|s| s.kernel.matrix_operands().is_some()).count();
                assert_eq!(on_matrix, expected, "{name}: kernels in tensor-core tiles");
                let mut gpu = cpu.clone();
                gpu.kernels = scheduled.iter().map(|s| s.kernel.clone()).collect();
                let grids: Vec<_> = scheduled.iter().map(|s| s.grid.clone()).collect();
                let got = run_program_launched(&c.graph, &gpu, &c.weights, &inputs, &grids)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let (g64, w64) = (g.to_f64(), w.to_f64());
                    let differ = g64.iter().zip(&w64).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                    assert_eq!(differ, 0, "{name}: output {i}: {differ} elements differ from the CPU kernels'");
                    let c = compare(g, &torch[i].1, 1e-2, 1e-2).unwrap();
                    assert_eq!(c.bad, 0, "{name}: output {i} vs PyTorch: {c:?}");
                }
            }
        }
    }
}

/// The half-precision types and the matrix instructions' layouts the tensor-core tiles are
/// checked with.
const HALF_LAYOUTS: [(&str, kiln_codegen::kernel::MmaLayout); 8] = {
    use kiln_codegen::kernel::MmaLayout::{Cdna16x16, Hopper64x32, Nvidia16x8, Rdna16x16};
    [
        ("f16", Nvidia16x8),
        ("bf16", Nvidia16x8),
        ("f16", Cdna16x16),
        ("bf16", Cdna16x16),
        ("f16", Rdna16x16),
        ("bf16", Rdna16x16),
        ("f16", Hopper64x32),
        ("bf16", Hopper64x32),
    ]
};

/// Lowers graph `text` (one product, in `dtype`) and checks that exactly one kernel goes to
/// tensor-core tiles for `layout` (one matrix per batch when `batched`), with half-precision
/// panels, and that the program computes the row kernels' results bit for bit and the
/// interpreter's within two units in the last place of `dtype`.
fn assert_tensor_core_tiles_match(text: &str, dtype: &str, layout: kiln_codegen::kernel::MmaLayout, batched: bool) {
    use kiln_codegen::kernel::gpu_schedule::{schedule_for, GpuGrid};
    use kiln_codegen::kernel::Access;
    let g = kiln_ir::text::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let name = &format!("{dtype} {} ({layout:?})", g.name);
    let inputs = ramps(&g, 506.0, 1.0);
    let lowered = lower_graph(&g).unwrap();
    let expanded: Vec<_> = lowered.kernels.iter().map(kiln_codegen::kernel::math::expand).collect();
    let scheduled: Vec<_> = expanded.iter().map(|k| schedule_for(k, layout)).collect();
    let tensor_core: Vec<_> = scheduled.iter().filter(|s| s.kernel.matrix_operands().is_some()).collect();
    assert_eq!(tensor_core.len(), 1, "{name}: the product in tensor-core tiles");
    let GpuGrid::Tiles { row_tile: 64, column_tile: 64, batch_rows, .. } = &tensor_core[0].grid else {
        panic!("{name}: {:?}", tensor_core[0].grid)
    };
    assert_eq!(batch_rows.is_some(), batched, "{name}: one matrix per batch");
    let shared: Vec<_> = tensor_core[0].kernel.buffers.iter().filter(|b| b.access == Access::Shared).collect();
    assert!(shared.len() == 2 && shared.iter().all(|b| b.dtype.name() == dtype), "{name}");
    assert_eq!(tensor_core[0].kernel.matrix_operands().map(|d| d.name()), Some(dtype), "{name}");
    let mut rows = lowered.clone();
    rows.kernels = expanded.clone();
    let mut gpu = lowered.clone();
    gpu.kernels = scheduled.iter().map(|s| s.kernel.clone()).collect();
    let grids: Vec<_> = scheduled.iter().map(|s| s.grid.clone()).collect();
    let want = run_program(&g, &rows, &Default::default(), &inputs).unwrap();
    let got =
        run_program_launched(&g, &gpu, &Default::default(), &inputs, &grids).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (w, o) = (want[0].to_f64(), got[0].to_f64());
    let differ = w.iter().zip(&o).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differ, 0, "{name}: {differ} of {} elements differ from the row kernel's", w.len());
    // Within two units in the last place of the dtype (bf16 keeps 8 bits, f16 11).
    let interp = kiln_ir::interp::run(&g, &Default::default(), &inputs).unwrap();
    let rtol = if dtype == "bf16" { 2.0 / 128.0 } else { 2.0 / 1024.0 };
    let c = compare(&got[0], &interp[0], rtol, rtol).unwrap();
    assert_eq!(c.bad, 0, "{name}: {c:?}");
}
