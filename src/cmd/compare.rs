//! `kiln run M.kiln --device D --compare-steps OTHER`: runs a compiled model on two devices
//! side by side, step by step, and reports every step of the plan after which the buffers it
//! used (other than inputs and weights) differ between them, bit for bit — the first such
//! step's kernel is where the two devices' code parts ways. Meant for artifacts compiled with
//! `--no-fp-contract`, whose GPU code must reproduce the CPU code exactly; with FMA
//! contraction small differences are expected and the report says how large they are.

use anyhow::{Context, Result};
use kiln_runtime::exec::{Model, StepBuffers};
use kiln_runtime::manifest::Step;
use kiln_runtime::tensor::HostTensor;
use std::path::Path;
use std::sync::mpsc;

/// How two copies of one buffer differ.
#[derive(Debug, PartialEq)]
pub struct Difference {
    /// The buffer's position among the step's buffers.
    pub position: usize,
    /// 4-byte words (or bytes, for buffers of other lengths) that differ, and how many there are.
    pub differing: usize,
    pub units: usize,
    /// The largest difference read as `f32` values (4-byte words only), with its index and
    /// the two values.
    pub worst: Option<(f64, usize, f32, f32)>,
}

/// The differences between the buffers of one step on two devices.
pub fn differences(a: &StepBuffers, b: &StepBuffers) -> Vec<Difference> {
    let mut out = Vec::new();
    for ((position, x), (_, y)) in a.iter().zip(b) {
        if x == y {
            continue;
        }
        if x.len() != y.len() || x.len() % 4 != 0 {
            let differing = x.iter().zip(y).filter(|(p, q)| p != q).count() + x.len().abs_diff(y.len());
            out.push(Difference { position: *position, differing, units: x.len().max(y.len()), worst: None });
            continue;
        }
        let words = |v: &[u8]| v.chunks_exact(4).map(|w| [w[0], w[1], w[2], w[3]]).collect::<Vec<_>>();
        let (xs, ys) = (words(x), words(y));
        let mut differing = 0;
        let mut worst: Option<(f64, usize, f32, f32)> = None;
        for (i, (p, q)) in xs.iter().zip(&ys).enumerate() {
            if p == q {
                continue;
            }
            differing += 1;
            let (f, g) = (f32::from_le_bytes(*p), f32::from_le_bytes(*q));
            let d = (f as f64 - g as f64).abs();
            let d = if d.is_nan() { f64::INFINITY } else { d };
            if worst.is_none_or(|(w, ..)| d > w) {
                worst = Some((d, i, f, g));
            }
        }
        out.push(Difference { position: *position, differing, units: xs.len(), worst });
    }
    out
}

/// Runs the artifact at `path` on `first` and `second` (already opened devices) with
/// `inputs`, in lockstep, and prints each step whose buffers differ (at most `limit` of them,
/// then a count). `Ok(true)` when every step matches.
pub fn compare_steps(
    path: &Path,
    first: (&str, Model),
    second: (&str, Model),
    inputs: &[HostTensor],
    limit: usize,
) -> Result<bool> {
    let refs: Vec<_> = inputs.iter().map(HostTensor::view).collect();
    let ((name_a, a), (name_b, b)) = (first, second);
    let plan = a.manifest().plan.clone();
    let kernels = a.manifest().kernels.clone();
    let (send, receive) = mpsc::sync_channel::<(usize, StepBuffers)>(1);
    let mut bad_steps = 0;
    let mut mismatched_plan = false;
    std::thread::scope(|scope| -> Result<()> {
        let runner = scope.spawn(|| {
            let send = send;
            a.run_traced(&refs, &mut |i, held| {
                let _ = send.send((i, held));
            })
        });
        b.run_traced(&refs, &mut |i, held_b| {
            let Ok((j, held_a)) = receive.recv() else {
                mismatched_plan = true;
                return;
            };
            if i != j {
                mismatched_plan = true;
                return;
            }
            let diffs = differences(&held_a, &held_b);
            if diffs.is_empty() {
                return;
            }
            bad_steps += 1;
            if bad_steps > limit {
                return;
            }
            let what = match &plan[i] {
                Step::Launch { kernel, .. } => format!("kernel `{}`", kernels[*kernel as usize].name),
                Step::Copy { .. } => "copy".to_string(),
            };
            for d in diffs {
                let worst = d.worst.map_or(String::new(), |(w, at, x, y)| {
                    format!("; largest difference {w:.3e} at element {at} ({name_a} {x:e}, {name_b} {y:e})")
                });
                println!(
                    "step {i} ({what}), buffer {}: {} of {} elements differ{worst}",
                    d.position, d.differing, d.units
                );
            }
        })
        .with_context(|| format!("running {} on {name_b}", path.display()))?;
        runner
            .join()
            .expect("the traced run does not panic")
            .with_context(|| format!("running {} on {name_a}", path.display()))?;
        Ok(())
    })?;
    if mismatched_plan {
        anyhow::bail!("the two runs did not go through the same steps");
    }
    if bad_steps > limit {
        println!("... {} more steps differ", bad_steps - limit);
    }
    if bad_steps == 0 {
        println!("all {} steps of the plan match bit for bit ({name_a} and {name_b})", plan.len());
    } else {
        println!(
            "{bad_steps} of {} steps differ; the first one's kernel is where {name_a} and {name_b} part ways",
            plan.len()
        );
    }
    Ok(bad_steps == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_count_words_and_find_the_largest() {
        let words = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let a = vec![(0, words(&[1.0, 2.0, 3.0])), (2, vec![1, 2, 3])];
        let b = vec![(0, words(&[1.0, 2.5, 3.25])), (2, vec![1, 2, 3])];
        let d = differences(&a, &b);
        assert_eq!(d, vec![Difference { position: 0, differing: 2, units: 3, worst: Some((0.5, 1, 2.0, 2.5)) }]);
        // Odd lengths compare bytes.
        let d = differences(&vec![(1, vec![1, 2, 3])], &vec![(1, vec![1, 9, 3])]);
        assert_eq!(d, vec![Difference { position: 1, differing: 1, units: 3, worst: None }]);
        assert!(differences(&a, &a).is_empty());
    }
}
