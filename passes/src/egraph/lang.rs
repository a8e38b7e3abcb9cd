//! kiln's graph ops as an `egg` language, and the e-class analysis that carries each class's
//! tensor type.
//!
//! An e-node is an operator symbol and its children. The operators are:
//! - a graph op's name (`mul`, `matmul`, `permute`, `reduce_sum`, ...). An op with attributes
//!   takes them as its *first* child: an attribute leaf. So `permute{perm=[1,0]}` of `x` is
//!   `(permute {perm=[1,0]} x)`, and patterns can match any permute as
//!   `(permute ?perm ?x)`;
//! - an attribute leaf, `{key=value,...}` (the op's attributes as the IR text form writes
//!   them, without spaces; see [`kiln_ir::text::op_key`]);
//! - `input:NAME` and `weight:NAME`, the graph's inputs and weights.
//!
//! The analysis ([`TensorAnalysis`]) computes each class's [`TensorType`] with the IR's own
//! type inference, so a rule that builds an ill-typed node gets a class without a type
//! (never extracted), and a merge of two classes with different types — an unsound rule — is
//! recorded in [`TensorAnalysis::conflicts`] and reported as an error by the optimizer.

use egg::{Analysis, DidMerge, EGraph, Id, Language};
use kiln_ir::{Op, SymbolTable, TensorType};
use std::collections::HashMap;
use std::fmt;

/// An e-node: an operator symbol and its children (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TensorNode {
    pub op: egg::Symbol,
    pub children: Vec<Id>,
}

impl TensorNode {
    pub fn leaf(op: &str) -> TensorNode {
        TensorNode { op: egg::Symbol::from(op), children: Vec::new() }
    }

    pub fn new(op: &str, children: Vec<Id>) -> TensorNode {
        TensorNode { op: egg::Symbol::from(op), children }
    }

    pub fn is_attribute(&self) -> bool {
        self.op.as_str().starts_with('{')
    }
}

impl Language for TensorNode {
    type Discriminant = (egg::Symbol, usize);

    fn discriminant(&self) -> Self::Discriminant {
        (self.op, self.children.len())
    }

    fn matches(&self, other: &Self) -> bool {
        self.op == other.op && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

impl fmt::Display for TensorNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.op.as_str())
    }
}

impl egg::FromOp for TensorNode {
    type Error = std::convert::Infallible;

    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, Self::Error> {
        Ok(TensorNode::new(op, children))
    }
}

/// An op's operator symbol and attribute leaf (`None` for ops without attributes).
pub fn split_op(op: &Op, symbols: &SymbolTable) -> (String, Option<String>) {
    let key = kiln_ir::text::op_key(op, symbols);
    match key.find('{') {
        Some(i) => (key[..i].to_string(), Some(key[i..].to_string())),
        None => (key, None),
    }
}

/// What the analysis knows about an e-class.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// An attribute leaf.
    Attribute,
    /// A tensor: its type (`None`: a node a rule built that does not type-check), for a
    /// `full` constant its value, and whether it is a constant (computed from weights and
    /// constants only, so constant folding computes it at compile time).
    Tensor { ty: Option<TensorType>, full: Option<f64>, constant: bool },
}

impl TensorData {
    pub fn ty(&self) -> Option<&TensorType> {
        match self {
            TensorData::Tensor { ty, .. } => ty.as_ref(),
            TensorData::Attribute => None,
        }
    }

    pub fn is_constant(&self) -> bool {
        matches!(self, TensorData::Tensor { constant: true, .. })
    }

    /// The value of a `full` constant (every element equal).
    pub fn full(&self) -> Option<f64> {
        match self {
            TensorData::Tensor { full, .. } => *full,
            TensorData::Attribute => None,
        }
    }
}

/// The e-class analysis: tensor types by the IR's inference.
#[derive(Debug, Default)]
pub struct TensorAnalysis {
    pub symbols: SymbolTable,
    /// Types of the `input:` and `weight:` leaves.
    pub leaf_types: HashMap<String, TensorType>,
    /// Merges of classes with different types, each described (a rule is unsound).
    pub conflicts: Vec<String>,
    /// Each successful rewrite: the class it added an equivalent to, and the rule.
    pub provenance: Vec<(Id, egg::Symbol)>,
}

pub type TensorGraph = EGraph<TensorNode, TensorAnalysis>;

impl TensorAnalysis {
    /// The graph op of node `n`: its name and the attribute leaf of its first child.
    pub fn op_of(egraph: &TensorGraph, n: &TensorNode) -> Option<Op> {
        let name = n.op.as_str();
        if n.is_attribute() || name.starts_with("input:") || name.starts_with("weight:") {
            return None;
        }
        let attrs = n.children.first().and_then(|&c| attribute(egraph, c));
        let key = match &attrs {
            Some(a) => format!("{name}{a}"),
            None => name.to_string(),
        };
        kiln_ir::text::parse_op_key(&key, &egraph.analysis.symbols).ok()
    }

    /// The tensor operands of node `n` (its children after the attribute leaf, if any).
    pub fn operands<'n>(egraph: &TensorGraph, n: &'n TensorNode) -> &'n [Id] {
        match n.children.first() {
            Some(&c) if attribute(egraph, c).is_some() => &n.children[1..],
            _ => &n.children,
        }
    }
}

/// The attribute text of class `id`, if it is an attribute leaf.
pub fn attribute(egraph: &TensorGraph, id: Id) -> Option<String> {
    egraph[id].nodes.iter().find(|n| n.is_attribute()).map(|n| n.op.as_str().to_string())
}

impl Analysis<TensorNode> for TensorAnalysis {
    type Data = TensorData;

    fn make(egraph: &mut TensorGraph, enode: &TensorNode) -> TensorData {
        if enode.is_attribute() {
            return TensorData::Attribute;
        }
        let name = enode.op.as_str();
        if let Some(leaf) = name.strip_prefix("input:").or_else(|| name.strip_prefix("weight:")) {
            let ty = egraph.analysis.leaf_types.get(leaf).cloned();
            return TensorData::Tensor { ty, full: None, constant: name.starts_with("weight:") };
        }
        let Some(op) = TensorAnalysis::op_of(egraph, enode) else {
            return TensorData::Tensor { ty: None, full: None, constant: false };
        };
        let operands = TensorAnalysis::operands(egraph, enode);
        let types: Option<Vec<TensorType>> = operands.iter().map(|&c| egraph[c].data.ty().cloned()).collect();
        let ty = types.and_then(|ts| {
            let refs: Vec<&TensorType> = ts.iter().collect();
            kiln_ir::infer::infer(&op, &refs, &egraph.analysis.symbols).ok()
        });
        let constant = match op {
            Op::Full { .. } | Op::Iota { .. } => true,
            Op::DimValue { .. } => false,
            _ => operands.iter().all(|&c| egraph[c].data.is_constant()),
        };
        let full = match op {
            Op::Full { value, .. } => Some(value),
            _ => None,
        };
        TensorData::Tensor { ty, full, constant }
    }

    fn merge(&mut self, a: &mut TensorData, b: TensorData) -> DidMerge {
        match (&mut *a, b) {
            (TensorData::Attribute, TensorData::Attribute) => DidMerge(false, false),
            (
                TensorData::Tensor { ty: ta, full: fa, constant: ca },
                TensorData::Tensor { ty: tb, full: fb, constant: cb },
            ) => {
                let mut changed = DidMerge(false, false);
                match (ta.as_ref(), tb) {
                    (Some(x), Some(y)) if *x != y => self.conflicts.push(format!(
                        "a rule made {} equal to {}",
                        x.display(&self.symbols),
                        y.display(&self.symbols)
                    )),
                    (None, Some(y)) => {
                        *ta = Some(y);
                        changed = DidMerge(true, false);
                    }
                    (Some(_), None) => changed = DidMerge(false, true),
                    _ => {}
                }
                if fa.is_none() && fb.is_some() {
                    *fa = fb;
                    changed.0 = true;
                }
                if !*ca && cb {
                    *ca = true;
                    changed.0 = true;
                } else if *ca && !cb {
                    changed.1 = true;
                }
                changed
            }
            _ => {
                self.conflicts.push("a rule made an attribute equal to a tensor".into());
                DidMerge(false, false)
            }
        }
    }
}
