//! Building a pass's result graph from its input, value by value.
//!
//! The IR's arenas are append-only, so every pass builds a fresh graph: it copies the user
//! inputs and the weights it keeps, then each node (unchanged, rewritten, or replaced by an
//! existing value), keeping value names. [`Rebuild`] holds the map from old value ids to new.

use crate::error::PassError;
use kiln_ir::{Graph, Node, Op, TensorType, ValueDef, ValueId};

pub(crate) struct Rebuild<'g> {
    pub old: &'g Graph,
    pub new: Graph,
    map: Vec<Option<ValueId>>,
}

impl<'g> Rebuild<'g> {
    /// An empty graph with `old`'s name and symbols.
    pub fn new(old: &'g Graph) -> Rebuild<'g> {
        let mut new = Graph::new(old.name.clone());
        new.symbols = old.symbols.clone();
        Rebuild { old, new, map: vec![None; old.value_count()] }
    }

    /// Copies every user input, in order.
    pub fn copy_inputs(&mut self) {
        for &v in self.old.inputs() {
            let d = self.old.value(v);
            let nv = self.new.add_input(&d.name, d.ty.clone());
            self.map[v.0 as usize] = Some(nv);
        }
    }

    /// Copies one weight (name and type).
    pub fn copy_weight(&mut self, v: ValueId) {
        let d = self.old.value(v);
        let nv = self.new.add_weight(&d.name, d.ty.clone());
        self.map[v.0 as usize] = Some(nv);
    }

    /// Copies every weight, in order.
    pub fn copy_weights(&mut self) {
        for &v in self.old.weights() {
            self.copy_weight(v);
        }
    }

    /// Adds a weight that takes the place of the old value `v` (name and type of `v`).
    pub fn weight_for(&mut self, v: ValueId) -> ValueId {
        let d = self.old.value(v);
        let nv = self.new.add_weight(&d.name, d.ty.clone());
        self.map[v.0 as usize] = Some(nv);
        nv
    }

    /// The new id of old value `v`. Passes visit values in definition order over verified
    /// graphs, so every operand is mapped before its use.
    pub fn get(&self, v: ValueId) -> ValueId {
        self.map[v.0 as usize].expect("operands are mapped before their use (the input graph was verified)")
    }

    /// The node's operands, mapped to new ids.
    pub fn operands(&self, node: &Node) -> Vec<ValueId> {
        node.inputs.iter().map(|&v| self.get(v)).collect()
    }

    /// Makes old value `old` stand for new value `new` (a node replaced by an existing value).
    pub fn alias(&mut self, old: ValueId, new: ValueId) {
        self.map[old.0 as usize] = Some(new);
    }

    /// Copies a node with its op, name, type and source, over the given (new) operands.
    pub fn copy_node(&mut self, node: &Node, inputs: Vec<ValueId>) -> ValueId {
        let d = self.old.value(node.output);
        let nv = self.new.add_node_typed(node.op.clone(), inputs, &d.name, d.ty.clone(), node.source.clone());
        self.map[node.output.0 as usize] = Some(nv);
        nv
    }

    /// Emits `op` over new `inputs` in place of `node` (same name and source), checking that
    /// the inferred type is the node's type.
    pub fn rewrite_node(&mut self, pass: &'static str, node: &Node, op: Op, inputs: Vec<ValueId>) -> Result<ValueId, PassError> {
        let d = self.old.value(node.output);
        let types: Vec<&TensorType> = inputs.iter().map(|&v| self.new.ty(v)).collect();
        let fail = |reason: String| PassError::Rewrite { pass, node: d.name.clone(), op: node.op.name(), reason };
        let ty = kiln_ir::infer::infer(&op, &types, &self.new.symbols).map_err(fail)?;
        if ty != d.ty {
            let (got, want) = (ty.display(&self.new.symbols), d.ty.display(&self.new.symbols));
            return Err(fail(format!("`{}` gives {got}, the node has {want}", op.name())));
        }
        let nv = self.new.add_node_typed(op, inputs, &d.name, ty, node.source.clone());
        self.map[node.output.0 as usize] = Some(nv);
        Ok(nv)
    }

    /// The op and operands of the node defining new value `v`, if a node defines it.
    pub fn def(&self, v: ValueId) -> Option<(&Op, &[ValueId])> {
        match self.new.value(v).def {
            ValueDef::Node(n) => {
                let node = self.new.node(n);
                Some((&node.op, &node.inputs))
            }
            _ => None,
        }
    }

    /// The new graph with the old graph's outputs (same names), mapped.
    pub fn finish(mut self) -> Graph {
        for (name, v) in self.old.outputs() {
            let nv = self.get(*v);
            self.new.add_output(name, nv);
        }
        self.new
    }
}
