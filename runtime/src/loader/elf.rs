//! A strict reader for the parts of an ELF64 little-endian relocatable object that the loader
//! uses: the header, the section table, the symbol table and the `SHT_RELA` sections.
//!
//! Every offset, size, count and index read from the file is checked before it is used, with
//! checked arithmetic; anything inconsistent is a [`LoadError::Malformed`], never a panic.

use super::LoadError;

pub(super) const EM_X86_64: u16 = 62;
pub(super) const EM_AARCH64: u16 = 183;

const ET_REL: u16 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHT_RELA: u32 = 4;
pub(super) const SHT_NOBITS: u32 = 8;
const SHT_REL: u32 = 9;
const SHT_SYMTAB_SHNDX: u32 = 18;

pub(super) const SHF_WRITE: u64 = 0x1;
pub(super) const SHF_ALLOC: u64 = 0x2;
pub(super) const SHF_EXECINSTR: u64 = 0x4;
const SHF_TLS: u64 = 0x400;

const SHN_UNDEF: u16 = 0;
const SHN_LORESERVE: u16 = 0xff00;
const SHN_ABS: u16 = 0xfff1;
const SHN_COMMON: u16 = 0xfff2;
const SHN_XINDEX: u16 = 0xffff;

pub(super) const STB_GLOBAL: u8 = 1;
pub(super) const STB_WEAK: u8 = 2;
pub(super) const STT_FUNC: u8 = 2;
pub(super) const STT_TLS: u8 = 6;

const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;
const RELA_SIZE: usize = 24;
/// More sections than any real object has; bounds the work a hostile header can ask for.
const MAX_SECTIONS: usize = 1 << 20;

fn malformed(reason: impl Into<String>) -> LoadError {
    LoadError::Malformed(reason.into())
}

/// The bytes `[offset, offset + len)` of `data`, or an error naming `what`.
fn bytes<'a>(data: &'a [u8], offset: u64, len: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], LoadError> {
    let start = usize::try_from(offset).ok();
    let end = offset.checked_add(len).and_then(|e| usize::try_from(e).ok());
    match (start, end) {
        (Some(s), Some(e)) if e <= data.len() => Ok(&data[s..e]),
        _ => Err(malformed(format!(
            "{} (bytes {offset:#x}..+{len:#x}) lies outside the {}-byte file",
            what(),
            data.len()
        ))),
    }
}

fn u16_at(d: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([d[o], d[o + 1]])
}
fn u32_at(d: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]])
}
fn u64_at(d: &[u8], o: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&d[o..o + 8]);
    u64::from_le_bytes(b)
}

/// A NUL-terminated string at `offset` of a string table.
fn c_str<'a>(table: &'a [u8], offset: u32, what: &dyn Fn() -> String) -> Result<&'a [u8], LoadError> {
    let rest = table
        .get(offset as usize..)
        .ok_or_else(|| malformed(format!("{}: name offset {offset:#x} is past its string table", what())))?;
    let len = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| malformed(format!("{}: name at offset {offset:#x} is not NUL-terminated", what())))?;
    Ok(&rest[..len])
}

/// One section header, with its file bytes when it has any.
pub(super) struct Section<'a> {
    pub name: String,
    pub kind: u32,
    pub flags: u64,
    pub size: u64,
    pub align: u64,
    pub link: u32,
    pub info: u32,
    pub entsize: u64,
    /// The section's bytes in the file; empty for `SHT_NOBITS`.
    pub data: &'a [u8],
}

impl Section<'_> {
    pub fn is_alloc(&self) -> bool {
        self.flags & SHF_ALLOC != 0
    }
}

/// Where a symbol is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SymbolPlace {
    Undefined,
    Absolute,
    /// A common symbol; the loader allocates `size` bytes aligned to `align`.
    Common {
        align: u64,
    },
    /// Defined in the section with this index (checked to be a real section).
    Section(usize),
    /// A reserved section index the loader does not handle (e.g. `SHN_X86_64_LCOMMON`).
    Reserved(u16),
}

pub(super) struct Symbol<'a> {
    pub name: &'a [u8],
    pub bind: u8,
    pub kind: u8,
    pub place: SymbolPlace,
    pub value: u64,
    pub size: u64,
}

impl Symbol<'_> {
    /// The name for error messages (lossy for non-UTF-8 names).
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(self.name).into_owned()
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Rela {
    pub offset: u64,
    pub symbol: u32,
    pub kind: u32,
    pub addend: i64,
}

/// The relocations that apply to one allocated section.
pub(super) struct RelaSection {
    /// Index of the section the relocations patch.
    pub target: usize,
    pub entries: Vec<Rela>,
}

pub(super) struct Elf<'a> {
    pub machine: u16,
    pub sections: Vec<Section<'a>>,
    pub symbols: Vec<Symbol<'a>>,
    /// Relocation sections whose target section is allocated (others, e.g. for debug info,
    /// are skipped: nothing of theirs is loaded).
    pub relocations: Vec<RelaSection>,
}

/// Parses and validates `data` as an ELF64 little-endian relocatable object.
pub(super) fn parse(data: &[u8]) -> Result<Elf<'_>, LoadError> {
    let header = data
        .get(..EHDR_SIZE)
        .ok_or_else(|| malformed(format!("{} bytes is too short for an ELF64 header", data.len())))?;
    if header[..4] != *b"\x7fELF" {
        return Err(malformed(format!("not an ELF file: it starts with \"{}\"", header[..4].escape_ascii())));
    }
    if header[4] != 2 {
        return Err(malformed(format!("not a 64-bit ELF file (EI_CLASS is {})", header[4])));
    }
    if header[5] != 1 {
        return Err(malformed(format!("not a little-endian ELF file (EI_DATA is {})", header[5])));
    }
    if header[6] != 1 {
        return Err(malformed(format!("unknown ELF version {} in e_ident", header[6])));
    }
    let e_type = u16_at(header, 16);
    if e_type != ET_REL {
        return Err(malformed(format!("not a relocatable object (e_type is {e_type}, ET_REL is 1)")));
    }
    let machine = u16_at(header, 18);
    let shoff = u64_at(header, 40);
    let shentsize = u16_at(header, 58);
    let mut shnum = u16_at(header, 60) as u64;
    let mut shstrndx = u16_at(header, 62) as u32;
    if shoff == 0 {
        return Err(malformed("the object has no section header table (e_shoff is 0)"));
    }
    if shentsize as usize != SHDR_SIZE {
        return Err(malformed(format!("e_shentsize is {shentsize}, ELF64 section headers are 64 bytes")));
    }
    // Section 0 holds the real count and string-table index when they do not fit the header.
    let first = bytes(data, shoff, SHDR_SIZE as u64, &|| "section header 0".into())?;
    if shnum == 0 {
        shnum = u64_at(first, 32);
    }
    if shstrndx == SHN_XINDEX as u32 {
        shstrndx = u32_at(first, 40);
    }
    let shnum = usize::try_from(shnum).ok().filter(|&n| (1..=MAX_SECTIONS).contains(&n));
    let shnum = shnum.ok_or_else(|| malformed("the section count is 0 or implausibly large"))?;
    let table = bytes(data, shoff, (shnum * SHDR_SIZE) as u64, &|| format!("the table of {shnum} section headers"))?;

    let mut sections = Vec::with_capacity(shnum);
    let mut names = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let h = &table[i * SHDR_SIZE..(i + 1) * SHDR_SIZE];
        let kind = u32_at(h, 4);
        let flags = u64_at(h, 8);
        let offset = u64_at(h, 24);
        let size = u64_at(h, 32);
        let align = u64_at(h, 48);
        if align > 1 && !align.is_power_of_two() {
            return Err(malformed(format!("section {i}: alignment {align} is not a power of two")));
        }
        let data =
            if kind == SHT_NOBITS || i == 0 { &[][..] } else { bytes(data, offset, size, &|| format!("section {i}"))? };
        names.push(u32_at(h, 0));
        sections.push(Section {
            name: String::new(),
            kind,
            flags,
            size,
            align: align.max(1),
            link: u32_at(h, 40),
            info: u32_at(h, 44),
            entsize: u64_at(h, 56),
            data,
        });
    }

    // Section names.
    let shstrndx = shstrndx as usize;
    if shstrndx != 0 {
        let strtab = sections
            .get(shstrndx)
            .filter(|s| s.kind == SHT_STRTAB)
            .ok_or_else(|| malformed(format!("e_shstrndx {shstrndx} is not a string table section")))?
            .data;
        for (i, name) in names.iter().enumerate() {
            let n = c_str(strtab, *name, &|| format!("section {i}"))?;
            sections[i].name = String::from_utf8_lossy(n).into_owned();
        }
    }
    for (i, s) in sections.iter_mut().enumerate() {
        if s.name.is_empty() {
            s.name = format!("#{i}");
        }
    }

    let symbols = parse_symbols(&sections)?;

    // Relocations.
    let mut relocations = Vec::new();
    for s in &sections {
        if s.kind != SHT_RELA && s.kind != SHT_REL {
            continue;
        }
        let target_index = s.info as usize;
        let target = sections.get(target_index).filter(|_| target_index != 0).ok_or_else(|| {
            malformed(format!("relocation section `{}`: sh_info {} is not a section", s.name, s.info))
        })?;
        if !target.is_alloc() {
            continue; // e.g. `.rela.debug_info`: nothing of that section is loaded.
        }
        if s.kind == SHT_REL {
            return Err(LoadError::Unsupported(format!(
                "relocation section `{}` is SHT_REL (implicit addends); only SHT_RELA is supported",
                s.name
            )));
        }
        if s.entsize != RELA_SIZE as u64 {
            return Err(malformed(format!("relocation section `{}`: entry size {} is not 24", s.name, s.entsize)));
        }
        if s.data.len() % RELA_SIZE != 0 {
            return Err(malformed(format!("relocation section `{}`: size is not a multiple of 24", s.name)));
        }
        if symbols.is_empty() || (s.link as usize) != symtab_index(&sections).unwrap_or(usize::MAX) {
            return Err(malformed(format!(
                "relocation section `{}`: sh_link {} is not the symbol table",
                s.name, s.link
            )));
        }
        let mut entries = Vec::with_capacity(s.data.len() / RELA_SIZE);
        for (j, e) in s.data.chunks_exact(RELA_SIZE).enumerate() {
            let info = u64_at(e, 8);
            let symbol = (info >> 32) as u32;
            if symbol as usize >= symbols.len() {
                return Err(malformed(format!(
                    "relocation section `{}` entry {j}: symbol index {symbol} is past the {} symbols",
                    s.name,
                    symbols.len()
                )));
            }
            entries.push(Rela { offset: u64_at(e, 0), symbol, kind: info as u32, addend: u64_at(e, 16) as i64 });
        }
        if sections[target_index].kind == SHT_NOBITS && !entries.is_empty() {
            return Err(malformed(format!("relocation section `{}` patches a section without bytes", s.name)));
        }
        relocations.push(RelaSection { target: target_index, entries });
    }

    for (i, s) in sections.iter().enumerate() {
        if s.is_alloc() && s.flags & SHF_TLS != 0 {
            return Err(LoadError::Unsupported(format!(
                "section {i} `{}` is thread-local storage, which the loader does not support",
                s.name
            )));
        }
    }
    Ok(Elf { machine, sections, symbols, relocations })
}

fn symtab_index(sections: &[Section<'_>]) -> Option<usize> {
    sections.iter().position(|s| s.kind == SHT_SYMTAB)
}

fn parse_symbols<'a>(sections: &[Section<'a>]) -> Result<Vec<Symbol<'a>>, LoadError> {
    let mut tables = sections.iter().enumerate().filter(|(_, s)| s.kind == SHT_SYMTAB);
    let Some((index, symtab)) = tables.next() else { return Ok(Vec::new()) };
    if tables.next().is_some() {
        return Err(malformed("the object has more than one symbol table"));
    }
    if symtab.entsize != SYM_SIZE as u64 || symtab.data.len() % SYM_SIZE != 0 {
        return Err(malformed(format!("symbol table `{}`: entries are not 24 bytes", symtab.name)));
    }
    let strtab = sections
        .get(symtab.link as usize)
        .filter(|s| s.kind == SHT_STRTAB && symtab.link != 0)
        .ok_or_else(|| malformed(format!("symbol table: sh_link {} is not a string table", symtab.link)))?
        .data;
    let count = symtab.data.len() / SYM_SIZE;
    // Extended section indices, for objects with more than ~65,000 sections.
    let mut shndx_table: Option<&[u8]> = None;
    for s in sections.iter().filter(|s| s.kind == SHT_SYMTAB_SHNDX && s.link as usize == index) {
        if shndx_table.is_some() || s.data.len() != count * 4 {
            return Err(malformed("bad SHT_SYMTAB_SHNDX section (duplicate, or not one u32 per symbol)"));
        }
        shndx_table = Some(s.data);
    }

    let mut symbols = Vec::with_capacity(count);
    for (i, e) in symtab.data.chunks_exact(SYM_SIZE).enumerate() {
        let what = || format!("symbol {i}");
        let name = c_str(strtab, u32_at(e, 0), &what)?;
        let info = e[4];
        let shndx = u16_at(e, 6);
        let value = u64_at(e, 8);
        let size = u64_at(e, 16);
        let place = match shndx {
            SHN_UNDEF => SymbolPlace::Undefined,
            SHN_ABS => SymbolPlace::Absolute,
            SHN_COMMON => {
                if value > 1 && !value.is_power_of_two() {
                    return Err(malformed(format!("common symbol {i}: alignment {value} is not a power of two")));
                }
                SymbolPlace::Common { align: value.max(1) }
            }
            SHN_XINDEX => {
                let table = shndx_table
                    .ok_or_else(|| malformed(format!("symbol {i} uses SHN_XINDEX but there is no SHT_SYMTAB_SHNDX")))?;
                section_place(u32_at(table, i * 4) as usize, sections.len(), i)?
            }
            s if s >= SHN_LORESERVE => SymbolPlace::Reserved(s),
            s => section_place(s as usize, sections.len(), i)?,
        };
        symbols.push(Symbol { name, bind: info >> 4, kind: info & 0xf, place, value, size });
    }
    Ok(symbols)
}

fn section_place(index: usize, count: usize, symbol: usize) -> Result<SymbolPlace, LoadError> {
    if index == 0 || index >= count {
        return Err(malformed(format!("symbol {symbol}: section index {index} is not a section")));
    }
    Ok(SymbolPlace::Section(index))
}
