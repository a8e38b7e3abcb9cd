//! Errors of the pass layer.

use kiln_ir::IrError;
use thiserror::Error;

/// What went wrong while optimizing a graph; every variant names the pass, and the node where
/// there is one (by its result's name).
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PassError {
    /// The graph handed to a pass does not verify (passes only accept verified graphs).
    #[error("{pass}: the input graph is invalid: {source}")]
    InvalidInput { pass: &'static str, source: IrError },
    /// A pass produced a graph that does not verify: a bug in the pass.
    #[error("{pass}: produced an invalid graph: {source}")]
    Verify { pass: &'static str, source: IrError },
    /// A rewrite of a node would change the node's result type: a bug in the pass.
    #[error("{pass}: rewriting node `{node}` ({op}) would change its type: {reason}")]
    Rewrite { pass: &'static str, node: String, op: &'static str, reason: String },
    /// Evaluating a constant node at compile time failed (the same error would occur at run
    /// time, e.g. a gather index out of range in constant data).
    #[error("fold_constants: node `{node}` ({op}) cannot be evaluated at compile time: {source}")]
    Fold { node: String, op: &'static str, source: IrError },
    /// The e-graph optimizer found an unsound rewrite (a merge of differently typed values).
    #[error("egraph: {reason}")]
    Egraph { reason: String },
    /// A weight the graph uses has no bytes in the weight store.
    #[error("{pass}: weight `{name}` is not in the weight store")]
    MissingWeight { pass: &'static str, name: String },
}

/// Checks that a pass's input verifies, so that the pass itself can index the graph freely.
pub(crate) fn check_input(pass: &'static str, graph: &kiln_ir::Graph) -> Result<(), PassError> {
    kiln_ir::verify::verify(graph).map_err(|source| PassError::InvalidInput { pass, source })
}
