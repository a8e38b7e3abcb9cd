//! The optimization pipeline: the graph passes in order, verified after each.

use crate::error::PassError;
use crate::egraph::{optimize_egraph, EgraphOptions, EgraphReport};
use crate::{canonicalize, cse, dead_code_elimination, fold_constants_with, FoldLimits};
use kiln_ir::{Graph, WeightStore};
use std::fmt;

/// What [`optimize`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Run [`crate::fold_constants`] (on by default).
    pub fold_constants: bool,
    pub fold_limits: FoldLimits,
    /// Run the e-graph optimizer with these options (on by default; `None`: off).
    pub egraph: Option<EgraphOptions>,
}

impl Default for Options {
    fn default() -> Options {
        Options { fold_constants: true, fold_limits: FoldLimits::default(), egraph: Some(EgraphOptions::default()) }
    }
}

/// Optimizes a graph and its weights:
/// `canonicalize → fold_constants → cse → egraph → canonicalize → fold_constants →
/// conv_padding → dce` (the e-graph and the second folding only when the e-graph is on; the
/// second folding computes what the e-graph's rewrites moved onto weights).
///
/// After every pass the result is verified in debug and test builds
/// ([`kiln_ir::verify::verify_if_debug`]); every pass also checks that its input verifies. The
/// report lists each pass with the node and weight counts before and after it, and the
/// e-graph's own report. Results are deterministic: the same graph and weights give the same
/// printed graph and the same store.
pub fn optimize(graph: &Graph, weights: &WeightStore, options: &Options) -> Result<(Graph, WeightStore, PassReport), PassError> {
    let mut report = PassReport::default();
    let fold = |g: &Graph, w: &WeightStore, report: &mut PassReport| -> Result<Option<(Graph, WeightStore)>, PassError> {
        if !options.fold_constants {
            return Ok(None);
        }
        let (folded_graph, folded_weights) = fold_constants_with(g, w, &options.fold_limits)?;
        report.record("fold_constants", g, &folded_graph)?;
        Ok(Some((folded_graph, folded_weights)))
    };

    let g = canonicalize(graph)?;
    report.record("canonicalize", graph, &g)?;

    let (g, mut weights) = match fold(&g, weights, &mut report)? {
        Some((fg, fw)) => (fg, fw),
        None => (g, weights.clone()),
    };

    let mut g = {
        let g2 = cse(&g)?;
        report.record("cse", &g, &g2)?;
        g2
    };

    if let Some(egraph_options) = &options.egraph {
        let (ge, egraph_report) = optimize_egraph(&g, egraph_options)?;
        report.record("egraph", &g, &ge)?;
        report.egraph = Some(egraph_report);
        let gc = canonicalize(&ge)?;
        report.record("canonicalize", &ge, &gc)?;
        g = match fold(&gc, &weights, &mut report)? {
            Some((fg, fw)) => {
                weights = fw;
                fg
            }
            None => gc,
        };
    } else {
        let gc = canonicalize(&g)?;
        report.record("canonicalize", &g, &gc)?;
        g = gc;
    }

    let gp = crate::explicit_conv_padding(&g)?;
    report.record("conv_padding", &g, &gp)?;

    let (g4, weights) = dead_code_elimination(&gp, &weights)?;
    report.record("dce", &gp, &g4)?;

    Ok((g4, weights, report))
}

/// Node and weight counts around each pass that [`optimize`] ran, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassReport {
    pub passes: Vec<PassStat>,
    /// What the e-graph optimizer did, when it ran.
    pub egraph: Option<EgraphReport>,
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
        if let Some(e) = &self.egraph {
            // No timings: this text is snapshot-tested.
            writeln!(
                f,
                "egraph: {} e-nodes, {} e-classes, {} iterations, stopped: {}",
                e.nodes, e.classes, e.iterations, e.stop_reason
            )?;
            let applied: Vec<String> = e.applied.iter().map(|(r, n)| format!("{r} x{n}")).collect();
            writeln!(f, "egraph rules applied: {}", if applied.is_empty() { "none".into() } else { applied.join(", ") })?;
        }
        Ok(())
    }
}
