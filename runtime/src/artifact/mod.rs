//! # The `.kiln` container format (version 1)
//!
//! One `.kiln` file holds a compiled model: the [`Manifest`](crate::manifest::Manifest)
//! (JSON), the weight bytes and one code object per target. [`ArtifactWriter`] /
//! [`write_artifact`] produce it; [`Artifact::open`] maps it read-only and validates it;
//! [`describe`] renders it for `kiln inspect`. This comment is the format's specification;
//! the reader enforces every rule stated here, so that a file it accepts is exactly one the
//! writer could have produced.
//!
//! ## Conventions
//!
//! - All integers are little-endian. Offsets are from the start of the file unless said otherwise.
//! - `align_up(x, a)` is the least multiple of `a` that is `>= x`.
//! - Checksums are CRC-32 (IEEE 802.3, the zlib/PNG polynomial; `crc32fast`).
//! - Every byte of the file is covered by a checksum or must be zero (padding, reserved fields),
//!   so any single flipped byte is detected.
//! - The writer is deterministic: the same manifest, weights and code objects give the same bytes
//!   (no timestamps, no paths, no hash-map order; the manifest is compact `serde_json` output).
//!
//! ## Header
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 8 | magic: the bytes `KILNART\0` |
//! | 8  | 4 | `format_version`: u32, [`ARTIFACT_FORMAT_VERSION`](crate::ARTIFACT_FORMAT_VERSION) (= 1) |
//! | 12 | 4 | `header_size`: u32, bytes `[0, header_size)` are the header *including* the section table |
//! | 16 | 8 | `file_size`: u64, the length of the whole file in bytes |
//! | 24 | 4 | `header_crc`: u32, CRC-32 of bytes `[0, header_size)` with these 4 bytes taken as zero |
//! | 28 | 4 | `n`: u32, length of the compiler version string, `n <= 1024` |
//! | 32 | n | the compiler version, UTF-8 (equal to the manifest's `compiler_version`) |
//! | 32+n | … | zero padding up to `T = align_up(32 + n, 8)` |
//! | T   | 4 | `section_count`: u32, `<= 65536` |
//! | T+4 | 4 | reserved, zero |
//! | T+8 | 32 × `section_count` | the section table |
//!
//! so `header_size = T + 8 + 32 * section_count`. The reader checks the magic first, then the
//! version (a reader never interprets the rest of a file of another version: its layout may
//! differ), then `header_size`, then `header_crc`, then `file_size` against the real length
//! (shorter: truncated; longer: trailing bytes are an error).
//!
//! ## Section table entry (32 bytes)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | `kind`: u32, 1 = manifest JSON, 2 = weights, 3 = code object; other values are errors |
//! | 4  | 4 | `alignment`: u32, a power of two `<= 65536`; at least 64 for the weight section |
//! | 8  | 8 | `offset`: u64, a multiple of `alignment` |
//! | 16 | 8 | `length`: u64 |
//! | 24 | 4 | `crc`: u32, CRC-32 of the section's `length` bytes |
//! | 28 | 4 | reserved, zero |
//!
//! Sections follow the header in table order with no gaps but alignment padding:
//! section 0 starts at `align_up(header_size, alignment_0)`, section `i` at
//! `align_up(end_{i-1}, alignment_i)`, the padding bytes are zero and the last section ends at
//! `file_size`. There is exactly one manifest section and exactly one weight section (possibly
//! empty); the writer emits them as sections 0 (alignment 8) and 1 (alignment 64), then one
//! code-object section per target (alignment 64), in the order given.
//!
//! ## Manifest section (kind 1)
//!
//! The [`Manifest`](crate::manifest::Manifest) as UTF-8 JSON. Its `weights[i].offset` /
//! `.bytes` locate weight `i` inside the weight section; its `code_objects[j].section` is the
//! index in the section table of that target's code-object section. The reader checks that
//! every code-object section is named by exactly one `CodeObjectSpec`, that targets are unique,
//! and that every index in the manifest (kernels, inputs, outputs, weights, symbols of size
//! expressions) is in range and that each launch passes its kernel's number of buffers, so the
//! executor can index without checking again.
//!
//! ## Weight section (kind 2)
//!
//! Weight `i` (manifest order) starts at `offset_i`, a multiple of 64 inside the section:
//! `offset_0 = 0`, `offset_i = align_up(offset_{i-1} + bytes_{i-1}, 64)`, padding zero, and the
//! section ends right after the last weight. `bytes_i = product(shape_i) * dtype size`. Since the
//! section's file offset is a multiple of 64 and `mmap` returns page-aligned memory, every weight
//! is 64-byte aligned in memory and is used in place. (The reader requires alignment, bounds
//! and sizes; it does not require the writer's packing, so a later compiler may share bytes.)
//!
//! ## Code-object section (kind 3)
//!
//! The raw bytes of one target's code object (format named by the manifest's
//! `CodeObjectSpec.format`, e.g. `elf-relocatable`).
//!
//! ## Versioning
//!
//! Any change to this layout or to the meaning of a field bumps
//! [`ARTIFACT_FORMAT_VERSION`](crate::ARTIFACT_FORMAT_VERSION); a runtime refuses other versions
//! with [`ArtifactError::UnsupportedVersion`], which says to recompile the model.
//!
//! ## Safety of the mapping
//!
//! [`Artifact`] maps the file read-only. Modifying a mapped file in place is undefined
//! behaviour for the process; [`write_artifact`] therefore never rewrites a file in place: it
//! writes a temporary file next to the target and renames it over, so readers keep the old
//! inode and a crash never leaves a half-written artifact.

mod describe;
mod error;
mod format;
mod reader;
mod validate;
mod writer;

pub use describe::describe;
pub use error::{ArtifactError, SectionRef};
pub use format::{SectionInfo, SectionKind, MAGIC, WEIGHT_ALIGN};
pub use reader::Artifact;
pub use writer::{write_artifact, ArtifactWriter, CodeObjectData, WeightData};
