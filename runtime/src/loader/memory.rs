//! The anonymous mapping that holds a loaded object: created read-write, then each region is
//! switched to its final protection. No page is ever writable and executable at once.

use std::io;
use std::ops::Range;
use std::ptr::NonNull;

/// Final protection of a page range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protection {
    ReadExecute,
    ReadOnly,
}

/// An owned anonymous private mapping, unmapped on drop.
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; nothing about it is tied to a thread.
unsafe impl Send for Mapping {}
// SAFETY: `Mapping` hands out no interior mutability; writes need `&mut self`.
unsafe impl Sync for Mapping {}

pub(super) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096)
}

impl Mapping {
    pub fn base(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn protect(&self, range: Range<usize>, prot: Protection) -> io::Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        if range.end > self.len {
            let msg = format!("range {range:?} lies outside the {}-byte mapping", self.len);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        if prot == Protection::ReadExecute {
            // SAFETY: every page of the mapping is readable for its whole life.
            let all = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) };
            flush_instruction_cache(&all[range.clone()]);
        }
        let flags = match prot {
            Protection::ReadExecute => libc::PROT_READ | libc::PROT_EXEC,
            Protection::ReadOnly => libc::PROT_READ,
        };
        // SAFETY: the range lies inside our own mapping; the kernel rejects unaligned starts.
        let rc = unsafe { libc::mprotect(self.ptr.as_ptr().add(range.start).cast(), range.len(), flags) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// A mapping in its writable phase: every page read-write, nothing executable.
pub(super) struct Writable(Mapping);

impl Writable {
    /// Maps `len` zeroed read-write bytes. With `low`, first asks for an address in the low
    /// 2 GiB (Linux x86-64 `MAP_32BIT`), where absolute 32-bit relocations reach; falls back
    /// to anywhere when that fails or is not available.
    pub fn new(len: usize, low: bool) -> io::Result<Writable> {
        if low {
            if let Some(m) = Self::map(len, low_flag()) {
                return Ok(m);
            }
        }
        Self::map(len, 0).ok_or_else(io::Error::last_os_error)
    }

    fn map(len: usize, extra_flags: libc::c_int) -> Option<Writable> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing; it aliases
        // nothing.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        NonNull::new(ptr.cast()).map(|ptr| Writable(Mapping { ptr, len }))
    }

    pub fn base(&self) -> *const u8 {
        self.0.base()
    }

    /// The whole mapping as bytes, for copying sections in and applying relocations.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, all readable and writable in this phase, and
        // uniquely borrowed through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.0.ptr.as_ptr(), self.0.len) }
    }

    /// Ends the writable phase: gives each range its final protection (pages not named stay
    /// read-write). Ranges must be page-aligned; empty ones are skipped.
    pub fn seal(self, ranges: &[(Range<usize>, Protection)]) -> io::Result<Mapping> {
        for (range, prot) in ranges {
            self.0.protect(range.clone(), *prot)?;
        }
        Ok(self.0)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns; nothing refers to it any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn low_flag() -> libc::c_int {
    libc::MAP_32BIT
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn low_flag() -> libc::c_int {
    0
}

/// Makes freshly written instructions visible to instruction fetch. x86-64 keeps its caches
/// coherent; AArch64 needs the data cache cleaned and the instruction cache invalidated.
#[cfg(target_arch = "aarch64")]
fn flush_instruction_cache(code: &[u8]) {
    use std::arch::asm;
    let ctr: u64;
    // SAFETY: reading CTR_EL0 is allowed at EL0 on Linux and has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    let dline = 4usize << ((ctr >> 16) & 0xf);
    let iline = 4usize << (ctr & 0xf);
    let start = code.as_ptr() as usize;
    let end = start + code.len();
    // SAFETY: cache maintenance by virtual address on memory we own; it changes no data.
    unsafe {
        let mut a = start & !(dline - 1);
        while a < end {
            asm!("dc cvau, {}", in(reg) a, options(nostack, preserves_flags));
            a += dline;
        }
        asm!("dsb ish", options(nostack, preserves_flags));
        let mut a = start & !(iline - 1);
        while a < end {
            asm!("ic ivau, {}", in(reg) a, options(nostack, preserves_flags));
            a += iline;
        }
        asm!("dsb ish", "isb", options(nostack, preserves_flags));
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn flush_instruction_cache(_code: &[u8]) {}
