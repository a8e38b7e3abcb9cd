//! The optimization pipeline: the graph passes in order, verified after each.

use crate::error::PassError;
use crate::{canonicalize, cse, dead_code_elimination, fold_constants_with, FoldLimits};
use kiln_ir::{Graph, WeightStore};
use std::fmt;

/// What [`optimize`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Run [`crate::fold_constants`] (on by default).
    pub fold_constants: bool,
    pub fold_limits: FoldLimits,
}

impl Default for Options {
    fn default() -> Options {
        Options { fold_constants: true, fold_limits: FoldLimits::default() }
    }
}

/// Optimizes a graph and its weights:
/// `canonicalize → fold_constants → cse → canonicalize → dce`.
///
/// After every pass the result is verified in debug and test builds
/// ([`kiln_ir::verify::verify_if_debug`]); every pass also checks that its input verifies. The
/// report lists each pass with the node and weight counts before and after it. Results are
/// deterministic: the same graph and weights give the same printed graph and the same store.
pub fn optimize(graph: &Graph, weights: &WeightStore, options: &Options) -> Result<(Graph, WeightStore, PassReport), PassError> {
    let mut report = PassReport::default();

    let g = canonicalize(graph)?;
    report.record("canonicalize", graph, &g)?;

    let (g, folded) = if options.fold_constants {
        let (folded_graph, folded_weights) = fold_constants_with(&g, weights, &options.fold_limits)?;
        report.record("fold_constants", &g, &folded_graph)?;
        (folded_graph, Some(folded_weights))
    } else {
        (g, None)
    };
    let weights = folded.as_ref().unwrap_or(weights);

    let g2 = cse(&g)?;
    report.record("cse", &g, &g2)?;

    let g3 = canonicalize(&g2)?;
    report.record("canonicalize", &g2, &g3)?;

    let g3p = crate::explicit_conv_padding(&g3)?;
    report.record("conv_padding", &g3, &g3p)?;

    let (g4, weights) = dead_code_elimination(&g3p, weights)?;
    report.record("dce", &g3p, &g4)?;

    Ok((g4, weights, report))
}

/// Node and weight counts around each pass that [`optimize`] ran, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub passes: Vec<PassStat>,
}

/// One pass of a [`PassReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassStat {
    pub pass: &'static str,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub weights_before: usize,
    pub weights_after: usize,
}

impl PassReport {
    /// Verifies `after` (in debug and test builds) and records the pass.
    fn record(&mut self, pass: &'static str, before: &Graph, after: &Graph) -> Result<(), PassError> {
        kiln_ir::verify::verify_if_debug(after).map_err(|source| PassError::Verify { pass, source })?;
        self.passes.push(PassStat {
            pass,
            nodes_before: before.node_count(),
            nodes_after: after.node_count(),
            weights_before: before.weights().len(),
            weights_after: after.weights().len(),
        });
        Ok(())
    }
}

/// A table: `pass  nodes before -> after  weights before -> after`.
impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<16} {:>15} {:>15}", "pass", "nodes", "weights")?;
        for p in &self.passes {
            let nodes = format!("{} -> {}", p.nodes_before, p.nodes_after);
            let weights = format!("{} -> {}", p.weights_before, p.weights_after);
            writeln!(f, "{:<16} {nodes:>15} {weights:>15}", p.pass)?;
        }
        Ok(())
    }
}
