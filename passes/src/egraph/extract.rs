//! DAG-aware extraction: the cheapest node of every e-class, where a candidate's cost counts
//! each e-class it needs once (egg's own extractor sums tree costs, so `x * x * x` would pay
//! for `x` three times and never beat `pow(x, 3)` when `x` is the rest of the network).
//!
//! Greedy to a fixed point: a class's best candidate carries the set of classes it needs
//! with the own cost chosen for each; a node's cost is its own cost plus the union of its
//! operands' sets. A node whose operands already need its own class is skipped (that choice
//! would be a cycle). Classes and nodes are visited in a fixed order and only strict
//! improvements replace a choice, so extraction is deterministic. Every node also costs a
//! tiny constant ([`PER_NODE`]), so between equally fast programs the smaller wins.
//!
//! Greedy choices are made class by class, so a shared value that pays off only when several
//! classes use it together (one merged matmul whose slices replace three matmuls: each slice
//! alone costs the whole merged matmul) is never chosen by them. [`DagExtractor::refine`]
//! then tries, for every class the program does not use yet, switching *all* its users to it
//! at once, and keeps the switch when the whole program's cost (every needed class once)
//! drops.

use super::lang::{TensorGraph, TensorNode};
use egg::Id;
use std::collections::HashMap;
use std::rc::Rc;

/// Rounds of [`DagExtractor::improve`].
pub const IMPROVE_ROUNDS: usize = 2;

/// Seconds added per node: far below any real op's cost, enough to break ties.
pub const PER_NODE: f64 = 1e-15;

/// Classes with the own cost of their choice, sorted by class.
type Needs = Vec<(Id, f64)>;

struct Best {
    total: f64,
    node: TensorNode,
    /// Every class the choice needs (itself included), with the own cost of its choice.
    needs: Rc<Needs>,
}

/// The union of two sorted need lists; for a class in both, `b`'s cost (the later operand's,
/// as the choice it was computed with is the newer one to be added).
fn union(a: &[(Id, f64)], b: &[(Id, f64)]) -> Needs {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(b[j]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The chosen node of every class that has a finite-cost choice.
pub struct DagExtractor {
    best: HashMap<Id, Best>,
    /// The choice per class after [`DagExtractor::refine`] (starts as the greedy one).
    choice: HashMap<Id, TensorNode>,
    /// Own cost of every node seen.
    own: HashMap<TensorNode, f64>,
}

impl DagExtractor {
    /// `own`: a node's own cost (infinite: never choose it).
    pub fn new(egraph: &TensorGraph, own: impl Fn(&TensorNode) -> f64) -> DagExtractor {
        let mut own_cost: HashMap<TensorNode, f64> = HashMap::new();
        let mut own = |n: &TensorNode| *own_cost.entry(n.clone()).or_insert_with(|| own(n));
        let mut best: HashMap<Id, Best> = HashMap::new();
        let mut ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
        ids.sort();
        // When each class's choice last changed, and when each node was last costed: a node
        // none of whose operands changed since gives the same candidate as then, which did
        // not beat its class's choice then and cannot now (choices only improve).
        let mut tick: u64 = 0;
        let mut changed_at: HashMap<Id, u64> = HashMap::new();
        let mut costed_at: HashMap<(Id, usize), u64> = HashMap::new();
        loop {
            let mut changed = false;
            for &id in &ids {
                for (k, node) in egraph[id].nodes.iter().enumerate() {
                    let c = own(node);
                    if !c.is_finite() {
                        continue;
                    }
                    let children: Vec<Id> = node.children.iter().map(|&ch| egraph.find(ch)).collect();
                    if let Some(&at) = costed_at.get(&(id, k)) {
                        if children.iter().all(|ch| changed_at.get(ch).is_none_or(|&t| t < at)) {
                            continue;
                        }
                    }
                    tick += 1;
                    costed_at.insert((id, k), tick);
                    let mut needs: Needs = Vec::new();
                    let mut ok = true;
                    for child in &children {
                        match best.get(child) {
                            Some(b) if b.needs.binary_search_by_key(&id, |e| e.0).is_err() => {
                                needs = union(&needs, &b.needs);
                            }
                            _ => {
                                ok = false;
                                break;
                            }
                        }
                    }
                    if !ok {
                        continue;
                    }
                    needs = union(&needs, &[(id, c + PER_NODE)]);
                    let total: f64 = needs.iter().map(|e| e.1).sum();
                    if best.get(&id).is_none_or(|b| total < b.total) {
                        best.insert(id, Best { total, node: node.clone(), needs: Rc::new(needs) });
                        tick += 1;
                        changed_at.insert(id, tick);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let choice = best.iter().map(|(&id, b)| (id, b.node.clone())).collect();
        drop(own);
        DagExtractor { best, choice, own: own_cost }
    }

    /// The chosen node of class `id` (canonical), if it has one.
    pub fn node(&self, id: Id) -> Option<&TensorNode> {
        self.choice.get(&id)
    }

    /// The cost of the program `choice` gives for `roots`: each needed class's own cost once;
    /// `None` when the choice has a cycle or a class without a choice.
    fn total(&self, egraph: &TensorGraph, choice: &HashMap<Id, TensorNode>, roots: &[Id]) -> Option<f64> {
        // 1: on the current path, 2: done.
        let mut state: HashMap<Id, u8> = HashMap::new();
        let mut total = 0.0;
        let mut stack: Vec<(Id, bool)> = roots.iter().map(|&r| (egraph.find(r), false)).collect();
        while let Some((c, leaving)) = stack.pop() {
            if leaving {
                state.insert(c, 2);
                continue;
            }
            match state.get(&c) {
                Some(2) => continue,
                Some(_) => return None,
                None => {}
            }
            let node = choice.get(&c)?;
            total += self.own.get(node).copied().unwrap_or(f64::INFINITY) + PER_NODE;
            state.insert(c, 1);
            stack.push((c, true));
            for &child in &node.children {
                let child = egraph.find(child);
                match state.get(&child) {
                    Some(1) => return None,
                    Some(2) => {}
                    _ => stack.push((child, false)),
                }
            }
        }
        total.is_finite().then_some(total)
    }

    /// The classes the current choice needs for `roots`.
    fn reachable(&self, egraph: &TensorGraph, roots: &[Id]) -> std::collections::HashSet<Id> {
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<Id> = roots.iter().map(|&r| egraph.find(r)).collect();
        while let Some(c) = stack.pop() {
            if !seen.insert(c) {
                continue;
            }
            if let Some(n) = self.choice.get(&c) {
                stack.extend(n.children.iter().map(|&k| egraph.find(k)));
            }
        }
        seen
    }

    /// Switches all users of a class the program does not use yet to it, where that lowers
    /// the whole program's cost (see the module docs). Deterministic: classes in id order.
    pub fn refine(&mut self, egraph: &TensorGraph, roots: &[Id]) {
        let Some(mut current) = self.total(egraph, &self.choice, roots) else { return };
        let mut ids: Vec<Id> = self.best.keys().copied().collect();
        ids.sort();
        for &shared in &ids {
            if self.reachable(egraph, roots).contains(&shared) {
                continue;
            }
            let mut trial = self.choice.clone();
            let mut switched = 0;
            for &c in &ids {
                let user = egraph[c].nodes.iter().find(|n| {
                    n.children.iter().any(|&k| egraph.find(k) == shared)
                        && self.own.get(*n).is_some_and(|o| o.is_finite())
                });
                if let Some(n) = user {
                    trial.insert(c, n.clone());
                    switched += 1;
                }
            }
            if switched == 0 {
                continue;
            }
            if let Some(t) = self.total(egraph, &trial, roots) {
                if t < current {
                    current = t;
                    self.choice = trial;
                }
            }
        }
    }

    /// Local improvement of the whole program: for every class the program uses (in id
    /// order), tries each other node of the class and keeps it when the program's cost (every
    /// needed class once) drops; at most [`IMPROVE_ROUNDS`] rounds. Catches what the greedy
    /// per-class choice cannot see: a node that looks cheaper for its class alone but needs a
    /// second copy of work the program keeps for another user anyway (`(x @ W + b) * 0.5`
    /// rewritten to `x @ (W * 0.5) + b * 0.5` while `x @ W + b` stays needed elsewhere).
    pub fn improve(&mut self, egraph: &TensorGraph, roots: &[Id]) {
        let Some(mut current) = self.total(egraph, &self.choice, roots) else { return };
        for _ in 0..IMPROVE_ROUNDS {
            let mut changed = false;
            let mut ids: Vec<Id> = self.reachable(egraph, roots).into_iter().collect();
            ids.sort();
            for c in ids {
                let Some(chosen) = self.choice.get(&c).cloned() else { continue };
                for n in &egraph[c].nodes {
                    if *n == chosen || !self.own.get(n).is_some_and(|o| o.is_finite()) {
                        continue;
                    }
                    let mut trial = self.choice.clone();
                    trial.insert(c, n.clone());
                    if let Some(t) = self.total(egraph, &trial, roots) {
                        if t < current {
                            current = t;
                            self.choice = trial;
                            changed = true;
                            break;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// The cost of the choice for class `id`: every class it needs once.
    pub fn cost(&self, id: Id) -> Option<f64> {
        self.best.get(&id).map(|b| b.total)
    }
}
