//! Writing `.kiln` artifacts: lay out the sections, fill the manifest's weight offsets and
//! code-object section indices, then stream header, table and sections.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ArtifactError;
use super::format::{
    align_up, encode_header, header_size, SectionInfo, SectionKind, CODE_ALIGN, MANIFEST_ALIGN, MAX_COMPILER_VERSION,
    MAX_SECTIONS, WEIGHT_ALIGN,
};
use super::validate::{validate_manifest, weight_size};
use crate::manifest::{CodeObjectSpec, ElemType, Manifest, WeightSpec};

/// One weight to store, in the order the plan's `BufferRef::Weight(i)` indexes.
#[derive(Clone, Copy, Debug)]
pub struct WeightData<'a> {
    pub name: &'a str,
    pub dtype: ElemType,
    pub shape: &'a [i64],
    /// Little-endian element bytes, exactly `product(shape) * dtype size` of them.
    pub bytes: &'a [u8],
}

/// One target's code object to store.
#[derive(Clone, Copy, Debug)]
pub struct CodeObjectData<'a> {
    pub target: &'a str,
    /// e.g. `elf-relocatable`, `ptx`, `hsaco`.
    pub format: &'a str,
    pub bytes: &'a [u8],
    /// CPU features the code needs (see [`CodeObjectSpec::cpu_features`]).
    pub cpu_features: &'a [String],
}

const ZEROS: [u8; 4096] = [0; 4096];

/// A laid-out artifact, ready to be written (borrowing the weight and code bytes).
///
/// [`ArtifactWriter::new`] validates the inputs, fills `manifest.weights` (offsets and sizes)
/// and `manifest.code_objects` (section indices) and computes every offset and checksum; the
/// `write_*` methods then only copy bytes.
#[derive(Debug)]
pub struct ArtifactWriter<'a> {
    manifest: Manifest,
    manifest_json: Vec<u8>,
    weights: Vec<&'a [u8]>,
    code: Vec<&'a [u8]>,
    header: Vec<u8>,
    sections: Vec<SectionInfo>,
    file_size: u64,
}

fn invalid(msg: String) -> ArtifactError {
    ArtifactError::Invalid(msg)
}

impl<'a> ArtifactWriter<'a> {
    /// Lays out an artifact. `manifest.weights` and `manifest.code_objects` are either empty
    /// (filled from `weights` and `code_objects`) or must list the same weights (name, dtype,
    /// shape) and code objects (target, format) in the same order; their offsets, sizes and
    /// section indices are recomputed either way.
    pub fn new(
        manifest: &Manifest,
        weights: &[WeightData<'a>],
        code_objects: &[CodeObjectData<'a>],
    ) -> Result<ArtifactWriter<'a>, ArtifactError> {
        let mut m = manifest.clone();
        if m.compiler_version.len() > MAX_COMPILER_VERSION {
            return Err(invalid(format!(
                "compiler version is {} bytes, at most {MAX_COMPILER_VERSION} fit the header",
                m.compiler_version.len()
            )));
        }
        let nsections = 2 + code_objects.len();
        if nsections > MAX_SECTIONS {
            return Err(invalid(format!("{} code objects, at most {} fit", code_objects.len(), MAX_SECTIONS - 2)));
        }
        if !m.weights.is_empty() && m.weights.len() != weights.len() {
            return Err(invalid(format!(
                "the manifest lists {} weights but {} were given",
                m.weights.len(),
                weights.len()
            )));
        }
        if !m.code_objects.is_empty() && m.code_objects.len() != code_objects.len() {
            return Err(invalid(format!(
                "the manifest lists {} code objects but {} were given",
                m.code_objects.len(),
                code_objects.len()
            )));
        }

        // Weight section: each weight at a 64-byte-aligned offset, in order.
        let mut specs = Vec::with_capacity(weights.len());
        let mut end: u64 = 0;
        for (i, w) in weights.iter().enumerate() {
            let need = weight_size(w.shape, w.dtype.size_bytes())
                .map_err(|e| invalid(format!("weight {i} ({}): {e}", w.name)))?;
            if need != w.bytes.len() as u64 {
                return Err(invalid(format!(
                    "weight {i} ({}): {:?}{:?} needs {need} bytes, {} were given",
                    w.name,
                    w.dtype,
                    w.shape,
                    w.bytes.len()
                )));
            }
            if let Some(old) = m.weights.get(i) {
                if old.name != w.name || old.dtype != w.dtype || old.shape != w.shape {
                    return Err(invalid(format!(
                        "weight {i}: the manifest has {} {:?}{:?}, the data is {} {:?}{:?}",
                        old.name, old.dtype, old.shape, w.name, w.dtype, w.shape
                    )));
                }
            }
            let offset = align_up(end, WEIGHT_ALIGN).ok_or_else(|| invalid("weights overflow u64".into()))?;
            end = offset + need;
            specs.push(WeightSpec {
                name: w.name.to_string(),
                dtype: w.dtype,
                shape: w.shape.to_vec(),
                offset,
                bytes: need,
            });
        }
        m.weights = specs;

        let mut cos = Vec::with_capacity(code_objects.len());
        for (j, c) in code_objects.iter().enumerate() {
            if let Some(old) = m.code_objects.get(j) {
                if old.target != c.target || old.format != c.format {
                    return Err(invalid(format!(
                        "code object {j}: the manifest has {} ({}), the data is {} ({})",
                        old.target, old.format, c.target, c.format
                    )));
                }
            }
            cos.push(CodeObjectSpec {
                target: c.target.to_string(),
                format: c.format.to_string(),
                section: 2 + j as u32,
                cpu_features: c.cpu_features.to_vec(),
            });
        }
        m.code_objects = cos;
        validate_manifest(&m).map_err(invalid)?;

        let manifest_json = serde_json::to_vec(&m).map_err(|e| invalid(format!("serializing the manifest: {e}")))?;

        // Checksums.
        let mut h = crc32fast::Hasher::new();
        let mut pos = 0u64;
        for (spec, w) in m.weights.iter().zip(weights) {
            h.update(&ZEROS[..(spec.offset - pos) as usize]);
            h.update(w.bytes);
            pos = spec.offset + spec.bytes;
        }
        let contents: Vec<(SectionKind, u32, u64, u32)> = [
            (SectionKind::Manifest, MANIFEST_ALIGN, manifest_json.len() as u64, crc32fast::hash(&manifest_json)),
            (SectionKind::Weights, WEIGHT_ALIGN as u32, end, h.finalize()),
        ]
        .into_iter()
        .chain(
            code_objects
                .iter()
                .map(|c| (SectionKind::CodeObject, CODE_ALIGN, c.bytes.len() as u64, crc32fast::hash(c.bytes))),
        )
        .collect();

        // Layout.
        let mut pos = header_size(m.compiler_version.len(), nsections) as u64;
        let mut sections = Vec::with_capacity(nsections);
        for (kind, alignment, length, crc) in contents {
            let offset =
                align_up(pos, alignment as u64).ok_or_else(|| invalid("artifact size overflows u64".into()))?;
            pos = offset.checked_add(length).ok_or_else(|| invalid("artifact size overflows u64".into()))?;
            sections.push(SectionInfo { kind, alignment, offset, length, crc });
        }
        let header = encode_header(&m.compiler_version, pos, &sections);
        Ok(ArtifactWriter {
            manifest: m,
            manifest_json,
            weights: weights.iter().map(|w| w.bytes).collect(),
            code: code_objects.iter().map(|c| c.bytes).collect(),
            header,
            sections,
            file_size: pos,
        })
    }

    /// The manifest as it is stored: weight offsets and code-object sections filled in.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Length of the artifact in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The section table as it will be written.
    pub fn sections(&self) -> &[SectionInfo] {
        &self.sections
    }

    /// Streams the artifact into `w`.
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<(), ArtifactError> {
        self.write_inner(w).map_err(ArtifactError::Stream)
    }

    fn write_inner<W: Write>(&self, w: &mut W) -> std::io::Result<()> {
        fn pad<W: Write>(w: &mut W, mut n: u64) -> std::io::Result<()> {
            while n > 0 {
                let k = n.min(ZEROS.len() as u64);
                w.write_all(&ZEROS[..k as usize])?;
                n -= k;
            }
            Ok(())
        }
        w.write_all(&self.header)?;
        let mut pos = self.header.len() as u64;
        for (i, s) in self.sections.iter().enumerate() {
            pad(w, s.offset - pos)?;
            match s.kind {
                SectionKind::Manifest => w.write_all(&self.manifest_json)?,
                SectionKind::Weights => {
                    let mut at = 0u64;
                    for (spec, bytes) in self.manifest.weights.iter().zip(&self.weights) {
                        pad(w, spec.offset - at)?;
                        w.write_all(bytes)?;
                        at = spec.offset + spec.bytes;
                    }
                }
                SectionKind::CodeObject => w.write_all(self.code[i - 2])?,
            }
            pos = s.offset + s.length;
        }
        Ok(())
    }

    /// The whole artifact in memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.file_size as usize);
        self.write_inner(&mut v).expect("writing to a Vec cannot fail");
        v
    }

    /// Writes the artifact to `path` atomically: into a temporary file in the same folder,
    /// synced, then renamed over `path`. On any error the temporary file is removed and `path`
    /// is untouched.
    pub fn write_to_path(&self, path: impl AsRef<Path>) -> Result<(), ArtifactError> {
        let path = path.as_ref();
        let tmp = temp_path(path)?;
        let result = self.write_file(&tmp);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
            return result;
        }
        if let Err(error) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(ArtifactError::Io {
                path: path.to_path_buf(),
                action: "rename the temporary file onto",
                error,
            });
        }
        // Make the rename durable where the platform allows; failing to is not an error.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    fn write_file(&self, tmp: &Path) -> Result<(), ArtifactError> {
        let io = |action, error| ArtifactError::Io { path: tmp.to_path_buf(), action, error };
        let f = OpenOptions::new().write(true).create_new(true).open(tmp).map_err(|e| io("create", e))?;
        let mut bw = BufWriter::with_capacity(1 << 20, f);
        self.write_inner(&mut bw).map_err(|e| io("write", e))?;
        let f = bw.into_inner().map_err(|e| io("write", e.into_error()))?;
        f.sync_all().map_err(|e| io("sync", e))?;
        Ok(())
    }
}

/// `.<name>.<pid>.<n>.tmp` next to `path`.
fn temp_path(path: &Path) -> Result<PathBuf, ArtifactError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| ArtifactError::Io {
        path: path.to_path_buf(),
        action: "write to",
        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"),
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.{n}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Writes an artifact to `path` atomically (see [`ArtifactWriter::write_to_path`]) and returns
/// the manifest as stored, with weight offsets and code-object sections filled in.
pub fn write_artifact(
    path: impl AsRef<Path>,
    manifest: &Manifest,
    weights: &[WeightData<'_>],
    code_objects: &[CodeObjectData<'_>],
) -> Result<Manifest, ArtifactError> {
    let w = ArtifactWriter::new(manifest, weights, code_objects)?;
    w.write_to_path(path)?;
    Ok(w.manifest)
}
