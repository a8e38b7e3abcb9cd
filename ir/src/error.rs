//! Errors of the IR layer.

use thiserror::Error;

/// What went wrong building, verifying, parsing or interpreting IR.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum IrError {
    #[error("op `{op}` (node `{node}`): {reason}")]
    Type { op: String, node: String, reason: String },
    #[error("node `{node}` uses value #{value}, which does not exist")]
    DanglingValue { node: String, value: u32 },
    #[error("verifier: {0}")]
    Verify(String),
    #[error("text form, line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("interpreter: {0}")]
    Interp(String),
}
