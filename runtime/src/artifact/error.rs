//! Errors of writing and opening `.kiln` artifacts.

use std::fmt;
use std::path::PathBuf;

use super::format::SectionKind;

/// Which checksummed part of an artifact an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionRef {
    /// The header together with the section table.
    Header,
    /// Entry `index` of the section table.
    Section { index: u32, kind: SectionKind },
}

impl fmt::Display for SectionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SectionRef::Header => f.write_str("the header and section table"),
            SectionRef::Section { index, kind } => write!(f, "section {index} ({kind})"),
        }
    }
}

/// Shows up to 8 bytes as an escaped string, for error messages about magic bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShownBytes(pub Vec<u8>);

impl fmt::Display for ShownBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// Everything that can go wrong writing or opening an artifact. Every variant that concerns a
/// file names it; none of them is raised by a panic.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: cannot {action}: {error}")]
    Io {
        path: PathBuf,
        action: &'static str,
        error: std::io::Error,
    },

    #[error("writing the artifact failed: {0}")]
    Stream(std::io::Error),

    #[error("cannot write artifact: {0}")]
    Invalid(String),

    #[error("{path}: the file is empty, not a kiln artifact")]
    Empty { path: PathBuf },

    #[error("{path}: not a kiln artifact: the file starts with {found}, a kiln artifact with \"KILNART\\0\"")]
    BadMagic { path: PathBuf, found: ShownBytes },

    #[error(
        "{path}: artifact format version {found} is not supported: this runtime reads version \
         {supported} only; recompile the model with this version of kiln"
    )]
    UnsupportedVersion { path: PathBuf, found: u32, supported: u32 },

    #[error(
        "{path}: truncated: {what} needs {needed} bytes but the file has {len} bytes \
         (an interrupted write, copy or download?)"
    )]
    Truncated { path: PathBuf, what: &'static str, needed: u64, len: u64 },

    #[error("{path}: corrupt: checksum of {section} is {computed:#010x}, the file says {stored:#010x}")]
    Checksum { path: PathBuf, section: SectionRef, stored: u32, computed: u32 },

    #[error("{path}: malformed {what}: {detail}")]
    Malformed { path: PathBuf, what: &'static str, detail: String },

    #[error("{path}: section {index}: unknown section kind {kind} (this runtime knows 1 = manifest, 2 = weights, 3 = code object)")]
    UnknownSectionKind { path: PathBuf, index: u32, kind: u32 },

    #[error(
        "{path}: section {index} ({kind}) at byte {offset}, {length} bytes long: {detail} \
         (the file has {file_size} bytes)"
    )]
    SectionBounds {
        path: PathBuf,
        index: u32,
        kind: SectionKind,
        offset: u64,
        length: u64,
        file_size: u64,
        detail: String,
    },

    #[error("{path}: the manifest (section {section}) is not valid manifest JSON: {source}")]
    Manifest {
        path: PathBuf,
        section: u32,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: invalid manifest: {detail}")]
    ManifestInvalid { path: PathBuf, detail: String },

    #[error("{path}: weight {index} ({name}): {detail}")]
    Weight { path: PathBuf, index: usize, name: String, detail: String },
}
