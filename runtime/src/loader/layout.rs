//! Where everything goes in the one mapping: the allocated sections grouped by protection into
//! three page-aligned regions (code, read-only data, writable data), plus the loader's own
//! additions — call stubs at the end of the code region, GOT slots at the end of the read-only
//! region and common symbols at the end of the writable region.

use std::collections::HashMap;
use std::ops::Range;

use super::elf::{Elf, SHF_EXECINSTR, SHF_WRITE};
use super::LoadError;

/// The largest image the loader maps. It keeps every 32-bit PC-relative reference between two
/// parts of the image in range, and bounds what a hostile `SHT_NOBITS` size can ask for.
pub(super) const MAX_IMAGE: u64 = 1 << 30;
/// The largest section alignment honoured: regions start on page boundaries, so anything up to
/// the smallest page size is free.
const MAX_ALIGN: u64 = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Region {
    /// Read + execute.
    Code,
    /// Read only.
    ReadOnly,
    /// Read + write.
    Data,
}

/// What the loader adds besides the object's own sections.
pub(super) struct Extras {
    /// Symbols that need a call stub, each once, in first-use order.
    pub stubs: Vec<u32>,
    pub stub_size: u64,
    /// GOT slots, keyed by (symbol, addend stored in the slot), in first-use order.
    pub got: Vec<(u32, i64)>,
    /// Common symbols: (symbol, size, alignment).
    pub commons: Vec<(u32, u64, u64)>,
}

pub(super) struct Layout {
    /// Page-rounded length of the whole mapping.
    pub total: usize,
    /// The page-aligned ranges that become read+execute and read-only.
    pub code: Range<usize>,
    pub read_only: Range<usize>,
    /// Offset of each section in the image, `None` for sections that are not loaded.
    pub section_offset: Vec<Option<usize>>,
    pub stub_offset: HashMap<u32, usize>,
    pub got_offset: HashMap<(u32, i64), usize>,
    pub common_offset: HashMap<u32, usize>,
}

pub(super) fn region_of(name: &str, flags: u64) -> Result<Region, LoadError> {
    match (flags & SHF_EXECINSTR != 0, flags & SHF_WRITE != 0) {
        (true, true) => Err(LoadError::Unsupported(format!(
            "section `{name}` is both writable and executable, which the loader never maps"
        ))),
        (true, false) => Ok(Region::Code),
        (false, false) => Ok(Region::ReadOnly),
        (false, true) => Ok(Region::Data),
    }
}

/// A cursor that places items with checked arithmetic under [`MAX_IMAGE`].
struct Cursor(u64);

impl Cursor {
    fn place(&mut self, size: u64, align: u64, what: &dyn Fn() -> String) -> Result<usize, LoadError> {
        if align > MAX_ALIGN {
            return Err(LoadError::Unsupported(format!("{} asks for alignment {align}; at most {MAX_ALIGN}", what())));
        }
        let start = self.0.checked_next_multiple_of(align.max(1));
        let end = start.and_then(|s| s.checked_add(size));
        match (start, end) {
            (Some(s), Some(e)) if e <= MAX_IMAGE => {
                self.0 = e;
                Ok(s as usize)
            }
            _ => Err(LoadError::Malformed(format!(
                "{} ({size:#x} bytes) does not fit the loader's {MAX_IMAGE:#x}-byte limit for one object",
                what()
            ))),
        }
    }

    /// Ends a region: rounds up to a page and returns the region's range.
    fn end_region(&mut self, start: usize, page: u64) -> Result<Range<usize>, LoadError> {
        self.place(0, 1, &String::new)?;
        self.0 = self.0.next_multiple_of(page);
        Ok(start..self.0 as usize)
    }
}

pub(super) fn plan(elf: &Elf<'_>, extras: &Extras, page: usize) -> Result<Layout, LoadError> {
    let page = page as u64;
    let mut section_offset = vec![None; elf.sections.len()];
    let mut cursor = Cursor(0);
    let mut ranges = Vec::with_capacity(3);
    let mut stub_offset = HashMap::new();
    let mut got_offset = HashMap::new();
    let mut common_offset = HashMap::new();
    for region in [Region::Code, Region::ReadOnly, Region::Data] {
        let start = cursor.0 as usize;
        for (i, s) in elf.sections.iter().enumerate() {
            if i == 0 || !s.is_alloc() || region_of(&s.name, s.flags)? != region {
                continue;
            }
            section_offset[i] = Some(cursor.place(s.size, s.align, &|| format!("section `{}`", s.name))?);
        }
        match region {
            Region::Code => {
                for &sym in &extras.stubs {
                    stub_offset.insert(sym, cursor.place(extras.stub_size, 16, &|| "the call stubs".into())?);
                }
            }
            Region::ReadOnly => {
                for &key in &extras.got {
                    got_offset.insert(key, cursor.place(8, 8, &|| "the GOT".into())?);
                }
            }
            Region::Data => {
                for &(sym, size, align) in &extras.commons {
                    let what = || format!("common symbol {sym}");
                    common_offset.insert(sym, cursor.place(size, align, &what)?);
                }
            }
        }
        ranges.push(cursor.end_region(start, page)?);
    }
    let total = (cursor.0 as usize).max(page as usize);
    let mut ranges = ranges.into_iter();
    // The third, writable region keeps the mapping's initial read-write protection.
    let (code, read_only) = (ranges.next(), ranges.next());
    Ok(Layout {
        total,
        code: code.unwrap_or_default(),
        read_only: read_only.unwrap_or_default(),
        section_offset,
        stub_offset,
        got_offset,
        common_offset,
    })
}
