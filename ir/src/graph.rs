//! The SSA graph: values and nodes in dense arenas addressed by `u32` ids.
//!
//! Every node has exactly one result value. Nodes are stored in a valid execution order (each
//! operand is defined before its use); the verifier checks it. User inputs and weights are both
//! graph inputs but are kept apart: weights have names that match a [`crate::WeightStore`].

use crate::dim::{Dim, SymbolTable};
use crate::dtype::DType;
use crate::error::IrError;
use crate::infer;
use crate::op::Op;
use std::collections::HashSet;

/// Id of a value (an SSA tensor) in [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// Id of a node (one op application) in [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// The type of a tensor value: dtype and (possibly symbolic) shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> TensorType {
        TensorType { dtype, shape }
    }

    /// A type with a fully static shape.
    pub fn fixed(dtype: DType, shape: &[i64]) -> TensorType {
        TensorType { dtype, shape: shape.iter().map(|&d| Dim::constant(d)).collect() }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The static shape, when no dim is symbolic.
    pub fn static_shape(&self) -> Option<Vec<i64>> {
        self.shape.iter().map(|d| d.as_const()).collect()
    }

    /// `f32[s0, 16]`.
    pub fn display(&self, symbols: &SymbolTable) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.display(symbols).to_string()).collect();
        format!("{}[{}]", self.dtype, dims.join(", "))
    }
}

/// Where a value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueDef {
    /// The i-th user input.
    Input(usize),
    /// The i-th weight.
    Weight(usize),
    /// The result of a node.
    Node(NodeId),
}

/// A value: its name (unique in the graph), type and definition.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueData {
    pub name: String,
    pub ty: TensorType,
    pub def: ValueDef,
}

/// One op applied to operands, defining one value.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    /// The user's source line from the export's stack trace, when known.
    pub source: Option<String>,
}

/// An SSA tensor graph. See the crate documentation for its invariants.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub symbols: SymbolTable,
    values: Vec<ValueData>,
    nodes: Vec<Node>,
    inputs: Vec<ValueId>,
    weights: Vec<ValueId>,
    outputs: Vec<(String, ValueId)>,
    names: HashSet<String>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Graph::default() }
    }

    /// A name not yet used by any value: `base` itself, else `base_1`, `base_2`, ...
    /// Characters outside `[A-Za-z0-9_.]` become `_`.
    pub fn fresh_name(&self, base: &str) -> String {
        let mut clean: String =
            base.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' { c } else { '_' }).collect();
        if clean.is_empty() {
            clean.push('v');
        }
        if !self.names.contains(&clean) {
            return clean;
        }
        (1..).map(|i| format!("{clean}_{i}")).find(|n| !self.names.contains(n)).unwrap()
    }

    fn push_value(&mut self, name: &str, ty: TensorType, def: ValueDef) -> ValueId {
        let name = self.fresh_name(name);
        self.names.insert(name.clone());
        self.values.push(ValueData { name, ty, def });
        ValueId(self.values.len() as u32 - 1)
    }

    /// Adds a user input.
    pub fn add_input(&mut self, name: &str, ty: TensorType) -> ValueId {
        let v = self.push_value(name, ty, ValueDef::Input(self.inputs.len()));
        self.inputs.push(v);
        v
    }

    /// Adds a named weight (parameter, buffer or constant). The name is kept exactly when free.
    pub fn add_weight(&mut self, name: &str, ty: TensorType) -> ValueId {
        let v = self.push_value(name, ty, ValueDef::Weight(self.weights.len()));
        self.weights.push(v);
        v
    }

    /// Appends a node after checking its operands and inferring its result type.
    pub fn add_node(&mut self, op: Op, inputs: Vec<ValueId>, name: &str, source: Option<String>) -> Result<ValueId, IrError> {
        for &v in &inputs {
            if self.values.get(v.0 as usize).is_none() {
                return Err(IrError::DanglingValue { node: name.to_string(), value: v.0 });
            }
        }
        let types: Vec<&TensorType> = inputs.iter().map(|v| &self.values[v.0 as usize].ty).collect();
        let ty = infer::infer(&op, &types, &self.symbols).map_err(|reason| IrError::Type {
            op: op.name().to_string(),
            node: name.to_string(),
            reason,
        })?;
        let node = NodeId(self.nodes.len() as u32);
        let output = self.push_value(name, ty, ValueDef::Node(node));
        self.nodes.push(Node { op, inputs, output, source });
        Ok(output)
    }

    /// Adds a node whose result type is given rather than inferred (used by the text parser;
    /// the verifier then checks it against inference).
    pub fn add_node_typed(&mut self, op: Op, inputs: Vec<ValueId>, name: &str, ty: TensorType, source: Option<String>) -> ValueId {
        let node = NodeId(self.nodes.len() as u32);
        let output = self.push_value(name, ty, ValueDef::Node(node));
        self.nodes.push(Node { op, inputs, output, source });
        output
    }

    /// Renames a value (to `name`, or a fresh variant of it when taken); returns the new name.
    pub fn rename_value(&mut self, v: ValueId, name: &str) -> String {
        let old = self.values[v.0 as usize].name.clone();
        if old == name {
            return old;
        }
        self.names.remove(&old);
        let new = self.fresh_name(name);
        self.names.insert(new.clone());
        self.values[v.0 as usize].name = new.clone();
        new
    }

    /// Marks a value as a graph output under `name`.
    pub fn add_output(&mut self, name: &str, value: ValueId) {
        self.outputs.push((name.to_string(), value));
    }

    pub fn value(&self, v: ValueId) -> &ValueData {
        &self.values[v.0 as usize]
    }

    /// The value, or `None` for an id out of range.
    pub fn try_value(&self, v: ValueId) -> Option<&ValueData> {
        self.values.get(v.0 as usize)
    }

    pub fn ty(&self, v: ValueId) -> &TensorType {
        &self.value(v).ty
    }

    pub fn node(&self, n: NodeId) -> &Node {
        &self.nodes[n.0 as usize]
    }

    /// Nodes in execution order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes.iter().enumerate().map(|(i, n)| (NodeId(i as u32), n))
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn value_count(&self) -> usize {
        self.values.len()
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    pub fn weights(&self) -> &[ValueId] {
        &self.weights
    }

    pub fn outputs(&self) -> &[(String, ValueId)] {
        &self.outputs
    }

    /// Looks a value up by name.
    pub fn value_named(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name).map(|i| ValueId(i as u32))
    }
}

#[cfg(test)]
impl Graph {
    /// Test-only access to the arenas, for building graphs that break the invariants (the
    /// verifier's tests): values, nodes, inputs, weights.
    #[allow(clippy::type_complexity)]
    pub(crate) fn arenas_mut(&mut self) -> (&mut Vec<ValueData>, &mut Vec<Node>, &mut Vec<ValueId>, &mut Vec<ValueId>) {
        (&mut self.values, &mut self.nodes, &mut self.inputs, &mut self.weights)
    }
}
