//! # Loading compiled CPU code: an in-process ELF relocatable-object loader
//!
//! A `.kiln` artifact carries its CPU kernels as ELF64 relocatable objects (`ET_REL`, what
//! `cranelift-object` and LLVM write). [`LoadedCode::load`] turns one into callable code with no
//! compiler, no linker, no `dlopen` and no temporary file:
//!
//! 1. **Parse and validate** the header, section table, symbol table and `SHT_RELA` sections.
//!    Every offset, size and index read from the file is bounds-checked; any inconsistency is
//!    [`LoadError::Malformed`], never a panic, on any input.
//! 2. **Lay out** all `SHF_ALLOC` sections (text, rodata, data, bss, `.eh_frame`, …) in one
//!    anonymous mapping, each at its alignment, grouped by protection into three page-aligned
//!    regions: code, read-only data, writable data. The loader adds, inside the same mapping,
//!    a 16-byte call stub per external symbol that calls may need to reach (at the end of the
//!    code region), a GOT slot per symbol used through the GOT (end of the read-only region)
//!    and the common symbols (end of the writable region). The image is at most 1 GiB, so every PC-relative reference between
//!    two parts of it fits 32 bits.
//! 3. **Resolve symbols**: defined ones to their section's address plus value; undefined ones
//!    through the caller's `externs` (missing → [`LoadError::UnresolvedSymbol`]; weak ones may
//!    be missing and resolve to 0); `SHN_ABS` ones to their value.
//! 4. **Relocate** (supported types below); anything else is
//!    [`LoadError::UnsupportedRelocation`], and a value that does not fit its field is
//!    [`LoadError::RelocationOutOfRange`].
//! 5. **Protect** (W^X): the mapping is created read-write and never executable while
//!    writable; after relocation the code region becomes read+execute, the read-only region
//!    (including the GOT) read-only, and the writable region stays read-write.
//!
//! ## Relocations
//!
//! x86-64: `R_X86_64_64`, `PC64`, `PC32` and `PLT32` (direct when the target is within ±2 GiB;
//! otherwise calls and jumps to externs go through the extern's stub, which is always in range),
//! `32`/`32S` (checked; when an object has any, the mapping is first tried in the low 2 GiB
//! with `MAP_32BIT`, which non-PIC small-code-model objects need), `GOTPCREL`, `GOTPCRELX`,
//! `REX_GOTPCRELX` (through the loader's GOT; no relaxation), `NONE`.
//!
//! AArch64: `ABS64/32`, `PREL64/32`, `MOVW_UABS_G0…G3(_NC)`, `LD_PREL_LO19`, `ADR_PREL_LO21`,
//! `ADR_PREL_PG_HI21(_NC)`, `ADD_ABS_LO12_NC`, `LDST{8,16,32,64,128}_ABS_LO12_NC`, `TSTBR14`,
//! `CONDBR19`, `JUMP26`/`CALL26` (through a stub beyond ±128 MiB), `ADR_GOT_PAGE`,
//! `LD64_GOT_LO12_NC`. The instruction cache is synchronised before code is made executable.
//!
//! Only objects for the machine the runtime runs on load ([`LoadError::UnsupportedMachine`]
//! otherwise). Not supported: thread-local storage, `SHT_REL` sections, constructors
//! (`.init_array` is loaded but not run), unwinding through loaded code (`.eh_frame` is loaded
//! and relocated but not registered).

mod aarch64;
mod elf;
mod layout;
mod memory;
mod x86_64;

use std::collections::HashMap;
use std::fmt;

use elf::{Elf, SymbolPlace, EM_AARCH64, EM_X86_64, STB_GLOBAL, STB_WEAK, STT_FUNC, STT_TLS};
use layout::{Extras, Layout, Region};
use memory::{Mapping, Protection, Writable};

/// Everything that can go wrong loading a code object. No input makes the loader panic.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a well-formed ELF64 relocatable object; says what is wrong and where.
    #[error("malformed ELF object: {0}")]
    Malformed(String),

    /// The object is for a machine this runtime cannot run.
    #[error("the object is for ELF machine {machine} ({}), but this runtime runs on {host}", machine_name(*.machine))]
    UnsupportedMachine { machine: u16, host: &'static str },

    /// A relocation type the loader does not implement (`kind` is the ELF `r_type`).
    #[error("unsupported relocation type {kind} in section `{section}`")]
    UnsupportedRelocation { kind: u32, section: String },

    /// An undefined symbol that the `externs` resolver does not provide.
    #[error("unresolved symbol `{0}`: the object needs it and the runtime does not provide it")]
    UnresolvedSymbol(String),

    /// A relocation's value does not fit its field (or is misaligned for it).
    #[error("relocation {kind} at `{section}`+{offset:#x} against `{symbol}`: {detail}")]
    RelocationOutOfRange { kind: &'static str, section: String, offset: u64, symbol: String, detail: String },

    /// A well-formed object using a feature the loader does not support (TLS, `SHT_REL`, …).
    #[error("unsupported object: {0}")]
    Unsupported(String),

    /// Mapping or protecting memory failed.
    #[error("cannot {action} memory for loaded code: {source}")]
    Memory {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn machine_name(machine: u16) -> &'static str {
    match machine {
        EM_X86_64 => "x86-64",
        EM_AARCH64 => "aarch64",
        3 => "i386",
        40 => "arm",
        243 => "riscv",
        _ => "unknown",
    }
}

/// An object's code and data, mapped and relocated, ready to call. Unmapped on drop; the
/// pointers [`LoadedCode::symbol`] returns are valid as long as the value lives.
pub struct LoadedCode {
    mapping: Mapping,
    symbols: HashMap<String, usize>,
}

// `Mapping` is Send + Sync: after loading, the code and read-only regions are immutable and the
// writable region belongs to the loaded code itself (callers synchronise their calls).
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LoadedCode>()
};

impl fmt::Debug for LoadedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCode")
            .field("base", &self.mapping.base())
            .field("len", &self.mapping.len())
            .field("functions", &self.symbols.len())
            .finish()
    }
}

impl LoadedCode {
    /// Loads an ELF64 relocatable object (see the [module docs](self)). `externs` maps the name
    /// of each undefined symbol the object uses to its address; it is called once per name.
    pub fn load(elf_bytes: &[u8], externs: &dyn Fn(&str) -> Option<usize>) -> Result<LoadedCode, LoadError> {
        let elf = elf::parse(elf_bytes)?;
        let arch = Arch::for_machine(elf.machine)?;
        let plan = Plan::new(&elf, arch, externs)?;
        let layout = layout::plan(&elf, &plan.extras(arch, &elf), memory::page_size())?;
        let mut image =
            Writable::new(layout.total, plan.low).map_err(|source| LoadError::Memory { action: "map", source })?;
        let base = image.base() as u64;
        let bytes = image.bytes_mut();
        for (i, s) in elf.sections.iter().enumerate() {
            if let (Some(off), false) = (layout.section_offset[i], s.data.is_empty()) {
                bytes[off..off + s.data.len()].copy_from_slice(s.data);
            }
        }
        let addresses = plan.addresses(&elf, &layout, base)?;
        for (&sym, &off) in &layout.stub_offset {
            arch.write_stub(&mut bytes[off..off + arch.stub_size() as usize], addresses[sym as usize]);
        }
        for (&(sym, addend), &off) in &layout.got_offset {
            let value = addresses[sym as usize].wrapping_add(addend as u64);
            bytes[off..off + 8].copy_from_slice(&value.to_le_bytes());
        }
        relocate(&elf, arch, &layout, &addresses, bytes, base)?;
        let symbols = exports(&elf, &layout)?;
        let mapping = image
            .seal(&[(layout.code.clone(), Protection::ReadExecute), (layout.read_only.clone(), Protection::ReadOnly)])
            .map_err(|source| LoadError::Memory { action: "protect", source })?;
        Ok(LoadedCode { mapping, symbols })
    }

    /// The address of the defined global (or weak) function `name`, or `None`. Valid while
    /// `self` lives; calling it means transmuting to the right `extern "C" fn` type.
    pub fn symbol(&self, name: &str) -> Option<*const u8> {
        // The offset is inside the mapping (checked when loading).
        self.symbols.get(name).map(|&off| self.mapping.base().wrapping_add(off))
    }

    /// The address range of the whole mapping (code, read-only data and writable data), e.g.
    /// for a profiler's symbol map.
    pub fn memory_range(&self) -> std::ops::Range<usize> {
        let start = self.mapping.base() as usize;
        start..start + self.mapping.len()
    }

    /// The names of the functions [`LoadedCode::symbol`] finds, sorted.
    pub fn function_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.symbols.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// The machine-specific part of loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    fn for_machine(machine: u16) -> Result<Arch, LoadError> {
        let arch = match machine {
            EM_X86_64 => Some(Arch::X86_64),
            EM_AARCH64 => Some(Arch::Aarch64),
            _ => None,
        };
        let host = if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        };
        match arch {
            Some(a) if Some(a) == host => Ok(a),
            _ => Err(LoadError::UnsupportedMachine { machine, host: std::env::consts::ARCH }),
        }
    }

    fn info(self, kind: u32) -> Option<RelocInfo> {
        match self {
            Arch::X86_64 => x86_64::info(kind),
            Arch::Aarch64 => aarch64::info(kind),
        }
    }

    fn name(self, kind: u32) -> &'static str {
        match self {
            Arch::X86_64 => x86_64::name(kind),
            Arch::Aarch64 => aarch64::name(kind),
        }
    }

    fn apply(self, kind: u32, site: &mut Site<'_>, values: &Values) -> Result<(), Fail> {
        match self {
            Arch::X86_64 => x86_64::apply(kind, site, values),
            Arch::Aarch64 => aarch64::apply(kind, site, values),
        }
    }

    fn stub_size(self) -> u64 {
        match self {
            Arch::X86_64 => x86_64::STUB_SIZE,
            Arch::Aarch64 => aarch64::STUB_SIZE,
        }
    }

    fn write_stub(self, stub: &mut [u8], target: u64) {
        match self {
            Arch::X86_64 => x86_64::write_stub(stub, target),
            Arch::Aarch64 => aarch64::write_stub(stub, target),
        }
    }
}

/// What a GOT-using relocation stores in its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GotSlot {
    None,
    /// The slot holds `S`; the addend applies to the reference (x86-64).
    Symbol,
    /// The slot holds `S + A` (AArch64).
    SymbolPlusAddend,
}

/// What one relocation type needs.
#[derive(Clone, Copy, Debug)]
struct RelocInfo {
    /// Bytes patched at `r_offset`.
    width: usize,
    /// Whether a call stub helps when an external target is out of reach.
    stub: bool,
    got: GotSlot,
    /// An absolute 32-bit field: the image should live in the low 2 GiB.
    absolute32: bool,
}

/// The field one relocation patches.
struct Site<'a> {
    /// The target section's bytes in the image.
    section: &'a mut [u8],
    /// Offset of the field in `section` (`offset + width <= section.len()` is checked).
    offset: usize,
    /// Whether the section holds code.
    exec: bool,
    /// The field's address.
    p: u64,
}

impl Site<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        let end = self.offset.checked_add(bytes.len()).ok_or(Fail::Truncated)?;
        self.section.get_mut(self.offset..end).ok_or(Fail::Truncated)?.copy_from_slice(bytes);
        Ok(())
    }

    fn read_u32(&self) -> Result<u32, Fail> {
        let end = self.offset.checked_add(4).ok_or(Fail::Truncated)?;
        let b = self.section.get(self.offset..end).ok_or(Fail::Truncated)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The addresses one relocation is computed from.
struct Values {
    s: u64,
    a: i64,
    stub: Option<u64>,
    got: Option<u64>,
}

/// Why an architecture could not apply a relocation.
#[derive(Debug)]
enum Fail {
    Unsupported,
    OutOfRange(i128),
    Misaligned(i128),
    Truncated,
}

/// The symbol-level decisions made before anything is mapped.
struct Plan {
    /// Addresses of resolved undefined symbols, by symbol index.
    externs: HashMap<u32, u64>,
    /// Symbols that get a call stub, and GOT slots, in first-use order.
    stubs: Vec<u32>,
    got: Vec<(u32, i64)>,
    /// Whether to try mapping in the low 2 GiB.
    low: bool,
}

impl Plan {
    fn new(elf: &Elf<'_>, arch: Arch, resolve: &dyn Fn(&str) -> Option<usize>) -> Result<Plan, LoadError> {
        let mut plan = Plan { externs: HashMap::new(), stubs: Vec::new(), got: Vec::new(), low: false };
        let mut seen_stub = std::collections::HashSet::new();
        let mut seen_got = std::collections::HashSet::new();
        for rs in &elf.relocations {
            let section = &elf.sections[rs.target];
            for r in &rs.entries {
                let info = arch
                    .info(r.kind)
                    .ok_or_else(|| LoadError::UnsupportedRelocation { kind: r.kind, section: section.name.clone() })?;
                let in_bounds = r.offset.checked_add(info.width as u64).is_some_and(|end| end <= section.size);
                if !in_bounds {
                    return Err(LoadError::Malformed(format!(
                        "relocation at offset {:#x} of section `{}` ({} bytes) lies outside it",
                        r.offset, section.name, section.size
                    )));
                }
                plan.low |= info.absolute32;
                if let Some(key) = got_key(arch, r).filter(|k| seen_got.insert(*k)) {
                    plan.got.push(key);
                }
                if r.symbol == 0 {
                    continue;
                }
                let sym = &elf.symbols[r.symbol as usize];
                if sym.kind == STT_TLS {
                    return Err(LoadError::Unsupported(format!(
                        "relocation in `{}` refers to thread-local symbol `{}`",
                        section.name,
                        sym.display_name()
                    )));
                }
                let external = matches!(sym.place, SymbolPlace::Undefined | SymbolPlace::Absolute);
                if sym.place == SymbolPlace::Undefined && !plan.externs.contains_key(&r.symbol) {
                    let name = std::str::from_utf8(sym.name).map_err(|_| {
                        LoadError::Malformed(format!("undefined symbol {} has a non-UTF-8 name", r.symbol))
                    })?;
                    let address = match resolve(name) {
                        Some(a) => a as u64,
                        None if sym.bind == STB_WEAK => 0,
                        None => return Err(LoadError::UnresolvedSymbol(name.to_owned())),
                    };
                    plan.externs.insert(r.symbol, address);
                }
                if info.stub && external && seen_stub.insert(r.symbol) {
                    plan.stubs.push(r.symbol);
                }
            }
        }
        Ok(plan)
    }

    fn extras(&self, arch: Arch, elf: &Elf<'_>) -> Extras {
        let commons = (elf.symbols.iter().enumerate())
            .filter_map(|(i, s)| match s.place {
                SymbolPlace::Common { align } => Some((i as u32, s.size, align)),
                _ => None,
            })
            .collect();
        Extras { stubs: self.stubs.clone(), stub_size: arch.stub_size(), got: self.got.clone(), commons }
    }

    /// The address of every symbol (0 for those no relocation needs and that have none).
    fn addresses(&self, elf: &Elf<'_>, layout: &Layout, base: u64) -> Result<Vec<u64>, LoadError> {
        let mut out = vec![0u64; elf.symbols.len()];
        for (i, sym) in elf.symbols.iter().enumerate().skip(1) {
            out[i] = match sym.place {
                SymbolPlace::Undefined => self.externs.get(&(i as u32)).copied().unwrap_or(0),
                SymbolPlace::Absolute => sym.value,
                SymbolPlace::Common { .. } => base + layout.common_offset.get(&(i as u32)).copied().unwrap_or(0) as u64,
                SymbolPlace::Section(s) => match section_address(elf, layout, s, sym.value) {
                    Some(off) => base + off as u64,
                    None => continue, // checked below if a relocation uses it
                },
                SymbolPlace::Reserved(_) => continue,
            };
        }
        // Every symbol a relocation uses must have a real address.
        for rs in &elf.relocations {
            for r in rs.entries.iter().filter(|r| r.symbol != 0) {
                let sym = &elf.symbols[r.symbol as usize];
                match sym.place {
                    SymbolPlace::Section(s) if section_address(elf, layout, s, sym.value).is_none() => {
                        return Err(LoadError::Malformed(format!(
                            "symbol `{}` (value {:#x}) is not inside a loaded part of section `{}`",
                            sym.display_name(),
                            sym.value,
                            elf.sections[s].name
                        )));
                    }
                    SymbolPlace::Reserved(index) => {
                        return Err(LoadError::Unsupported(format!(
                            "symbol `{}` has special section index {index:#x}",
                            sym.display_name()
                        )));
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}

/// The GOT slot a relocation uses: (symbol, addend stored in the slot).
fn got_key(arch: Arch, r: &elf::Rela) -> Option<(u32, i64)> {
    match arch.info(r.kind)?.got {
        GotSlot::None => None,
        GotSlot::Symbol => Some((r.symbol, 0)),
        GotSlot::SymbolPlusAddend => Some((r.symbol, r.addend)),
    }
}

/// The image offset of `value` in section `index`, if that section is loaded and `value` lies in
/// it (its end included, for end-of-section symbols).
fn section_address(elf: &Elf<'_>, layout: &Layout, index: usize, value: u64) -> Option<usize> {
    let off = layout.section_offset[index]?;
    (value <= elf.sections[index].size).then(|| off + value as usize)
}

fn relocate(
    elf: &Elf<'_>,
    arch: Arch,
    layout: &Layout,
    addresses: &[u64],
    image: &mut [u8],
    base: u64,
) -> Result<(), LoadError> {
    for rs in &elf.relocations {
        let section = &elf.sections[rs.target];
        let Some(start) = layout.section_offset[rs.target] else { continue };
        let exec = layout::region_of(&section.name, section.flags)? == Region::Code;
        let bytes = &mut image[start..start + section.size as usize];
        for r in &rs.entries {
            let values = Values {
                s: addresses[r.symbol as usize],
                a: r.addend,
                stub: layout.stub_offset.get(&r.symbol).map(|&o| base + o as u64),
                got: got_key(arch, r).and_then(|key| layout.got_offset.get(&key)).map(|&o| base + o as u64),
            };
            // In bounds: checked by `Plan::new`.
            let offset = r.offset as usize;
            let mut site = Site { section: &mut *bytes, offset, exec, p: base + (start + offset) as u64 };
            let err = |detail: String| LoadError::RelocationOutOfRange {
                kind: arch.name(r.kind),
                section: section.name.clone(),
                offset: r.offset,
                symbol: elf.symbols[r.symbol as usize].display_name(),
                detail,
            };
            match arch.apply(r.kind, &mut site, &values) {
                Ok(()) => {}
                Err(Fail::Unsupported) => {
                    return Err(LoadError::UnsupportedRelocation { kind: r.kind, section: section.name.clone() })
                }
                Err(Fail::OutOfRange(v)) => return Err(err(format!("value {v:#x} does not fit the field"))),
                Err(Fail::Misaligned(v)) => return Err(err(format!("value {v:#x} is misaligned for the field"))),
                Err(Fail::Truncated) => return Err(err("the field lies outside its section".into())),
            }
        }
    }
    Ok(())
}

/// The defined global and weak functions, by name.
fn exports(elf: &Elf<'_>, layout: &Layout) -> Result<HashMap<String, usize>, LoadError> {
    let mut out = HashMap::new();
    for sym in &elf.symbols {
        let SymbolPlace::Section(s) = sym.place else { continue };
        if sym.kind != STT_FUNC || !matches!(sym.bind, STB_GLOBAL | STB_WEAK) {
            continue;
        }
        let Ok(name) = std::str::from_utf8(sym.name) else { continue };
        let Some(off) = section_address(elf, layout, s, sym.value) else {
            return Err(LoadError::Malformed(format!(
                "function `{name}` (value {:#x}) is not inside a loaded part of section `{}`",
                sym.value, elf.sections[s].name
            )));
        };
        out.entry(name.to_owned()).or_insert(off);
    }
    Ok(out)
}
