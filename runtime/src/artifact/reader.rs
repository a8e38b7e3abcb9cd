//! Opening `.kiln` artifacts: map the file read-only and check every rule of the format
//! before handing out any byte.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::{ArtifactError, SectionRef, ShownBytes};
use super::format::{
    align_up, header_crc, header_size, table_prefix, u32_at, u64_at, SectionInfo, SectionKind, ENTRY_SIZE,
    FIXED_HEADER, MAGIC, MAX_ALIGN, MAX_COMPILER_VERSION, MAX_SECTIONS, OFF_COMPILER_LEN, OFF_FILE_SIZE,
    OFF_HEADER_CRC, OFF_HEADER_SIZE, OFF_VERSION, WEIGHT_ALIGN,
};
use super::validate::validate_manifest;
use crate::manifest::Manifest;
use crate::ARTIFACT_FORMAT_VERSION;

/// An opened, fully validated artifact. The weight and code bytes are borrowed from a
/// read-only mapping of the file (zero-copy); each weight is 64-byte aligned in memory.
///
/// The file must not be modified in place while it is open (kiln's writer never does that:
/// it replaces files by renaming).
#[derive(Debug)]
pub struct Artifact {
    path: PathBuf,
    map: Mmap,
    compiler_version: String,
    sections: Vec<SectionInfo>,
    manifest: Manifest,
    weights: Range<usize>,
}

/// What [`parse`] finds in a valid artifact.
struct Parsed {
    compiler_version: String,
    sections: Vec<SectionInfo>,
    manifest: Manifest,
    weights: Range<usize>,
}

impl Artifact {
    /// Maps and validates the artifact at `path`: magic, format version, header checksum, file
    /// size, section table layout and bounds, every section's checksum, the manifest (JSON and
    /// consistency) and every weight's bounds and alignment.
    pub fn open(path: impl AsRef<Path>) -> Result<Artifact, ArtifactError> {
        let path = path.as_ref();
        let io = |action, error| ArtifactError::Io { path: path.to_path_buf(), action, error };
        let file = File::open(path).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("read the metadata of", e))?.len();
        if len == 0 {
            return Err(ArtifactError::Empty { path: path.to_path_buf() });
        }
        // SAFETY: the mapping is read-only and private to this `Artifact`; the format's contract
        // (module doc) is that artifacts are replaced by rename, never modified in place, while
        // they may be open. Every read goes through the bounds checks of `parse`.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io("map", e))?;
        let p = parse(&map, path)?;
        Ok(Artifact {
            path: path.to_path_buf(),
            map,
            compiler_version: p.compiler_version,
            sections: p.sections,
            manifest: p.manifest,
            weights: p.weights,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container format version (always [`ARTIFACT_FORMAT_VERSION`] for an open artifact).
    pub fn format_version(&self) -> u32 {
        ARTIFACT_FORMAT_VERSION
    }

    /// The version string of the kiln that wrote the artifact.
    pub fn compiler_version(&self) -> &str {
        &self.compiler_version
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Length of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }

    /// The section table.
    pub fn sections(&self) -> &[SectionInfo] {
        &self.sections
    }

    /// The bytes of section `index`, or `None` if there is no such section.
    pub fn section_bytes(&self, index: usize) -> Option<&[u8]> {
        let s = self.sections.get(index)?;
        Some(&self.map[s.offset as usize..(s.offset + s.length) as usize])
    }

    /// The whole weight section (64-byte aligned); weight `i` is at `manifest().weights[i].offset`.
    pub fn weights_section(&self) -> &[u8] {
        &self.map[self.weights.clone()]
    }

    /// The bytes of weight `i` (manifest order), 64-byte aligned; `None` if there is no weight `i`.
    pub fn weight_bytes(&self, i: usize) -> Option<&[u8]> {
        let w = self.manifest.weights.get(i)?;
        let start = self.weights.start + w.offset as usize;
        Some(&self.map[start..start + w.bytes as usize])
    }

    /// The code object for `target` (e.g. `x86_64`), if the artifact has one.
    pub fn code_object(&self, target: &str) -> Option<&[u8]> {
        let spec = self.manifest.code_objects.iter().find(|c| c.target == target)?;
        self.section_bytes(spec.section as usize)
    }

    /// The targets the artifact has code for, in manifest order.
    pub fn targets(&self) -> impl Iterator<Item = &str> + '_ {
        self.manifest.code_objects.iter().map(|c| c.target.as_str())
    }
}

/// Checks everything and returns what an [`Artifact`] keeps. Never panics: every index is
/// checked against `b.len()` first, and nothing is allocated from a length that has not been
/// bounded by the file's size.
fn parse(b: &[u8], path: &Path) -> Result<Parsed, ArtifactError> {
    let p = || path.to_path_buf();
    let len = b.len() as u64;
    let truncated = |what, needed: usize| ArtifactError::Truncated { path: p(), what, needed: needed as u64, len };
    let malformed = |what, detail: String| ArtifactError::Malformed { path: p(), what, detail };

    // Magic and version: nothing else is read from a file of another version.
    let head = &b[..b.len().min(MAGIC.len())];
    if head.is_empty() {
        return Err(ArtifactError::Empty { path: p() });
    }
    if head != &MAGIC[..head.len()] {
        return Err(ArtifactError::BadMagic { path: p(), found: ShownBytes(head.to_vec()) });
    }
    if b.len() < OFF_VERSION + 4 {
        return Err(truncated("the magic bytes and format version", OFF_VERSION + 4));
    }
    let found = u32_at(b, OFF_VERSION);
    if found != ARTIFACT_FORMAT_VERSION {
        return Err(ArtifactError::UnsupportedVersion { path: p(), found, supported: ARTIFACT_FORMAT_VERSION });
    }

    // Header: its size, then its checksum, then its fields.
    if b.len() < FIXED_HEADER {
        return Err(truncated("the fixed header", FIXED_HEADER));
    }
    let hsize = u32_at(b, OFF_HEADER_SIZE) as usize;
    let min = header_size(0, 0);
    if hsize < min {
        return Err(malformed(
            "header",
            format!("header_size is {hsize}, less than the smallest header ({min} bytes)"),
        ));
    }
    if hsize > b.len() {
        return Err(truncated("the header and section table", hsize));
    }
    let h = &b[..hsize];
    let (stored, computed) = (u32_at(h, OFF_HEADER_CRC), header_crc(h));
    if stored != computed {
        return Err(ArtifactError::Checksum { path: p(), section: SectionRef::Header, stored, computed });
    }
    let file_size = u64_at(h, OFF_FILE_SIZE);
    if file_size > len {
        return Err(ArtifactError::Truncated { path: p(), what: "the artifact", needed: file_size, len });
    }
    if file_size < len {
        return Err(malformed(
            "file",
            format!("{} bytes follow the end of the artifact at byte {file_size}", len - file_size),
        ));
    }
    let n = u32_at(h, OFF_COMPILER_LEN) as usize;
    if n > MAX_COMPILER_VERSION {
        return Err(malformed("header", format!("compiler version length {n} exceeds {MAX_COMPILER_VERSION}")));
    }
    let tp = table_prefix(n);
    if tp + 8 > hsize {
        return Err(malformed("header", format!("a compiler version of {n} bytes does not fit a {hsize}-byte header")));
    }
    let compiler_version = std::str::from_utf8(&h[FIXED_HEADER..FIXED_HEADER + n])
        .map_err(|e| malformed("header", format!("compiler version is not UTF-8: {e}")))?
        .to_string();
    if h[FIXED_HEADER + n..tp].iter().any(|&x| x != 0) {
        return Err(malformed("header", "padding after the compiler version is not zero".into()));
    }
    let count = u32_at(h, tp) as usize;
    if count > MAX_SECTIONS {
        return Err(malformed("section table", format!("{count} sections, at most {MAX_SECTIONS} are allowed")));
    }
    if header_size(n, count) != hsize {
        return Err(malformed(
            "header",
            format!("header_size is {hsize} but {count} sections make it {}", header_size(n, count)),
        ));
    }
    if u32_at(h, tp + 4) != 0 {
        return Err(malformed("section table", "reserved field after section_count is not zero".into()));
    }

    // Section table: canonical layout, bounds, zero padding.
    let mut sections = Vec::with_capacity(count); // count * 32 <= hsize <= file length
    let mut pos = hsize as u64;
    for i in 0..count {
        let e = tp + 8 + ENTRY_SIZE * i;
        let code = u32_at(h, e);
        let kind = SectionKind::from_code(code).ok_or(ArtifactError::UnknownSectionKind {
            path: p(),
            index: i as u32,
            kind: code,
        })?;
        let alignment = u32_at(h, e + 4);
        let offset = u64_at(h, e + 8);
        let length = u64_at(h, e + 16);
        let crc = u32_at(h, e + 24);
        if !alignment.is_power_of_two() || alignment > MAX_ALIGN {
            return Err(malformed(
                "section table",
                format!("section {i} ({kind}): alignment {alignment} is not a power of two up to {MAX_ALIGN}"),
            ));
        }
        if kind == SectionKind::Weights && (alignment as u64) < WEIGHT_ALIGN {
            return Err(malformed(
                "section table",
                format!("section {i} (weights): alignment {alignment} is less than {WEIGHT_ALIGN}"),
            ));
        }
        if u32_at(h, e + 28) != 0 {
            return Err(malformed("section table", format!("section {i}: reserved field is not zero")));
        }
        let bounds = |detail: String| ArtifactError::SectionBounds {
            path: p(),
            index: i as u32,
            kind,
            offset,
            length,
            file_size,
            detail,
        };
        // pos <= file_size, so this cannot overflow a u64.
        let expected = align_up(pos, alignment as u64).unwrap_or(u64::MAX);
        if offset != expected {
            return Err(bounds(format!("the layout puts it at byte {expected}, right after the previous part")));
        }
        let end = match offset.checked_add(length) {
            Some(end) if end <= file_size => end,
            _ => return Err(bounds("it ends past the end of the file".into())),
        };
        if let Some(k) = b[pos as usize..offset as usize].iter().position(|&x| x != 0) {
            return Err(malformed("padding", format!("byte {} before section {i} is not zero", pos as usize + k)));
        }
        sections.push(SectionInfo { kind, alignment, offset, length, crc });
        pos = end;
    }
    if pos != file_size {
        return Err(malformed(
            "section table",
            format!("the sections end at byte {pos}, the file at byte {file_size}"),
        ));
    }
    let only = |kind: SectionKind| -> Result<usize, ArtifactError> {
        let mut it = sections.iter().enumerate().filter(|(_, s)| s.kind == kind).map(|(i, _)| i);
        match (it.next(), it.next()) {
            (Some(i), None) => Ok(i),
            (None, _) => Err(malformed("section table", format!("no {kind} section"))),
            (Some(_), Some(j)) => Err(malformed("section table", format!("a second {kind} section (section {j})"))),
        }
    };
    let mi = only(SectionKind::Manifest)?;
    let wi = only(SectionKind::Weights)?;

    // Checksums of every section.
    let range = |s: &SectionInfo| s.offset as usize..(s.offset + s.length) as usize;
    for (i, s) in sections.iter().enumerate() {
        let computed = crc32fast::hash(&b[range(s)]);
        if computed != s.crc {
            let section = SectionRef::Section { index: i as u32, kind: s.kind };
            return Err(ArtifactError::Checksum { path: p(), section, stored: s.crc, computed });
        }
    }

    // Manifest.
    let manifest: Manifest = serde_json::from_slice(&b[range(&sections[mi])])
        .map_err(|source| ArtifactError::Manifest { path: p(), section: mi as u32, source })?;
    let invalid = |detail: String| ArtifactError::ManifestInvalid { path: p(), detail };
    validate_manifest(&manifest).map_err(invalid)?;
    if manifest.compiler_version != compiler_version {
        return Err(invalid(format!(
            "the manifest says compiler {:?}, the header {compiler_version:?}",
            manifest.compiler_version
        )));
    }
    let mut claimed = vec![false; count];
    for c in &manifest.code_objects {
        let s = c.section as usize;
        match sections.get(s) {
            Some(sec) if sec.kind == SectionKind::CodeObject && !claimed[s] => claimed[s] = true,
            Some(sec) if sec.kind == SectionKind::CodeObject => {
                return Err(invalid(format!("code object {} names section {s}, already another target's", c.target)))
            }
            Some(sec) => {
                return Err(invalid(format!("code object {} names section {s}, a {} section", c.target, sec.kind)))
            }
            None => return Err(invalid(format!("code object {} names section {s}, but there are {count}", c.target))),
        }
    }
    if let Some(s) = sections.iter().enumerate().position(|(i, s)| s.kind == SectionKind::CodeObject && !claimed[i]) {
        return Err(invalid(format!("code-object section {s} belongs to no target")));
    }

    // Weights: inside the weight section, aligned.
    let ws = &sections[wi];
    for (i, w) in manifest.weights.iter().enumerate() {
        let err = |detail: String| ArtifactError::Weight { path: p(), index: i, name: w.name.clone(), detail };
        if w.offset % WEIGHT_ALIGN != 0 {
            return Err(err(format!("offset {} is not a multiple of {WEIGHT_ALIGN}", w.offset)));
        }
        match w.offset.checked_add(w.bytes) {
            Some(end) if end <= ws.length => {}
            _ => {
                return Err(err(format!(
                    "bytes {}..{}+{} lie outside the weight section ({} bytes)",
                    w.offset, w.offset, w.bytes, ws.length
                )))
            }
        }
    }

    let weights = range(ws);
    Ok(Parsed { compiler_version, sections, manifest, weights })
}
