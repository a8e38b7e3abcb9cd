//! How kiln's GPU kernels are launched, shared by the GPU devices: the kernel-argument block
//! and the grid. The code generator's side of this contract is
//! `kiln_codegen::llvm::mlir::KernelAbi::Gpu`; a test checks the block against the argument
//! metadata of the compiled AMD code objects.
//!
//! A kernel of `n` buffers takes `n + 3` arguments, each 8 bytes, 8-byte aligned, in this
//! order: the device address of each buffer, the device address of the symbol values (an
//! `i64` array indexed like the CPU's), and the `start` and `end` of the range of its parallel
//! loop, counted in items of the plan's (the lowered kernel's) parallel loop. A GPU kernel
//! runs `n` threads per item (`KernelSpec::gpu_threads_per_item`, from the GPU schedule):
//! thread `blockIdx.x * blockDim.x + threadIdx.x` runs iteration `start * n + thread` of its
//! parallel loop when it is below `end * n` (and the loop's extent), so a launch needs
//! `(end - start) * n` threads.

use super::DevicePtr;
use std::ops::Range;

/// Threads per block of every kiln launch (a multiple of both NVIDIA's 32-thread warps and
/// AMD's 64-thread wavefronts).
pub const BLOCK_THREADS: u32 = 256;

/// The argument of a kernel with `buffers` buffers at each position: (offset, size) in bytes.
pub fn kernel_arg_layout(buffers: usize) -> Vec<(usize, usize)> {
    (0..buffers + 3).map(|i| (8 * i, 8)).collect()
}

/// The kernel-argument block (little-endian) for a launch over `range` with these buffers and
/// symbol values.
pub fn kernel_args(buffers: &[DevicePtr], symbols: DevicePtr, range: &Range<i64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 * (buffers.len() + 3));
    for b in buffers {
        out.extend_from_slice(&b.0.to_le_bytes());
    }
    out.extend_from_slice(&symbols.0.to_le_bytes());
    out.extend_from_slice(&range.start.to_le_bytes());
    out.extend_from_slice(&range.end.to_le_bytes());
    out
}

/// The number of blocks of [`BLOCK_THREADS`] threads a launch over `range` needs when each
/// item of it is `threads_per_item` threads (0 for an empty range), or `None` when it exceeds
/// `max_blocks` (the device's grid limit).
pub fn grid_blocks(range: &Range<i64>, threads_per_item: u64, max_blocks: u64) -> Option<u64> {
    let items = u64::try_from(range.end.saturating_sub(range.start)).unwrap_or(0);
    let blocks = items.checked_mul(threads_per_item.max(1))?.div_ceil(BLOCK_THREADS as u64);
    (blocks <= max_blocks).then_some(blocks)
}

/// The capacity (in values) of a GPU device's symbol buffer.
pub const SYMBOL_SLOTS: usize = 64;

/// The device buffer a GPU device keeps the symbol values in, and the values it holds: a
/// launch uploads them only when they differ from the last ones (once per run, typically).
#[derive(Debug)]
pub struct SymbolBuffer {
    pub ptr: DevicePtr,
    held: Option<Vec<i64>>,
}

impl SymbolBuffer {
    /// A buffer at `ptr` of [`SYMBOL_SLOTS`] values, holding nothing yet.
    pub fn new(ptr: DevicePtr) -> SymbolBuffer {
        SymbolBuffer { ptr, held: None }
    }

    /// Makes the buffer hold `symbols`, calling `upload(bytes)` (to copy them to `ptr`) only
    /// when they differ from what it holds; returns its address. The copy must be ordered
    /// after the launches already issued (one stream), which read the old values.
    pub fn hold<E>(
        &mut self,
        symbols: &[i64],
        upload: impl FnOnce(&[u8]) -> Result<(), E>,
        too_many: impl FnOnce() -> E,
    ) -> Result<DevicePtr, E> {
        if symbols.len() > SYMBOL_SLOTS {
            return Err(too_many());
        }
        if self.held.as_deref() != Some(symbols) {
            let bytes: Vec<u8> = symbols.iter().flat_map(|s| s.to_le_bytes()).collect();
            upload(&bytes)?;
            self.held = Some(symbols.to_vec());
        }
        Ok(self.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_block_follows_the_layout() {
        let args = kernel_args(&[DevicePtr(0x1000), DevicePtr(0x2000)], DevicePtr(0x3000), &(5..9));
        let layout = kernel_arg_layout(2);
        assert_eq!(layout, [(0, 8), (8, 8), (16, 8), (24, 8), (32, 8)]);
        assert_eq!(args.len(), 40);
        let word = |i: usize| u64::from_le_bytes(args[layout[i].0..layout[i].0 + 8].try_into().unwrap());
        assert_eq!([word(0), word(1), word(2), word(3), word(4)], [0x1000, 0x2000, 0x3000, 5, 9]);
    }

    #[test]
    fn symbols_are_uploaded_only_when_they_change() {
        let mut buffer = SymbolBuffer::new(DevicePtr(0x40));
        let mut uploads = Vec::new();
        for symbols in [&[3i64, 4][..], &[3, 4], &[5, 4], &[5, 4], &[]] {
            let upload = |b: &[u8]| -> Result<(), ()> {
                uploads.push(b.to_vec());
                Ok(())
            };
            let p = buffer.hold(symbols, upload, || ()).unwrap();
            assert_eq!(p, DevicePtr(0x40));
        }
        assert_eq!(uploads.len(), 3);
        assert_eq!(uploads[1][..8], 5i64.to_le_bytes());
        assert!(buffer.hold(&[0; SYMBOL_SLOTS + 1], |_| Ok(()), || "too many").is_err());
    }

    #[test]
    fn grids_cover_the_range_in_whole_blocks() {
        assert_eq!(grid_blocks(&(0..0), 1, 10), Some(0));
        assert_eq!(grid_blocks(&Range { start: 3, end: 2 }, 1, 10), Some(0));
        assert_eq!(grid_blocks(&(0..1), 1, 10), Some(1));
        assert_eq!(grid_blocks(&(0..256), 1, 10), Some(1));
        assert_eq!(grid_blocks(&(10..267), 1, 10), Some(2));
        assert_eq!(grid_blocks(&(0..2561), 1, 10), None);
        // Items of several threads (a row's elements): 3 rows of 100 are 300 threads.
        assert_eq!(grid_blocks(&(4..7), 100, 10), Some(2));
        assert_eq!(grid_blocks(&(0..1), 0, 10), Some(1), "0 counts as 1");
        assert_eq!(grid_blocks(&(0..i64::MAX), u64::MAX, u64::MAX), None, "overflow");
    }
}
