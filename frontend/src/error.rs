//! Errors of the frontend: everything that can be wrong with a `.pt2` archive or its graph.

use std::fmt;
use thiserror::Error;

/// One op the frontend cannot lower, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct UnsupportedOp {
    /// ATen target, e.g. `torch.ops.aten.grid_sampler_2d.default`.
    pub target: String,
    /// The export's node name.
    pub node: String,
    /// The user's source line from the node's stack trace, when present.
    pub source: Option<String>,
    /// Why it is unsupported, when the op is known but this use of it is not.
    pub reason: Option<String>,
}

impl fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (node `{}`", self.target, self.node)?;
        if let Some(s) = &self.source {
            write!(f, ", at {s}")?;
        }
        write!(f, ")")?;
        if let Some(r) = &self.reason {
            write!(f, ": {r}")?;
        }
        Ok(())
    }
}

fn list_unsupported(ops: &[UnsupportedOp]) -> String {
    ops.iter().map(|o| format!("\n  - {o}")).collect()
}

/// What went wrong reading an archive into IR.
#[derive(Debug, Error)]
pub enum FrontendError {
    #[error("cannot read `{path}`: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("not a valid .pt2 archive (zip): {0}")]
    Zip(String),
    #[error("archive entry `{0}` is missing; is this a file written by torch.export.save?")]
    MissingEntry(String),
    #[error("archive entry `{entry}` has an unsafe path (absolute or escaping the archive)")]
    UnsafePath { entry: String },
    #[error("archive entry `{entry}` is too large: {size} bytes (limit {limit} bytes)")]
    TooLarge { entry: String, size: u64, limit: u64 },
    #[error("archive entry `{entry}` is corrupt: {reason}")]
    CorruptEntry { entry: String, reason: String },
    #[error("`{entry}` is not valid JSON: {reason}")]
    Json { entry: String, reason: String },
    #[error("unexpected export schema in `{entry}` at {path}: {reason}")]
    Schema { entry: String, path: String, reason: String },
    #[error("export schema major version {found} is not supported (kiln reads major version {supported}); re-export with a PyTorch release that writes schema {supported}.x")]
    SchemaVersion { found: i64, supported: i64 },
    #[error("weight `{name}`: {reason}")]
    Weight { name: String, reason: String },
    #[error("unknown dtype code {code} for `{name}`")]
    UnknownDType { name: String, code: i64 },
    #[error("dtype `{dtype}` of `{name}` is not supported by kiln")]
    UnsupportedDType { name: String, dtype: String },
    #[error("symbolic size `{expr}` cannot be read: {reason}")]
    SymExpr { expr: String, reason: String },
    #[error("{} unsupported op(s) in the graph:{}", .0.len(), list_unsupported(.0))]
    Unsupported(Vec<UnsupportedOp>),
    #[error("node `{node}` ({target}){}: {reason}", source_suffix(.location))]
    Lowering { target: String, node: String, location: Option<String>, reason: String },
    #[error("internal IR error: {0}")]
    Ir(#[from] kiln_ir::IrError),
}

fn source_suffix(source: &Option<String>) -> String {
    source.as_ref().map(|s| format!(" at {s}")).unwrap_or_default()
}
