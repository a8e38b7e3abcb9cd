//! x86-64 relocations (System V psABI, chapter 4.4).
//!
//! Notation: `S` the symbol's address, `A` the addend, `P` the address of the patched field,
//! `G` the address of the symbol's GOT slot (the psABI's `G + GOT`), `Z` the symbol's call stub.

use super::{Fail, GotSlot, RelocInfo, Site, Values};

pub(super) const R_X86_64_NONE: u32 = 0;
pub(super) const R_X86_64_64: u32 = 1;
pub(super) const R_X86_64_PC32: u32 = 2;
pub(super) const R_X86_64_PLT32: u32 = 4;
pub(super) const R_X86_64_GOTPCREL: u32 = 9;
pub(super) const R_X86_64_32: u32 = 10;
pub(super) const R_X86_64_32S: u32 = 11;
pub(super) const R_X86_64_PC64: u32 = 24;
pub(super) const R_X86_64_GOTPCRELX: u32 = 41;
pub(super) const R_X86_64_REX_GOTPCRELX: u32 = 42;

/// `jmp *0(%rip)` followed by the 8-byte target, padded to 16 bytes.
pub(super) const STUB_SIZE: u64 = 16;

pub(super) fn write_stub(stub: &mut [u8], target: u64) {
    stub[..6].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
    stub[6..14].copy_from_slice(&target.to_le_bytes());
    stub[14..16].copy_from_slice(&[0xcc, 0xcc]);
}

pub(super) fn name(kind: u32) -> &'static str {
    match kind {
        R_X86_64_NONE => "R_X86_64_NONE",
        R_X86_64_64 => "R_X86_64_64",
        R_X86_64_PC32 => "R_X86_64_PC32",
        R_X86_64_PLT32 => "R_X86_64_PLT32",
        R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL",
        R_X86_64_32 => "R_X86_64_32",
        R_X86_64_32S => "R_X86_64_32S",
        R_X86_64_PC64 => "R_X86_64_PC64",
        R_X86_64_GOTPCRELX => "R_X86_64_GOTPCRELX",
        R_X86_64_REX_GOTPCRELX => "R_X86_64_REX_GOTPCRELX",
        _ => "an x86-64 relocation",
    }
}

/// What a relocation type needs, or `None` when the loader does not support it.
pub(super) fn info(kind: u32) -> Option<RelocInfo> {
    let plain = |width| RelocInfo { width, stub: false, got: GotSlot::None, absolute32: false };
    Some(match kind {
        R_X86_64_NONE => plain(0),
        R_X86_64_64 | R_X86_64_PC64 => plain(8),
        // PC32 can be a call too (`call rel32`), so externs get a stub for it as well.
        R_X86_64_PC32 | R_X86_64_PLT32 => RelocInfo { stub: true, ..plain(4) },
        R_X86_64_GOTPCREL | R_X86_64_GOTPCRELX | R_X86_64_REX_GOTPCRELX => {
            RelocInfo { got: GotSlot::Symbol, ..plain(4) }
        }
        R_X86_64_32 | R_X86_64_32S => RelocInfo { absolute32: true, ..plain(4) },
        _ => return None,
    })
}

fn put32(site: &mut Site<'_>, value: i128, fits: bool) -> Result<(), Fail> {
    if !fits {
        return Err(Fail::OutOfRange(value));
    }
    site.write(&(value as u32).to_le_bytes())
}

fn fits_i32(v: i128) -> bool {
    i32::try_from(v).is_ok()
}

/// Whether the 4-byte field at the site is the operand of `call rel32` / `jmp rel32`, which a
/// stub can redirect (a RIP-relative data operand cannot be).
fn is_branch_operand(site: &Site<'_>) -> bool {
    site.exec && site.offset > 0 && matches!(site.section.get(site.offset - 1), Some(0xe8 | 0xe9))
}

pub(super) fn apply(kind: u32, site: &mut Site<'_>, v: &Values) -> Result<(), Fail> {
    let (s, a, p) = (v.s as i128, v.a as i128, site.p as i128);
    match kind {
        R_X86_64_NONE => Ok(()),
        R_X86_64_64 => site.write(&v.s.wrapping_add(v.a as u64).to_le_bytes()),
        R_X86_64_PC64 => site.write(&v.s.wrapping_add(v.a as u64).wrapping_sub(site.p).to_le_bytes()),
        R_X86_64_32 => put32(site, s + a, u32::try_from(s + a).is_ok()),
        R_X86_64_32S => put32(site, s + a, fits_i32(s + a)),
        R_X86_64_PC32 | R_X86_64_PLT32 => {
            let direct = s + a - p;
            if fits_i32(direct) {
                return put32(site, direct, true);
            }
            match v.stub {
                Some(z) if kind == R_X86_64_PLT32 || is_branch_operand(site) => {
                    let via = z as i128 + a - p;
                    put32(site, via, fits_i32(via))
                }
                _ => Err(Fail::OutOfRange(direct)),
            }
        }
        R_X86_64_GOTPCREL | R_X86_64_GOTPCRELX | R_X86_64_REX_GOTPCRELX => {
            let g = v.got.ok_or(Fail::Unsupported)? as i128;
            put32(site, g + a - p, fits_i32(g + a - p))
        }
        _ => Err(Fail::Unsupported),
    }
}
