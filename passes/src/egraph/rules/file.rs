//! Rules from a text file, for trying a rewrite without rebuilding kiln (`kiln compile
//! --rules FILE`). One rule per line, `#` starts a comment:
//!
//! ```text
//! # name: searcher => applier   (egg patterns over kiln's ops; attributes are the first child)
//! double-to-add: (mul ?x (full {shape=[],value=2.0,dtype=f32})) => (add ?x ?x)
//! ```
//!
//! An applier's result must have the matched value's type (dtype and shape), as for the
//! built-in rules; a file rule that is not sound in value (only the types are checked) gives
//! wrong results, so check a model compiled with one with `kiln run --check`.

use super::{rule, Rule};
use crate::egraph::lang::TensorNode;
use egg::{Pattern, Var};

const THEME: &str = "file";

/// Parses a rule file; errors name the line.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let bad = |why: String| format!("line {n}: {why}\n  {}", raw.trim());
        let (name, body) = line.split_once(':').ok_or_else(|| bad("expected `name: searcher => applier`".into()))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad(format!("`{name}` is not a rule name (one word)")));
        }
        if !names.insert(name.to_string()) {
            return Err(bad(format!("a second rule named `{name}`")));
        }
        let (lhs, rhs) = body.split_once("=>").ok_or_else(|| bad("expected `=>` between the two patterns".into()))?;
        let searcher: Pattern<TensorNode> = lhs.trim().parse().map_err(|e| bad(format!("the searcher: {e}")))?;
        let applier: Pattern<TensorNode> = rhs.trim().parse().map_err(|e| bad(format!("the applier: {e}")))?;
        let bound: Vec<Var> = searcher.vars();
        if let Some(v) = applier.vars().into_iter().find(|v| !bound.contains(v)) {
            return Err(bad(format!("the applier uses {v}, which the searcher does not bind")));
        }
        if searcher.ast.as_ref().last().is_some_and(|n| matches!(n, egg::ENodeOrVar::Var(_))) {
            return Err(bad("the searcher is a bare variable (it would match everything)".into()));
        }
        let pattern = lhs.trim().to_string();
        let ast = applier.ast;
        rules.push(rule(name, THEME, "from a rule file", &pattern, move |g, _, s| Some(g.add_instantiation(&ast, s))));
    }
    Ok(rules)
}
