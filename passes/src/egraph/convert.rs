//! Graph → e-graph, and the extracted program → graph.
//!
//! Every graph value becomes an e-class; the classes of the graph's values are remembered so
//! that the extracted graph keeps their names and source lines. A class no original value
//! belongs to (built by a rule) is named after the value whose node uses it and its own op
//! (`linear.matmul.concat`).
//! Extraction picks one node per needed class ([`super::cost`]), shared classes become shared
//! values, and the graph is rebuilt in dependency order with the IR's type inference.

use super::extract::DagExtractor;
use super::lang::{split_op, TensorAnalysis, TensorGraph, TensorNode};
use egg::{Id, Language};
use kiln_ir::{Graph, IrError, ValueDef, ValueId};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A graph in an e-graph: the class of every value (by value index).
pub struct Loaded {
    pub egraph: TensorGraph,
    pub classes: Vec<Id>,
    /// Every value's own term (its id as added, before any union), which egg's explanations
    /// start from.
    pub terms: Vec<Id>,
    /// The e-nodes of the graph as loaded.
    pub nodes: Vec<TensorNode>,
}

/// Adds every value of `graph` to a fresh e-graph, with egg's explanations recorded when
/// `explanations` is set.
pub fn load(graph: &Graph, explanations: bool) -> Loaded {
    let mut analysis = TensorAnalysis { symbols: graph.symbols.clone(), ..Default::default() };
    for &v in graph.inputs().iter().chain(graph.weights()) {
        let d = graph.value(v);
        analysis.leaf_types.insert(d.name.clone(), d.ty.clone());
    }
    let mut egraph = TensorGraph::new(analysis);
    if explanations {
        // Explanations are read for their rules, not their length: skip egg's search for the
        // shortest one.
        egraph = egraph.with_explanations_enabled().without_explanation_length_optimization();
    }
    let mut terms = vec![Id::from(0usize); graph.value_count()];
    let mut nodes = Vec::new();
    for i in 0..graph.value_count() {
        let v = ValueId(i as u32);
        let d = graph.value(v);
        let id = match d.def {
            ValueDef::Input(_) => egraph.add_uncanonical(TensorNode::leaf(&format!("input:{}", d.name))),
            ValueDef::Weight(_) => egraph.add_uncanonical(TensorNode::leaf(&format!("weight:{}", d.name))),
            ValueDef::Node(n) => {
                let node = graph.node(n);
                let (name, attrs) = split_op(&node.op, &graph.symbols);
                let mut children = Vec::new();
                if let Some(a) = attrs {
                    children.push(egraph.add_uncanonical(TensorNode::leaf(&a)));
                }
                children.extend(node.inputs.iter().map(|x| terms[x.0 as usize]));
                let n = TensorNode::new(&name, children);
                nodes.push(n.clone());
                egraph.add_uncanonical(n)
            }
        };
        terms[i] = id;
    }
    egraph.rebuild();
    let classes = terms.iter().map(|&t| egraph.find(t)).collect();
    Loaded { egraph, classes, terms, nodes }
}

/// Rebuilds a graph from `egraph`, choosing each needed class's node with `cost`. `original`
/// is the graph that was loaded (for names, sources, inputs, weights and outputs) and
/// `classes` its values' classes.
/// Also returns the values whose node a rule produced (not an original node).
pub fn extract(
    egraph: &TensorGraph,
    extractor: &DagExtractor,
    original: &Graph,
    loaded: (&[Id], &[TensorNode]),
) -> Result<(Graph, Vec<Rewritten>), IrError> {
    let (classes, original_nodes) = loaded;
    // The first original value of each class names it.
    let mut names: HashMap<Id, ValueId> = HashMap::new();
    for (i, &c) in classes.iter().enumerate() {
        names.entry(egraph.find(c)).or_insert(ValueId(i as u32));
    }
    let mut g = Graph::new(original.name.clone());
    g.symbols = original.symbols.clone();
    let mut built: HashMap<Id, ValueId> = HashMap::new();
    for &v in original.inputs().iter().chain(original.weights()) {
        let d = original.value(v);
        let nv = match d.def {
            ValueDef::Input(_) => g.add_input(&d.name, d.ty.clone()),
            _ => g.add_weight(&d.name, d.ty.clone()),
        };
        built.entry(egraph.find(classes[v.0 as usize])).or_insert(nv);
    }
    let (order, user_of) = build_order(egraph, extractor, original, classes, &names);
    let mut b = Builder { egraph, extractor, original, names, user_of, built, graph: g };
    for &c in &order {
        b.build(c)?;
    }
    for (name, v) in original.outputs() {
        let nv = b.built[&egraph.find(classes[v.0 as usize])];
        b.graph.add_output(name, nv);
    }
    let canonical = |n: &TensorNode| n.clone().map_children(|c| egraph.find(c));
    let kept: HashSet<TensorNode> = original_nodes.iter().map(canonical).collect();
    let mut rewritten = Vec::new();
    for c in order {
        let node = canonical(b.chosen(c)?);
        if kept.contains(&node) || node.op.as_str().contains(':') {
            continue;
        }
        // A class a rule built has no rewrites of its own: its user's class has them.
        let home = match b.user_of.get(&c) {
            Some(v) => egraph.find(classes[v.0 as usize]),
            None => c,
        };
        rewritten.push(Rewritten {
            name: b.graph.value(b.built[&c]).name.clone(),
            home,
            original: b.names.get(&home).copied(),
            chosen: b.chosen(home)?.clone(),
        });
    }
    Ok((b.graph, rewritten))
}

/// A value of the extracted graph whose node a rule produced.
pub struct Rewritten {
    /// Its name in the extracted graph.
    pub name: String,
    /// The class whose rewrites produced it: its own, or for a class a rule built, that of
    /// the original value using it.
    pub home: Id,
    /// The original value of `home`.
    pub original: Option<ValueId>,
    /// The node extraction chose for `home`.
    pub chosen: TensorNode,
}

/// The rules recorded on each rewritten value's class when rewrites were merged into it
/// (what `--emit explain` shows when egg's explanations are off), by value name.
pub fn recorded_rules(egraph: &TensorGraph, rewritten: &[Rewritten]) -> BTreeMap<String, Vec<String>> {
    let mut rules_of: HashMap<Id, BTreeSet<String>> = HashMap::new();
    for (c, rule) in &egraph.analysis.provenance {
        rules_of.entry(egraph.find(*c)).or_default().insert(rule.to_string());
    }
    rewritten
        .iter()
        .map(|r| (r.name.clone(), rules_of.get(&r.home).map(|s| s.iter().cloned().collect()).unwrap_or_default()))
        .collect()
}

/// The rules egg's explanation of `original = chosen` uses (on the value itself and on any
/// operand below it), for each rewritten value, by value name. Needs an e-graph loaded with
/// explanations.
pub fn explained_rules(
    egraph: &mut TensorGraph,
    terms: &[Id],
    rewritten: &[Rewritten],
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for r in rewritten {
        let Some(original) = r.original else {
            out.insert(r.name.clone(), Vec::new());
            continue;
        };
        let left = terms[original.0 as usize];
        let right = egraph.add_uncanonical(r.chosen.clone());
        let explanation = egraph.explain_id_equivalence(left, right);
        // The proof is a DAG of shared subproofs: visit each once.
        let mut seen = HashSet::new();
        let mut rules = BTreeSet::new();
        let mut stack: Vec<std::rc::Rc<egg::TreeTerm<TensorNode>>> = explanation.explanation_trees.clone();
        while let Some(t) = stack.pop() {
            if !seen.insert(std::rc::Rc::as_ptr(&t)) {
                continue;
            }
            rules.extend([t.forward_rule, t.backward_rule].into_iter().flatten().map(|r| r.to_string()));
            for proof in &t.child_proofs {
                stack.extend(proof.iter().cloned());
            }
        }
        out.insert(r.name.clone(), rules.into_iter().collect());
    }
    out
}

/// The classes the outputs need, in the order to build them: dependencies first, and among
/// the classes that are ready, the one whose original value came first (a class built by a
/// rule sorts just before the first value that uses it). The rebuilt graph so keeps the
/// original's order wherever the extraction allows, and kernels follow graph order.
fn build_order(
    egraph: &TensorGraph,
    extractor: &DagExtractor,
    original: &Graph,
    classes: &[Id],
    names: &HashMap<Id, ValueId>,
) -> (Vec<Id>, HashMap<Id, ValueId>) {
    // Operands of every needed class (leaves excluded: inputs and weights exist already).
    let mut operands: HashMap<Id, Vec<Id>> = HashMap::new();
    let mut stack: Vec<Id> = original.outputs().iter().map(|(_, v)| egraph.find(classes[v.0 as usize])).collect();
    while let Some(c) = stack.pop() {
        if operands.contains_key(&c) {
            continue;
        }
        let Some(node) = extractor.node(c) else { continue };
        let ops: Vec<Id> = if node.children.is_empty() || node.op.as_str().contains(':') {
            Vec::new()
        } else {
            TensorAnalysis::operands(egraph, node).iter().map(|&o| egraph.find(o)).collect()
        };
        stack.extend(ops.iter().copied());
        operands.insert(c, ops);
    }
    // Keys: the original position, or for rule-built classes the smallest key of a user
    // (computed to a fixed point over the needed classes) with a tie-break on the class id.
    let mut key: HashMap<Id, (usize, usize)> = HashMap::new();
    for &c in operands.keys() {
        if let Some(v) = names.get(&c) {
            key.insert(c, (v.0 as usize, 0));
        }
    }
    let mut changed = true;
    while changed {
        changed = false;
        let mut sorted: Vec<&Id> = operands.keys().collect();
        sorted.sort();
        for c in sorted {
            let Some(&(k, _)) = key.get(c) else { continue };
            for &o in &operands[c] {
                if names.contains_key(&o) {
                    continue;
                }
                let candidate = (k, usize::from(o) + 1);
                if key.get(&o).is_none_or(|old| candidate < *old) {
                    key.insert(o, candidate);
                    changed = true;
                }
            }
        }
    }
    let mut users: HashMap<Id, Vec<Id>> = HashMap::new();
    let mut pending: HashMap<Id, usize> = HashMap::new();
    for (&c, ops) in &operands {
        let mut distinct = ops.clone();
        distinct.sort();
        distinct.dedup();
        pending.insert(c, distinct.len());
        for o in distinct {
            users.entry(o).or_default().push(c);
        }
    }
    let sort_key = |c: Id| (key.get(&c).copied().unwrap_or((usize::MAX, usize::from(c))), c);
    let mut ready: std::collections::BTreeSet<((usize, usize), Id)> =
        pending.iter().filter(|(_, &n)| n == 0).map(|(&c, _)| sort_key(c)).collect();
    let mut order = Vec::with_capacity(operands.len());
    while let Some(first) = ready.pop_first() {
        let c = first.1;
        order.push(c);
        for &u in users.get(&c).map_or(&[][..], |v| v.as_slice()) {
            let n = pending.get_mut(&u).expect("a needed class");
            *n -= 1;
            if *n == 0 {
                ready.insert(sort_key(u));
            }
        }
    }
    let user_of =
        key.iter().filter(|(c, _)| !names.contains_key(c)).map(|(&c, &(k, _))| (c, ValueId(k as u32))).collect();
    (order, user_of)
}

struct Builder<'a> {
    egraph: &'a TensorGraph,
    extractor: &'a DagExtractor,
    original: &'a Graph,
    names: HashMap<Id, ValueId>,
    /// For classes no original value names: the original value that uses them.
    user_of: HashMap<Id, ValueId>,
    built: HashMap<Id, ValueId>,
    graph: Graph,
}

impl Builder<'_> {
    /// The chosen node of class `c`; every class a graph output needs has one (its original
    /// node has a finite cost).
    fn chosen(&self, c: Id) -> Result<&TensorNode, IrError> {
        self.extractor.node(c).ok_or_else(|| IrError::Verify(format!("e-graph extraction found no node for class {c}")))
    }

    /// Builds class `c`'s chosen node; its operands are built already (see [`build_order`]).
    fn build(&mut self, c: Id) -> Result<(), IrError> {
        if self.built.contains_key(&c) {
            return Ok(());
        }
        let node = self.chosen(c)?.clone();
        let operands: Vec<Id> =
            TensorAnalysis::operands(self.egraph, &node).iter().map(|&o| self.egraph.find(o)).collect();
        let (name, source) = match self.names.get(&c) {
            Some(&v) => (self.original.value(v).name.clone(), self.original_source(v)),
            None => {
                // Named after the original value that (transitively) uses it.
                let user = self.user_of.get(&c).copied();
                let name = user.map_or_else(|| "v".to_string(), |v| self.original.value(v).name.clone());
                (format!("{name}.{}", node.op), user.and_then(|v| self.original_source(v)))
            }
        };
        let op = TensorAnalysis::op_of(self.egraph, &node)
            .ok_or_else(|| IrError::Verify(format!("e-graph extraction chose `{}`, which is not an op", node.op)))?;
        let inputs: Vec<ValueId> = operands.iter().map(|o| self.built[o]).collect();
        let v = self.graph.add_node(op, inputs, &name, source)?;
        self.built.insert(c, v);
        Ok(())
    }

    fn original_source(&self, v: ValueId) -> Option<String> {
        match self.original.value(v).def {
            ValueDef::Node(n) => self.original.node(n).source.clone(),
            _ => None,
        }
    }
}
