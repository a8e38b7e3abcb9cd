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

use super::lang::{TensorGraph, TensorNode};
use egg::Id;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// Seconds added per node: far below any real op's cost, enough to break ties.
pub const PER_NODE: f64 = 1e-15;

struct Best {
    total: f64,
    node: TensorNode,
    /// Every class the choice needs (itself included), with the own cost of its choice.
    needs: Rc<BTreeMap<Id, f64>>,
}

/// The chosen node of every class that has a finite-cost choice.
pub struct DagExtractor {
    best: HashMap<Id, Best>,
}

impl DagExtractor {
    /// `own`: a node's own cost (infinite: never choose it).
    pub fn new(egraph: &TensorGraph, own: impl Fn(&TensorNode) -> f64) -> DagExtractor {
        let mut best: HashMap<Id, Best> = HashMap::new();
        let mut ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
        ids.sort();
        loop {
            let mut changed = false;
            for &id in &ids {
                for node in &egraph[id].nodes {
                    let c = own(node);
                    if !c.is_finite() {
                        continue;
                    }
                    let mut needs: BTreeMap<Id, f64> = BTreeMap::new();
                    let mut ok = true;
                    for &child in &node.children {
                        match best.get(&egraph.find(child)) {
                            Some(b) if !b.needs.contains_key(&id) => {
                                needs.extend(b.needs.iter().map(|(k, v)| (*k, *v)));
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
                    needs.insert(id, c + PER_NODE);
                    let total: f64 = needs.values().sum();
                    if best.get(&id).is_none_or(|b| total < b.total) {
                        best.insert(id, Best { total, node: node.clone(), needs: Rc::new(needs) });
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        DagExtractor { best }
    }

    /// The chosen node of class `id` (canonical), if it has one.
    pub fn node(&self, id: Id) -> Option<&TensorNode> {
        self.best.get(&id).map(|b| &b.node)
    }

    /// The cost of the choice for class `id`: every class it needs once.
    pub fn cost(&self, id: Id) -> Option<f64> {
        self.best.get(&id).map(|b| b.total)
    }
}
