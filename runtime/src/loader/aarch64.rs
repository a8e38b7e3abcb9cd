//! AArch64 relocations (ELF for the Arm 64-bit Architecture, "AAELF64", section 5.7).
//!
//! Notation as in the x86-64 module; `Page(x)` is `x & !0xfff`. GOT slots hold `S + A`
//! (the ABI's `GDAT(S + A)`).

use super::{Fail, GotSlot, RelocInfo, Site, Values};

const R_AARCH64_NONE: u32 = 0;
const R_AARCH64_ABS64: u32 = 257;
const R_AARCH64_ABS32: u32 = 258;
const R_AARCH64_PREL64: u32 = 260;
const R_AARCH64_PREL32: u32 = 261;
const R_AARCH64_MOVW_UABS_G0: u32 = 263;
const R_AARCH64_MOVW_UABS_G0_NC: u32 = 264;
const R_AARCH64_MOVW_UABS_G1: u32 = 265;
const R_AARCH64_MOVW_UABS_G1_NC: u32 = 266;
const R_AARCH64_MOVW_UABS_G2: u32 = 267;
const R_AARCH64_MOVW_UABS_G2_NC: u32 = 268;
const R_AARCH64_MOVW_UABS_G3: u32 = 269;
const R_AARCH64_LD_PREL_LO19: u32 = 273;
const R_AARCH64_ADR_PREL_LO21: u32 = 274;
const R_AARCH64_ADR_PREL_PG_HI21: u32 = 275;
const R_AARCH64_ADR_PREL_PG_HI21_NC: u32 = 276;
const R_AARCH64_ADD_ABS_LO12_NC: u32 = 277;
const R_AARCH64_LDST8_ABS_LO12_NC: u32 = 278;
const R_AARCH64_TSTBR14: u32 = 279;
const R_AARCH64_CONDBR19: u32 = 280;
const R_AARCH64_JUMP26: u32 = 282;
const R_AARCH64_CALL26: u32 = 283;
const R_AARCH64_LDST16_ABS_LO12_NC: u32 = 284;
const R_AARCH64_LDST32_ABS_LO12_NC: u32 = 285;
const R_AARCH64_LDST64_ABS_LO12_NC: u32 = 286;
const R_AARCH64_LDST128_ABS_LO12_NC: u32 = 299;
const R_AARCH64_ADR_GOT_PAGE: u32 = 311;
const R_AARCH64_LD64_GOT_LO12_NC: u32 = 312;

/// `ldr x16, #8; br x16` followed by the 8-byte target.
pub(super) const STUB_SIZE: u64 = 16;

pub(super) fn write_stub(stub: &mut [u8], target: u64) {
    stub[..4].copy_from_slice(&0x5800_0050u32.to_le_bytes());
    stub[4..8].copy_from_slice(&0xd61f_0200u32.to_le_bytes());
    stub[8..16].copy_from_slice(&target.to_le_bytes());
}

pub(super) fn name(kind: u32) -> &'static str {
    match kind {
        R_AARCH64_ABS64 => "R_AARCH64_ABS64",
        R_AARCH64_ABS32 => "R_AARCH64_ABS32",
        R_AARCH64_PREL64 => "R_AARCH64_PREL64",
        R_AARCH64_PREL32 => "R_AARCH64_PREL32",
        R_AARCH64_MOVW_UABS_G0..=R_AARCH64_MOVW_UABS_G3 => "R_AARCH64_MOVW_UABS_G*",
        R_AARCH64_LD_PREL_LO19 => "R_AARCH64_LD_PREL_LO19",
        R_AARCH64_ADR_PREL_LO21 => "R_AARCH64_ADR_PREL_LO21",
        R_AARCH64_ADR_PREL_PG_HI21 => "R_AARCH64_ADR_PREL_PG_HI21",
        R_AARCH64_ADR_PREL_PG_HI21_NC => "R_AARCH64_ADR_PREL_PG_HI21_NC",
        R_AARCH64_TSTBR14 => "R_AARCH64_TSTBR14",
        R_AARCH64_CONDBR19 => "R_AARCH64_CONDBR19",
        R_AARCH64_JUMP26 => "R_AARCH64_JUMP26",
        R_AARCH64_CALL26 => "R_AARCH64_CALL26",
        R_AARCH64_ADR_GOT_PAGE => "R_AARCH64_ADR_GOT_PAGE",
        R_AARCH64_LD64_GOT_LO12_NC => "R_AARCH64_LD64_GOT_LO12_NC",
        R_AARCH64_ADD_ABS_LO12_NC => "R_AARCH64_ADD_ABS_LO12_NC",
        R_AARCH64_LDST8_ABS_LO12_NC => "R_AARCH64_LDST8_ABS_LO12_NC",
        R_AARCH64_LDST16_ABS_LO12_NC => "R_AARCH64_LDST16_ABS_LO12_NC",
        R_AARCH64_LDST32_ABS_LO12_NC => "R_AARCH64_LDST32_ABS_LO12_NC",
        R_AARCH64_LDST64_ABS_LO12_NC => "R_AARCH64_LDST64_ABS_LO12_NC",
        R_AARCH64_LDST128_ABS_LO12_NC => "R_AARCH64_LDST128_ABS_LO12_NC",
        _ => "an AArch64 relocation",
    }
}

pub(super) fn info(kind: u32) -> Option<RelocInfo> {
    let plain = |width| RelocInfo { width, stub: false, got: GotSlot::None, absolute32: false };
    Some(match kind {
        R_AARCH64_NONE => plain(0),
        R_AARCH64_ABS64 | R_AARCH64_PREL64 => plain(8),
        R_AARCH64_ABS32 | R_AARCH64_PREL32 => plain(4),
        R_AARCH64_MOVW_UABS_G0..=R_AARCH64_MOVW_UABS_G3 => plain(4),
        R_AARCH64_LD_PREL_LO19..=R_AARCH64_CONDBR19 => plain(4),
        R_AARCH64_LDST16_ABS_LO12_NC..=R_AARCH64_LDST64_ABS_LO12_NC | R_AARCH64_LDST128_ABS_LO12_NC => plain(4),
        R_AARCH64_JUMP26 | R_AARCH64_CALL26 => RelocInfo { stub: true, ..plain(4) },
        R_AARCH64_ADR_GOT_PAGE | R_AARCH64_LD64_GOT_LO12_NC => RelocInfo { got: GotSlot::SymbolPlusAddend, ..plain(4) },
        _ => return None,
    })
}

fn page(x: i128) -> i128 {
    x & !0xfff
}

/// Replaces `bits` bits of the instruction at bit `shift` by the low bits of `value`.
fn patch(site: &mut Site<'_>, shift: u32, bits: u32, value: i128) -> Result<(), Fail> {
    let insn = site.read_u32()?;
    let mask = ((1u32 << bits) - 1) << shift;
    let field = ((value as u64 as u32) << shift) & mask;
    site.write(&((insn & !mask) | field).to_le_bytes())
}

/// Patches an ADR/ADRP immediate (immlo in bits 30:29, immhi in bits 23:5).
fn patch_adr(site: &mut Site<'_>, imm: i128) -> Result<(), Fail> {
    let insn = site.read_u32()?;
    let imm = imm as u64 as u32;
    let mask = (3 << 29) | (0x7ffff << 5);
    let field = ((imm & 3) << 29) | (((imm >> 2) & 0x7ffff) << 5);
    site.write(&((insn & !mask) | field).to_le_bytes())
}

fn check(value: i128, min: i128, max_exclusive: i128) -> Result<i128, Fail> {
    if (min..max_exclusive).contains(&value) {
        Ok(value)
    } else {
        Err(Fail::OutOfRange(value))
    }
}

fn aligned(value: i128, align: i128) -> Result<i128, Fail> {
    if value % align == 0 {
        Ok(value)
    } else {
        Err(Fail::Misaligned(value))
    }
}

/// `MOVZ`/`MOVK` with bits `[16 * group, 16 * group + 16)` of `x`; `checked`: `x` must fit in
/// the groups up to this one.
fn movw(site: &mut Site<'_>, x: i128, group: u32, checked: bool) -> Result<(), Fail> {
    if checked {
        check(x, 0, 1 << (16 * (group + 1)))?;
    }
    patch(site, 5, 16, x >> (16 * group))
}

/// A PC-relative branch or literal offset of `bits` bits counting words, at bit `shift`.
fn branch(site: &mut Site<'_>, x: i128, bits: u32, shift: u32) -> Result<(), Fail> {
    let limit = 1i128 << (bits + 1);
    let x = check(aligned(x, 4)?, -limit, limit)?;
    patch(site, shift, bits, x >> 2)
}

pub(super) fn apply(kind: u32, site: &mut Site<'_>, v: &Values) -> Result<(), Fail> {
    let (s, a, p) = (v.s as i128, v.a as i128, site.p as i128);
    let x = s + a;
    match kind {
        R_AARCH64_NONE => Ok(()),
        R_AARCH64_ABS64 => site.write(&v.s.wrapping_add(v.a as u64).to_le_bytes()),
        R_AARCH64_PREL64 => site.write(&v.s.wrapping_add(v.a as u64).wrapping_sub(site.p).to_le_bytes()),
        R_AARCH64_ABS32 => site.write(&(check(x, -(1 << 31), 1 << 32)? as u32).to_le_bytes()),
        R_AARCH64_PREL32 => site.write(&(check(x - p, -(1 << 31), 1 << 32)? as u32).to_le_bytes()),
        R_AARCH64_MOVW_UABS_G0 => movw(site, x, 0, true),
        R_AARCH64_MOVW_UABS_G0_NC => movw(site, x, 0, false),
        R_AARCH64_MOVW_UABS_G1 => movw(site, x, 1, true),
        R_AARCH64_MOVW_UABS_G1_NC => movw(site, x, 1, false),
        R_AARCH64_MOVW_UABS_G2 => movw(site, x, 2, true),
        R_AARCH64_MOVW_UABS_G2_NC => movw(site, x, 2, false),
        R_AARCH64_MOVW_UABS_G3 => movw(site, x, 3, false),
        R_AARCH64_LD_PREL_LO19 | R_AARCH64_CONDBR19 => branch(site, x - p, 19, 5),
        R_AARCH64_TSTBR14 => branch(site, x - p, 14, 5),
        R_AARCH64_ADR_PREL_LO21 => patch_adr(site, check(x - p, -(1 << 20), 1 << 20)?),
        R_AARCH64_ADR_PREL_PG_HI21 => patch_adr(site, check(page(x) - page(p), -(1 << 32), 1 << 32)? >> 12),
        R_AARCH64_ADR_PREL_PG_HI21_NC => patch_adr(site, (page(x) - page(p)) >> 12),
        R_AARCH64_ADD_ABS_LO12_NC | R_AARCH64_LDST8_ABS_LO12_NC => patch(site, 10, 12, x & 0xfff),
        R_AARCH64_LDST16_ABS_LO12_NC => patch(site, 10, 12, aligned(x & 0xfff, 2)? >> 1),
        R_AARCH64_LDST32_ABS_LO12_NC => patch(site, 10, 12, aligned(x & 0xfff, 4)? >> 2),
        R_AARCH64_LDST64_ABS_LO12_NC => patch(site, 10, 12, aligned(x & 0xfff, 8)? >> 3),
        R_AARCH64_LDST128_ABS_LO12_NC => patch(site, 10, 12, aligned(x & 0xfff, 16)? >> 4),
        R_AARCH64_JUMP26 | R_AARCH64_CALL26 => {
            let limit = 1i128 << 27;
            let direct = x - p;
            match v.stub {
                Some(z) if !(-limit..limit).contains(&direct) => branch(site, z as i128 + a - p, 26, 0),
                _ => branch(site, direct, 26, 0),
            }
        }
        R_AARCH64_ADR_GOT_PAGE => {
            let g = v.got.ok_or(Fail::Unsupported)? as i128;
            patch_adr(site, check(page(g) - page(p), -(1 << 32), 1 << 32)? >> 12)
        }
        R_AARCH64_LD64_GOT_LO12_NC => {
            let g = v.got.ok_or(Fail::Unsupported)? as i128;
            patch(site, 10, 12, aligned(g & 0xfff, 8)? >> 3)
        }
        _ => Err(Fail::Unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies one relocation to the instruction `insn` at address `p`.
    fn run(kind: u32, insn: u32, p: u64, v: Values) -> Result<u32, Fail> {
        let mut bytes = insn.to_le_bytes().to_vec();
        let mut site = Site { section: &mut bytes, offset: 0, exec: true, p };
        apply(kind, &mut site, &v)?;
        Ok(u32::from_le_bytes(bytes[..4].try_into().unwrap()))
    }

    fn vals(s: u64, a: i64) -> Values {
        Values { s, a, stub: None, got: None }
    }

    #[test]
    fn call26_encodes_word_offset_and_uses_stub_when_far() {
        assert_eq!(run(R_AARCH64_CALL26, 0x9400_0000, 0x10_0000, vals(0x10_1000, 0)).unwrap(), 0x9400_0400);
        // Backwards: -8 bytes is -2 words, 26-bit two's complement.
        assert_eq!(run(R_AARCH64_CALL26, 0x9400_0000, 0x10_0008, vals(0x10_0000, 0)).unwrap(), 0x97ff_fffe);
        let far = Values { s: 0x10_0000_0000, a: 0, stub: Some(0x10_0040), got: None };
        assert_eq!(run(R_AARCH64_CALL26, 0x9400_0000, 0x10_0000, far).unwrap(), 0x9400_0010);
        assert!(matches!(
            run(R_AARCH64_CALL26, 0x9400_0000, 0x10_0000, vals(0x10_0000_0000, 0)),
            Err(Fail::OutOfRange(_))
        ));
    }

    #[test]
    fn adrp_add_and_ldst_lo12() {
        // adrp x0, #0 → three pages ahead.
        assert_eq!(run(R_AARCH64_ADR_PREL_PG_HI21, 0x9000_0000, 0x40_0ffc, vals(0x40_3123, 0)).unwrap(), 0xf000_0000);
        // add x0, x0, #:lo12:sym
        assert_eq!(run(R_AARCH64_ADD_ABS_LO12_NC, 0x9100_0000, 0, vals(0x40_3123, 0)).unwrap(), 0x9104_8c00);
        // ldr x1, [x0, #:lo12:sym] with sym at page offset 0x18 → imm12 = 3.
        assert_eq!(run(R_AARCH64_LDST64_ABS_LO12_NC, 0xf940_0001, 0, vals(0x40_3018, 0)).unwrap(), 0xf940_0c01);
        assert!(matches!(
            run(R_AARCH64_LDST64_ABS_LO12_NC, 0xf940_0001, 0, vals(0x40_3014, 0)),
            Err(Fail::Misaligned(_))
        ));
    }

    #[test]
    fn got_and_movw() {
        let v = Values { s: 0, a: 0, stub: None, got: Some(0x7000_2010) };
        assert_eq!(run(R_AARCH64_LD64_GOT_LO12_NC, 0xf940_0000, 0, v).unwrap(), 0xf940_0800);
        // movz x0, #:abs_g1:sym
        assert_eq!(run(R_AARCH64_MOVW_UABS_G1_NC, 0xd2a0_0000, 0, vals(0x1234_5678, 0)).unwrap(), 0xd2a2_4680);
        assert!(matches!(run(R_AARCH64_MOVW_UABS_G0, 0xd280_0000, 0, vals(0x1_0000, 0)), Err(Fail::OutOfRange(_))));
    }

    #[test]
    fn stub_layout() {
        let mut stub = [0u8; 16];
        write_stub(&mut stub, 0x1122_3344_5566_7788);
        assert_eq!(&stub[..8], &[0x50, 0, 0, 0x58, 0, 0x02, 0x1f, 0xd6]);
        assert_eq!(u64::from_le_bytes(stub[8..].try_into().unwrap()), 0x1122_3344_5566_7788);
    }
}
