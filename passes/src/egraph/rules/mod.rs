//! The rewrite rules, grouped by theme, one file per theme. Each rule is a [`Rule`]: a name, a
//! theme, a doc saying why it is sound and when it applies, and an `egg` rewrite: an `egg`
//! pattern over [`TensorNode`]s (attributes are the first child, so `(permute ?p ?x)` matches
//! any permute) and a [`Build`] that constructs the replacement, or declines.
//!
//! Every replacement is checked before it is merged: its class must have the matched class's
//! type (dtype and shape), so a rule can never change a type through broadcasting; a rule that
//! would is skipped for that match. No rule is a blanket commutativity or associativity law.

pub mod algebra;
pub mod file;
pub mod folding;
pub mod fused;
pub mod layout;
pub mod linalg;

use super::lang::{TensorGraph, TensorNode};
use egg::{Applier, Id, Pattern, PatternAst, Rewrite, Subst, Var};

/// One named rule.
pub struct Rule {
    pub name: String,
    pub theme: &'static str,
    /// Why the rule is sound and when it applies.
    pub doc: &'static str,
    pub rewrite: Rewrite<TensorNode, super::lang::TensorAnalysis>,
}

/// Builds the replacement of a match (the matched class, the substitution): returns its
/// class, or `None` to decline.
pub type BuildFn = Box<dyn Fn(&mut TensorGraph, Id, &Subst) -> Option<Id> + Send + Sync>;

/// An applier from a [`BuildFn`]; unions the result with the matched class when the types
/// agree.
pub struct Build(pub BuildFn);

impl Applier<TensorNode, super::lang::TensorAnalysis> for Build {
    fn apply_one(
        &self,
        egraph: &mut TensorGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<TensorNode>>,
        rule_name: egg::Symbol,
    ) -> Vec<Id> {
        let Some(new) = (self.0)(egraph, eclass, subst) else { return vec![] };
        let (want, got) = (egraph[eclass].data.ty(), egraph[new].data.ty());
        if want.is_none() || want != got {
            return vec![];
        }
        if egraph.union_trusted(eclass, new, rule_name) {
            egraph.analysis.provenance.push((eclass, rule_name));
            vec![eclass]
        } else {
            vec![]
        }
    }
}

/// A rule from a pattern and a builder.
pub fn rule(
    name: &str,
    theme: &'static str,
    doc: &'static str,
    pattern: &str,
    build: impl Fn(&mut TensorGraph, Id, &Subst) -> Option<Id> + Send + Sync + 'static,
) -> Rule {
    let searcher: Pattern<TensorNode> = pattern.parse().unwrap_or_else(|e| panic!("rule {name}: {e}"));
    let rewrite = Rewrite::new(name, searcher, Build(Box::new(build))).unwrap_or_else(|e| panic!("rule {name}: {e}"));
    Rule { name: name.to_string(), theme, doc, rewrite }
}

/// The class bound to `?name`.
pub fn var(subst: &Subst, name: &str) -> Id {
    subst[name.parse::<Var>().expect("a pattern variable")]
}

/// The value of a `full` constant bound to `?name`.
pub fn full_value(egraph: &TensorGraph, subst: &Subst, name: &str) -> Option<f64> {
    egraph[var(subst, name)].data.full()
}

/// Every rule, in a fixed order (themes, then rules as each file lists them).
pub fn all() -> Vec<Rule> {
    let mut rules = algebra::rules();
    rules.extend(layout::rules());
    rules.extend(linalg::rules());
    rules.extend(folding::rules());
    rules.extend(fused::rules());
    rules
}

/// Adds `op` applied to `operands` (its attribute leaf first) and returns its class.
pub fn add_op(egraph: &mut TensorGraph, op: &kiln_ir::Op, operands: &[Id]) -> Id {
    let (name, attrs) = super::lang::split_op(op, &egraph.analysis.symbols);
    let mut children = Vec::with_capacity(operands.len() + 1);
    if let Some(a) = attrs {
        children.push(egraph.add(TensorNode::leaf(&a)));
    }
    children.extend_from_slice(operands);
    egraph.add(TensorNode::new(&name, children))
}

/// The graph op of the class bound to `?name`, parsed from its attribute leaf: `op` is the
/// op's name, e.g. `permute`.
pub fn attributed_op(egraph: &TensorGraph, subst: &Subst, attr_var: &str, op: &str) -> Option<kiln_ir::Op> {
    let attrs = super::lang::attribute(egraph, var(subst, attr_var))?;
    kiln_ir::text::parse_op_key(&format!("{op}{attrs}"), &egraph.analysis.symbols).ok()
}
