//! Dead-code elimination: drops nodes whose results no output depends on, and the weights
//! that no kept node or output uses.
//!
//! It keeps every user input (the run-time signature does not change), the relative order of
//! the surviving nodes and weights, and all value names. The returned weight store holds exactly
//! the returned graph's weights (entries of the input store that the graph never declared are
//! dropped too). It does not fold, merge or reorder.

use crate::error::{check_input, PassError};
use crate::rebuild::Rebuild;
use kiln_ir::{Graph, ValueDef, ValueId, WeightStore};

const PASS: &str = "dce";

/// Returns `graph` without the nodes that no output depends on and without unused weights,
/// with the matching weight store.
pub fn dead_code_elimination(graph: &Graph, weights: &WeightStore) -> Result<(Graph, WeightStore), PassError> {
    check_input(PASS, graph)?;
    let live = live_values(graph);
    let mut b = Rebuild::new(graph);
    b.copy_inputs();
    let mut store = WeightStore::default();
    for &w in graph.weights() {
        if live[w.0 as usize] {
            let name = &graph.value(w).name;
            let t = weights.get(name).ok_or_else(|| PassError::MissingWeight { pass: PASS, name: name.clone() })?;
            store.insert(name.clone(), t.clone());
            b.copy_weight(w);
        }
    }
    for (_, node) in graph.nodes() {
        if live[node.output.0 as usize] {
            let inputs = b.operands(node);
            b.copy_node(node, inputs);
        }
    }
    Ok((b.finish(), store))
}

/// Whether each value (by id) is needed to compute the outputs.
fn live_values(graph: &Graph) -> Vec<bool> {
    let mut live = vec![false; graph.value_count()];
    let mut stack: Vec<ValueId> = graph.outputs().iter().map(|(_, v)| *v).collect();
    while let Some(v) = stack.pop() {
        if std::mem::replace(&mut live[v.0 as usize], true) {
            continue;
        }
        if let ValueDef::Node(n) = graph.value(v).def {
            stack.extend(graph.node(n).inputs.iter().copied());
        }
    }
    live
}
