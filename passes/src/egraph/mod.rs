//! The e-graph optimizer: equality saturation with `egg` over kiln's graph ops.
//!
//! [`optimize_egraph`] loads a graph into an e-graph ([`convert::load`]: one e-class per
//! value, shapes and dtypes as analysis data, [`lang`]), grows it with the rule tables
//! ([`rules`]: algebra, layout, linear algebra) under node, iteration and time limits, and
//! extracts the cheapest program by the target's roofline cost ([`cost`], counting every
//! value once: [`extract`]), which it rebuilds
//! into a graph that keeps the original values' names and source lines ([`convert::extract`]).
//!
//! Deterministic: egg's e-graph and its default scheduler are deterministic, and extraction
//! breaks ties by e-node order, so the same graph gives the same output byte for byte —
//! unless the time limit stops saturation (then the report's `stop_reason` says so; the
//! default node and iteration limits are reached long before it on every model measured).
//! A merge of classes with different types means a rule is unsound: it is an error
//! ([`PassError::Egraph`]), never a silently wrong graph.

pub mod convert;
pub mod cost;
pub mod extract;
pub mod lang;
pub mod rules;

use crate::error::{check_input, PassError};
use cost::{graph_work, machine, Work};
use egg::{Runner, StopReason};
use extract::DagExtractor;
use kiln_ir::Graph;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The stop reason of a run that reached [`EgraphOptions::time_limit`].
const TIME_LIMIT: &str = "time limit";

/// Limits and the cost model's target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgraphOptions {
    /// Stop growing the e-graph beyond this many e-nodes.
    pub node_limit: usize,
    /// Stop after this many rounds of rule application.
    pub iter_limit: usize,
    /// Stop after this long (a safety net; the other limits are meant to stop first).
    pub time_limit: Duration,
    /// The target whose machine ([`cost::MACHINES`]) prices the candidates.
    pub target: String,
    /// The text of a rule file ([`rules::file`]) whose rules run with the built-in ones.
    pub extra_rules: Option<String>,
    /// Rules (built-in or from the file) to leave out, by name: to measure what one rule does.
    pub disabled_rules: Vec<String>,
    /// Record egg's explanations, and report for each rewritten value the rules its proof of
    /// equivalence with the original uses (otherwise: the rules merged into its class). Off by
    /// default: recording them slows saturation (BERT-base: about 0.2 s more) and changes no
    /// result; `kiln compile --emit explain` turns them on.
    pub explanations: bool,
}

impl Default for EgraphOptions {
    fn default() -> Self {
        EgraphOptions {
            node_limit: 20_000,
            iter_limit: 8,
            time_limit: Duration::from_secs(5),
            target: "x86_64".into(),
            extra_rules: None,
            disabled_rules: Vec::new(),
            explanations: false,
        }
    }
}

/// What one run of the optimizer did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EgraphReport {
    pub ops_in: usize,
    pub ops_out: usize,
    /// E-nodes and e-classes when saturation stopped.
    pub nodes: usize,
    pub classes: usize,
    pub iterations: usize,
    /// Saturation and extraction time.
    pub seconds: f64,
    /// `saturated`, `iteration limit`, `node limit` or `time limit`.
    pub stop_reason: String,
    /// How many times each rule was applied (rules that never fired are left out).
    pub applied: BTreeMap<String, usize>,
    pub estimated_before: Work,
    pub estimated_after: Work,
    /// The cost model's machine.
    pub machine: &'static str,
    /// Values of the output whose node a rewrite produced, by name, with the rules applied
    /// to their e-class (in name order).
    pub explain: BTreeMap<String, Vec<String>>,
}

/// Runs equality saturation on `graph` with every rule of [`rules::all`] and extracts the
/// cheapest equivalent graph.
pub fn optimize_egraph(graph: &Graph, options: &EgraphOptions) -> Result<(Graph, EgraphReport), PassError> {
    let mut all = rules::all();
    if let Some(text) = &options.extra_rules {
        all.extend(
            rules::file::parse_rules(text)
                .map_err(|reason| PassError::Egraph { reason: format!("rule file, {reason}") })?,
        );
    }
    for name in &options.disabled_rules {
        if !all.iter().any(|r| &r.name == name) {
            let known: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
            return Err(PassError::Egraph {
                reason: format!("no rule is named `{name}`; rules: {}", known.join(", ")),
            });
        }
    }
    all.retain(|r| !options.disabled_rules.contains(&r.name));
    optimize_egraph_with(graph, options, all)
}

/// The same with a chosen rule set.
pub fn optimize_egraph_with(
    graph: &Graph,
    options: &EgraphOptions,
    rules: Vec<rules::Rule>,
) -> Result<(Graph, EgraphReport), PassError> {
    check_input("egraph", graph)?;
    let start = Instant::now();
    let loaded = convert::load(graph, options.explanations);
    let rewrites: Vec<_> = rules.into_iter().map(|r| r.rewrite).collect();
    // egg times its runs with `quanta`, whose clock calibrates itself against the system
    // clock on first use: a busy loop of up to 200 ms on a machine with a noisy clock (a VM),
    // more than the whole optimization of most models. kiln enforces the time limit itself,
    // with the standard clock, in a hook run before every iteration, and gives egg a mock
    // clock that needs no calibration.
    let time_limit = options.time_limit;
    let (clock, _mock) = quanta::Clock::mock();
    let runner = quanta::with_clock(&clock, || {
        Runner::default()
            .with_egraph(loaded.egraph)
            .with_node_limit(options.node_limit)
            .with_iter_limit(options.iter_limit)
            .with_time_limit(Duration::MAX)
            .with_hook(move |_| if start.elapsed() > time_limit { Err(TIME_LIMIT.to_string()) } else { Ok(()) })
            .run(&rewrites)
    });
    let mut egraph = runner.egraph;
    if let Some(c) = egraph.analysis.conflicts.first() {
        return Err(PassError::Egraph { reason: format!("unsound rewrite: {c}") });
    }
    let m = machine(&options.target);
    let mut extractor = DagExtractor::new(&egraph, |n| cost::node_seconds(&egraph, n, &m));
    let roots: Vec<egg::Id> = graph.outputs().iter().map(|(_, v)| loaded.classes[v.0 as usize]).collect();
    extractor.refine(&egraph, &roots);
    extractor.improve(&egraph, &roots);
    let (out, rewritten) = convert::extract(&egraph, &extractor, graph, (&loaded.classes, &loaded.nodes))
        .map_err(|source| PassError::Verify { pass: "egraph", source })?;
    let explain = if options.explanations {
        convert::explained_rules(&mut egraph, &loaded.terms, &rewritten)
    } else {
        convert::recorded_rules(&egraph, &rewritten)
    };
    let mut applied = BTreeMap::new();
    for it in &runner.iterations {
        for (rule, n) in &it.applied {
            *applied.entry(rule.to_string()).or_insert(0) += n;
        }
    }
    let stop_reason = match runner.stop_reason {
        Some(StopReason::Saturated) => "saturated".to_string(),
        Some(StopReason::IterationLimit(_)) => "iteration limit".to_string(),
        Some(StopReason::NodeLimit(_)) => "node limit".to_string(),
        Some(StopReason::TimeLimit(_)) => TIME_LIMIT.to_string(),
        Some(StopReason::Other(s)) => s,
        None => "not run".to_string(),
    };
    let report = EgraphReport {
        ops_in: graph.node_count(),
        ops_out: out.node_count(),
        nodes: egraph.total_number_of_nodes(),
        classes: egraph.number_of_classes(),
        iterations: runner.iterations.len(),
        seconds: start.elapsed().as_secs_f64(),
        stop_reason,
        applied,
        estimated_before: graph_work(graph),
        estimated_after: graph_work(&out),
        machine: m.name,
        explain,
    };
    Ok((out, report))
}
