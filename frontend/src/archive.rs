//! Safe reading of the `.pt2` zip container.
//!
//! Every entry is read with a size limit (so a zip bomb cannot exhaust memory), paths that are
//! absolute or contain `..` are rejected, and the archive's top-level folder (named after the
//! file that `torch.export.save` wrote, not always the file we are given) is found from the
//! location of `models/model.json`.

use crate::error::FrontendError;
use std::io::{Read, Seek};

/// Largest single entry we accept (model JSON or one weight file).
pub const MAX_ENTRY_BYTES: u64 = 8 << 30;
/// Largest JSON document we parse.
pub const MAX_JSON_BYTES: u64 = 1 << 30;
/// Most bytes reserved up front from an entry's declared size; larger entries grow as read.
const INITIAL_CAPACITY: u64 = 64 << 20;

/// An opened archive with its entry prefix (e.g. `mlp/`).
pub struct Archive<R: Read + Seek> {
    zip: zip::ZipArchive<R>,
    prefix: String,
}

impl<R: Read + Seek> Archive<R> {
    pub fn open(reader: R) -> Result<Self, FrontendError> {
        let zip = zip::ZipArchive::new(reader).map_err(|e| FrontendError::Zip(e.to_string()))?;
        let mut model_json = None;
        for name in zip.file_names() {
            if !is_safe_path(name) {
                return Err(FrontendError::UnsafePath { entry: name.to_string() });
            }
            if model_json.is_none() && (name == "models/model.json" || name.ends_with("/models/model.json")) {
                model_json = Some(name.to_string());
            }
        }
        let model_json = model_json.ok_or_else(|| FrontendError::MissingEntry("<archive>/models/model.json".into()))?;
        let prefix = model_json.trim_end_matches("models/model.json").to_string();
        Ok(Archive { zip, prefix })
    }

    /// The folder all entries live in, with a trailing `/` (or empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn has(&self, relative: &str) -> bool {
        let full = format!("{}{}", self.prefix, relative);
        self.zip.index_for_name(&full).is_some()
    }

    /// Reads an entry relative to the prefix, refusing more than `limit` bytes.
    pub fn read(&mut self, relative: &str, limit: u64) -> Result<Vec<u8>, FrontendError> {
        self.read_prefix(relative, limit, limit).map(|(bytes, _)| bytes)
    }

    /// Reads an entry relative to the prefix, refusing one that declares more than `limit`
    /// bytes, and keeps only its first `keep` bytes in memory: the rest is decompressed and
    /// dropped, so the size and CRC are still checked but a small, highly compressed entry
    /// cannot make us hold more than `keep` bytes. Returns the kept bytes and the entry's length.
    pub fn read_prefix(&mut self, relative: &str, keep: u64, limit: u64) -> Result<(Vec<u8>, u64), FrontendError> {
        let full = format!("{}{}", self.prefix, relative);
        let mut file = match self.zip.by_name(&full) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Err(FrontendError::MissingEntry(full)),
            Err(e) => return Err(FrontendError::CorruptEntry { entry: full, reason: e.to_string() }),
        };
        let declared = file.size();
        if declared > limit {
            return Err(FrontendError::TooLarge { entry: full, size: declared, limit });
        }
        let kept = declared.min(keep);
        // The header's size is not trusted for more than a modest up-front reservation.
        let mut out = Vec::with_capacity(kept.min(INITIAL_CAPACITY) as usize);
        // Read at most one byte past the declared size, so a lying header cannot make us read on.
        let read = (&mut file).take(kept).read_to_end(&mut out).and_then(|n| {
            let rest = std::io::copy(&mut (&mut file).take(declared + 1 - n as u64), &mut std::io::sink())?;
            Ok(n as u64 + rest)
        });
        match read {
            Ok(n) if n == declared => Ok((out, n)),
            Ok(n) => Err(FrontendError::CorruptEntry {
                entry: full,
                reason: format!("declared {declared} bytes but holds {}", if n > declared { "more".to_string() } else { n.to_string() }),
            }),
            Err(e) => Err(FrontendError::CorruptEntry { entry: full, reason: e.to_string() }),
        }
    }

    /// Reads and parses a JSON entry.
    pub fn read_json(&mut self, relative: &str) -> Result<serde_json::Value, FrontendError> {
        let bytes = self.read(relative, MAX_JSON_BYTES)?;
        serde_json::from_slice(&bytes).map_err(|e| FrontendError::Json {
            entry: format!("{}{}", self.prefix, relative),
            reason: e.to_string(),
        })
    }
}

/// Rejects absolute paths, drive letters, backslashes and `..` components.
pub fn is_safe_path(name: &str) -> bool {
    !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains(':')
        && name.split('/').all(|part| part != "..")
}
