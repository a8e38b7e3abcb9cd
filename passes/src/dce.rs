//! Dead-code elimination: drops nodes whose results no output depends on.
//!
//! It keeps every user input and weight (the signature does not change) and the relative order
//! of the surviving nodes; value names are preserved. It does not fold, merge or reorder.

use kiln_ir::{Graph, IrError, ValueDef, ValueId};
use std::collections::HashMap;

/// Returns a copy of `graph` without the nodes that no output depends on.
pub fn dead_code_elimination(graph: &Graph) -> Result<Graph, IrError> {
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
    let mut out = Graph::new(graph.name.clone());
    out.symbols = graph.symbols.clone();
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    for &v in graph.inputs() {
        let d = graph.value(v);
        map.insert(v, out.add_input(&d.name, d.ty.clone()));
    }
    for &v in graph.weights() {
        let d = graph.value(v);
        map.insert(v, out.add_weight(&d.name, d.ty.clone()));
    }
    for (_, node) in graph.nodes() {
        if !live[node.output.0 as usize] {
            continue;
        }
        let inputs = node.inputs.iter().map(|i| map[i]).collect();
        let d = graph.value(node.output);
        let nv = out.add_node_typed(node.op.clone(), inputs, &d.name, d.ty.clone(), node.source.clone());
        map.insert(node.output, nv);
    }
    for (name, v) in graph.outputs() {
        out.add_output(name, map[v]);
    }
    kiln_ir::verify::verify_if_debug(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{BinaryOp, DType, Op, TensorType, UnaryOp};

    #[test]
    fn removes_unused_nodes_only() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[4]));
        let used = g.add_node(Op::Unary(UnaryOp::Exp), vec![x], "used", None).unwrap();
        let _dead = g.add_node(Op::Unary(UnaryOp::Tanh), vec![x], "dead", None).unwrap();
        let y = g.add_node(Op::Binary(BinaryOp::Add), vec![used, x], "y", None).unwrap();
        g.add_output("y", y);
        let out = dead_code_elimination(&g).unwrap();
        assert_eq!(out.node_count(), 2);
        assert!(out.value_named("dead").is_none());
        assert!(out.value_named("used").is_some());
        assert_eq!(out.inputs().len(), 1);
    }
}
