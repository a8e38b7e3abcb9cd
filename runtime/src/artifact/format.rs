//! Constants and little-endian encoding of the header and section table (see the module doc).

use std::fmt;

/// The first 8 bytes of every `.kiln` file.
pub const MAGIC: [u8; 8] = *b"KILNART\0";

/// Alignment of the weight section and of each weight inside it.
pub const WEIGHT_ALIGN: u64 = 64;

pub(crate) const MANIFEST_ALIGN: u32 = 8;
pub(crate) const CODE_ALIGN: u32 = 64;

/// Bytes of the header before the compiler version string.
pub(crate) const FIXED_HEADER: usize = 32;
pub(crate) const OFF_VERSION: usize = 8;
pub(crate) const OFF_HEADER_SIZE: usize = 12;
pub(crate) const OFF_FILE_SIZE: usize = 16;
pub(crate) const OFF_HEADER_CRC: usize = 24;
pub(crate) const OFF_COMPILER_LEN: usize = 28;
pub(crate) const ENTRY_SIZE: usize = 32;

pub(crate) const MAX_COMPILER_VERSION: usize = 1024;
pub(crate) const MAX_SECTIONS: usize = 65536;
pub(crate) const MAX_ALIGN: u32 = 65536;

/// What a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// The manifest, as JSON.
    Manifest,
    /// All weights, each 64-byte aligned.
    Weights,
    /// One target's code object.
    CodeObject,
}

impl SectionKind {
    pub fn code(self) -> u32 {
        match self {
            SectionKind::Manifest => 1,
            SectionKind::Weights => 2,
            SectionKind::CodeObject => 3,
        }
    }

    pub fn from_code(code: u32) -> Option<SectionKind> {
        match code {
            1 => Some(SectionKind::Manifest),
            2 => Some(SectionKind::Weights),
            3 => Some(SectionKind::CodeObject),
            _ => None,
        }
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SectionKind::Manifest => "manifest",
            SectionKind::Weights => "weights",
            SectionKind::CodeObject => "code object",
        })
    }
}

/// One entry of the section table, as read from (or written to) the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    pub kind: SectionKind,
    pub alignment: u32,
    /// Byte offset of the section from the start of the file.
    pub offset: u64,
    pub length: u64,
    /// CRC-32 of the section's bytes.
    pub crc: u32,
}

/// `align_up(x, a)` for a power of two `a`; `None` on overflow.
pub(crate) fn align_up(x: u64, a: u64) -> Option<u64> {
    debug_assert!(a.is_power_of_two());
    Some(x.checked_add(a - 1)? & !(a - 1))
}

/// Offset of `section_count` for a compiler version of `n` bytes.
pub(crate) fn table_prefix(n: usize) -> usize {
    (FIXED_HEADER + n).div_ceil(8) * 8
}

/// `header_size` for a compiler version of `n` bytes and `count` sections.
pub(crate) fn header_size(n: usize, count: usize) -> usize {
    table_prefix(n) + 8 + ENTRY_SIZE * count
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// CRC-32 of the header bytes with the `header_crc` field taken as zero.
pub(crate) fn header_crc(header: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..OFF_HEADER_CRC]);
    h.update(&[0; 4]);
    h.update(&header[OFF_HEADER_CRC + 4..]);
    h.finalize()
}

/// Encodes the header and section table; `header_crc` is filled in.
pub(crate) fn encode_header(compiler_version: &str, file_size: u64, sections: &[SectionInfo]) -> Vec<u8> {
    let n = compiler_version.len();
    let size = header_size(n, sections.len());
    let mut b = Vec::with_capacity(size);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&crate::ARTIFACT_FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(size as u32).to_le_bytes());
    b.extend_from_slice(&file_size.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // header_crc, filled below
    b.extend_from_slice(&(n as u32).to_le_bytes());
    b.extend_from_slice(compiler_version.as_bytes());
    b.resize(table_prefix(n), 0);
    b.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for s in sections {
        b.extend_from_slice(&s.kind.code().to_le_bytes());
        b.extend_from_slice(&s.alignment.to_le_bytes());
        b.extend_from_slice(&s.offset.to_le_bytes());
        b.extend_from_slice(&s.length.to_le_bytes());
        b.extend_from_slice(&s.crc.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
    }
    debug_assert_eq!(b.len(), size);
    let crc = header_crc(&b);
    b[OFF_HEADER_CRC..OFF_HEADER_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    b
}
