//! # The host CPU as a [`Device`]
//!
//! Owns [`CpuDevice`]: device memory is host memory (64-byte aligned, zeroed allocations;
//! [`Device::map_host`] is the identity, so inputs, outputs and the memory-mapped weights are
//! used in place), copies are `memcpy`, code objects are ELF relocatable objects loaded by
//! [`crate::loader`], and a launch splits its range into chunks — at most one per thread, each
//! worth at least [`MIN_CHUNK_WORK`] estimated operations — runs the first on the launching
//! thread and the rest on a rayon pool, and returns when all have run (so
//! [`Device::synchronize`] has nothing to wait for).

use std::alloc::Layout;
use std::ops::Range;

use super::{CodeModule, Device, DeviceError, DevicePtr, KernelHandle, LaunchHints};
use crate::loader::LoadedCode;

/// The code-object target of this machine, as artifacts name it.
pub const HOST_TARGET: &str = if cfg!(target_arch = "x86_64") { "x86_64" } else { "aarch64" };

/// Alignment of every [`CpuDevice::alloc`] (a cache line; kernels need element alignment only).
pub const CPU_ALIGN: usize = 64;

/// The few functions the runtime provides to code objects: C's `fmod` and `fmodf` (exact float
/// remainders, which LLVM lowers `frem` to on x86-64). Cranelift objects reference nothing.
fn runtime_symbol(name: &str) -> Option<usize> {
    extern "C" fn fmod(x: f64, y: f64) -> f64 {
        x % y
    }
    extern "C" fn fmodf(x: f32, y: f32) -> f32 {
        x % y
    }
    match name {
        "fmod" => Some(fmod as extern "C" fn(f64, f64) -> f64 as usize),
        "fmodf" => Some(fmodf as extern "C" fn(f32, f32) -> f32 as usize),
        _ => None,
    }
}

/// The least estimated work (scalar operations) worth handing to another thread: waking a
/// worker costs several microseconds, about this much arithmetic.
pub const MIN_CHUNK_WORK: u64 = 65_536;

/// The kernel calling convention shared with every CPU backend.
type KernelFn = unsafe extern "C" fn(bufs: *const *mut u8, syms: *const i64, start: i64, end: i64);

/// The host CPU with a pool of worker threads for parallel loops.
pub struct CpuDevice {
    pool: rayon::ThreadPool,
    threads: usize,
}

impl std::fmt::Debug for CpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuDevice").field("threads", &self.threads).finish()
    }
}

impl CpuDevice {
    /// A device with `threads` workers (0: one per available core).
    pub fn new(threads: usize) -> Result<CpuDevice, DeviceError> {
        let threads =
            if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads };
        // The thread that launches runs one chunk itself; the pool holds the other workers.
        let pool =
            rayon::ThreadPoolBuilder::new().num_threads(threads.saturating_sub(1).max(1)).build().map_err(|e| {
                DeviceError::Driver { device: "cpu".into(), detail: format!("cannot start the thread pool: {e}") }
            })?;
        Ok(CpuDevice { pool, threads })
    }

    /// The number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn layout(bytes: usize) -> Result<Layout, DeviceError> {
        Layout::from_size_align(bytes, CPU_ALIGN).map_err(|_| DeviceError::OutOfMemory { device: "cpu".into(), bytes })
    }
}

impl CodeModule for LoadedCode {
    fn kernel(&self, symbol: &str) -> Option<KernelHandle> {
        self.symbol(symbol).map(|p| KernelHandle(p as usize as u64))
    }
}

fn host(p: DevicePtr) -> *mut u8 {
    p.0 as usize as *mut u8
}

impl Device for CpuDevice {
    fn name(&self) -> &str {
        "cpu"
    }

    fn target(&self) -> &str {
        HOST_TARGET
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr, DeviceError> {
        if bytes == 0 {
            // A dangling, aligned, never accessed address (like `NonNull::dangling`).
            return Ok(DevicePtr(CPU_ALIGN as u64));
        }
        let layout = Self::layout(bytes)?;
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(DeviceError::OutOfMemory { device: "cpu".into(), bytes });
        }
        Ok(DevicePtr(p as usize as u64))
    }

    unsafe fn free(&self, ptr: DevicePtr, bytes: usize) {
        if bytes != 0 {
            // The layout was valid when `alloc` made this allocation with the same size.
            if let Ok(layout) = Self::layout(bytes) {
                std::alloc::dealloc(host(ptr), layout);
            }
        }
    }

    fn map_host(&self, host: *const u8, _bytes: usize) -> Option<DevicePtr> {
        Some(DevicePtr(host as usize as u64))
    }

    unsafe fn copy_to_device(&self, dst: DevicePtr, src: &[u8]) -> Result<(), DeviceError> {
        std::ptr::copy(src.as_ptr(), host(dst), src.len());
        Ok(())
    }

    unsafe fn copy_to_host(&self, dst: &mut [u8], src: DevicePtr) -> Result<(), DeviceError> {
        std::ptr::copy(host(src), dst.as_mut_ptr(), dst.len());
        Ok(())
    }

    unsafe fn copy_on_device(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<(), DeviceError> {
        std::ptr::copy(host(src), host(dst), bytes);
        Ok(())
    }

    fn load_code(&self, code: &[u8]) -> Result<Box<dyn CodeModule>, DeviceError> {
        Ok(Box::new(LoadedCode::load(code, &runtime_symbol)?))
    }

    /// Splits `range` into `min(threads, len)` contiguous chunks, each worth at least
    /// [`MIN_CHUNK_WORK`] operations when the work is known: the first runs on the calling
    /// thread, the others on the pool's workers; returns when all have finished.
    unsafe fn launch(
        &self,
        kernel: KernelHandle,
        buffers: &[DevicePtr],
        symbols: &[i64],
        range: Range<i64>,
        hints: LaunchHints,
    ) -> Result<(), DeviceError> {
        let work = hints.work;
        // SAFETY (caller): `kernel` is a function of a live module with the shared convention.
        let f: KernelFn = std::mem::transmute::<usize, KernelFn>(kernel.0 as usize);
        let bufs: Vec<*mut u8> = buffers.iter().map(|&b| host(b)).collect();
        let (bp, sp) = (bufs.as_ptr() as usize, symbols.as_ptr() as usize);
        let (start, end) = (range.start, range.end.max(range.start));
        let len = end as i128 - start as i128;
        let by_work = if work == 0 { i128::MAX } else { (work / MIN_CHUNK_WORK) as i128 };
        let chunks = (self.threads as i128).min(len).min(by_work).max(1);
        if chunks == 1 {
            f(bp as *const *mut u8, sp as *const i64, start, end);
            return Ok(());
        }
        let bound = |c: i128| (start as i128 + len * c / chunks) as i64;
        self.pool.in_place_scope(|s| {
            for c in 1..chunks {
                let (lo, hi) = (bound(c), bound(c + 1));
                // SAFETY: chunks cover disjoint iterations of the parallel loop, which write
                // disjoint elements; `bufs` and `symbols` outlive the scope.
                s.spawn(move |_| unsafe { f(bp as *const *mut u8, sp as *const i64, lo, hi) });
            }
            // SAFETY: as above; chunk 0 runs on the launching thread.
            unsafe { f(bp as *const *mut u8, sp as *const i64, bound(0), bound(1)) };
        });
        Ok(())
    }

    fn synchronize(&self) -> Result<(), DeviceError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceAllocation;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn device(threads: usize) -> Arc<dyn Device> {
        Arc::new(CpuDevice::new(threads).unwrap())
    }

    #[test]
    fn thread_count() {
        assert_eq!(CpuDevice::new(3).unwrap().threads(), 3);
        assert!(CpuDevice::new(0).unwrap().threads() >= 1);
    }

    #[test]
    fn allocations_are_aligned_zeroed_and_freed() {
        let d = device(1);
        for bytes in [0, 1, 63, 64, 1000, 1 << 20] {
            let a = DeviceAllocation::new(&d, bytes).unwrap();
            assert_eq!(a.ptr().0 % CPU_ALIGN as u64, 0, "{bytes} bytes");
            assert!(a.is_device_memory());
            let mut back = vec![1u8; bytes];
            unsafe { d.copy_to_host(&mut back, a.ptr()).unwrap() };
            assert!(back.iter().all(|&b| b == 0), "{bytes} bytes are not zeroed");
        }
        assert!(matches!(d.alloc(usize::MAX), Err(DeviceError::OutOfMemory { .. })));
    }

    #[test]
    fn copies_in_every_direction() {
        let d = device(1);
        let data: Vec<u8> = (0..=255).collect();
        let a = DeviceAllocation::new(&d, 256).unwrap();
        let b = DeviceAllocation::new(&d, 256).unwrap();
        let mut back = vec![0u8; 256];
        unsafe {
            d.copy_to_device(a.ptr(), &data).unwrap();
            d.copy_on_device(b.ptr().offset(16), a.ptr(), 100).unwrap();
            d.copy_to_host(&mut back, b.ptr()).unwrap();
        }
        d.synchronize().unwrap();
        assert_eq!(&back[..16], &[0; 16]);
        assert_eq!(&back[16..116], &data[..100]);
        assert_eq!(&back[116..], &[0; 140]);
    }

    #[test]
    fn host_memory_is_used_in_place() {
        let d = device(1);
        let host = vec![7u8; 32];
        let view = DeviceAllocation::of_host(&d, &host).unwrap();
        assert!(!view.is_device_memory());
        assert_eq!(view.ptr().0, host.as_ptr() as u64);
        drop(view); // must not free `host`
        assert_eq!(host, vec![7u8; 32]);
    }

    /// hits[i] += syms[0] for i in [start, end), and counts its calls in the atomic that
    /// bufs[1] points to: a kernel with the CPU calling convention.
    unsafe extern "C" fn add_symbol(bufs: *const *mut u8, syms: *const i64, start: i64, end: i64) {
        (*(*bufs.add(1) as *const AtomicUsize)).fetch_add(1, Ordering::SeqCst);
        let hits = *bufs as *mut i64;
        for i in start..end {
            *hits.add(i as usize) += *syms;
        }
    }

    /// Launches `add_symbol` over `range` with `hits` and symbol value `v`; returns the calls.
    fn launch_add(d: &Arc<dyn Device>, hits: &DeviceAllocation, v: i64, range: Range<i64>) -> usize {
        let calls = AtomicUsize::new(0);
        let counter = DevicePtr(&calls as *const AtomicUsize as usize as u64);
        let kernel = KernelHandle(add_symbol as *const () as usize as u64);
        unsafe { d.launch(kernel, &[hits.ptr(), counter], &[v], range, LaunchHints::default()).unwrap() };
        calls.load(Ordering::SeqCst)
    }

    fn i64s(d: &Arc<dyn Device>, a: &DeviceAllocation) -> Vec<i64> {
        let mut back = vec![0u8; a.bytes()];
        unsafe { d.copy_to_host(&mut back, a.ptr()).unwrap() };
        back.chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn code_may_call_only_the_runtime_fmod() {
        let f = runtime_symbol("fmod").expect("fmod is provided");
        let fmod: extern "C" fn(f64, f64) -> f64 = unsafe { std::mem::transmute(f) };
        assert_eq!(fmod(5.5, 2.0), 1.5);
        assert_eq!(fmod(-5.5, 2.0), -1.5);
        assert!(runtime_symbol("fmodf").is_some());
        assert!(runtime_symbol("malloc").is_none() && runtime_symbol("memset").is_none());
    }

    #[test]
    fn small_launches_run_in_one_chunk() {
        let d = device(8);
        let hits = DeviceAllocation::new(&d, 8 * 40).unwrap();
        let calls = AtomicUsize::new(0);
        let counter = DevicePtr(&calls as *const AtomicUsize as usize as u64);
        let kernel = KernelHandle(add_symbol as *const () as usize as u64);
        for (work, want) in [(10, 1), (MIN_CHUNK_WORK * 3, 3), (MIN_CHUNK_WORK * 100, 8)] {
            calls.store(0, Ordering::SeqCst);
            unsafe {
                d.launch(kernel, &[hits.ptr(), counter], &[1], 0..40, LaunchHints { work, ..LaunchHints::default() })
                    .unwrap()
            };
            assert_eq!(calls.load(Ordering::SeqCst), want, "work {work}");
        }
    }

    #[test]
    fn launch_covers_the_range_once_in_chunks() {
        for threads in [1, 2, 3, 8] {
            let d = device(threads);
            let hits = DeviceAllocation::new(&d, 8 * 40).unwrap();
            let calls = launch_add(&d, &hits, 5, 3..37);
            let want: Vec<i64> = (0..40).map(|i| if (3..37).contains(&i) { 5 } else { 0 }).collect();
            assert_eq!(i64s(&d, &hits), want, "{threads} threads");
            assert_eq!(calls, threads, "one chunk per thread");
        }
    }

    #[test]
    #[allow(clippy::reversed_empty_ranges)] // on purpose: an end before the start is empty
    fn short_and_empty_ranges() {
        let d = device(4);
        let hits = DeviceAllocation::new(&d, 8 * 4).unwrap();
        assert_eq!(launch_add(&d, &hits, 1, 0..2), 2, "no more chunks than iterations");
        assert!(launch_add(&d, &hits, 1, 2..2) <= 1);
        assert!(launch_add(&d, &hits, 1, 3..1) <= 1);
        assert_eq!(i64s(&d, &hits), [1, 1, 0, 0]);
    }

    #[test]
    fn bad_code_is_a_load_error() {
        let d = device(1);
        assert!(matches!(d.load_code(b"not an ELF object"), Err(DeviceError::Code(_))));
    }

    /// The committed `tests/data/device_pic.o` (built by `regen.sh` from `device.c`).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn loads_code_and_launches_its_kernels() {
        let d = device(3);
        let code = d.load_code(include_bytes!("../../tests/data/device_pic.o")).unwrap();
        assert!(code.kernel("kiln_missing").is_none());
        let (axpy, count) = (code.kernel("kiln_axpy").unwrap(), code.kernel("kiln_count").unwrap());

        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let x: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let y = vec![0.5f32; 100];
        let (xb, yb) = (f32s(&x), f32s(&y));
        let (xd, yd) = (DeviceAllocation::of_host(&d, &xb).unwrap(), DeviceAllocation::of_host(&d, &yb).unwrap());
        let out = DeviceAllocation::new(&d, 400).unwrap();
        unsafe { d.launch(axpy, &[xd.ptr(), yd.ptr(), out.ptr()], &[3], 0..100, LaunchHints::default()).unwrap() };
        let mut back = vec![0u8; 400];
        unsafe { d.copy_to_host(&mut back, out.ptr()).unwrap() };
        let got: Vec<f32> = back.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got, x.iter().map(|v| 3.0 * v + 0.5).collect::<Vec<f32>>());

        let hits = DeviceAllocation::new(&d, 4 * 10).unwrap();
        for _ in 0..2 {
            unsafe { d.launch(count, &[hits.ptr()], &[], 0..10, LaunchHints::default()).unwrap() };
        }
        let mut back = vec![0u8; 40];
        unsafe { d.copy_to_host(&mut back, hits.ptr()).unwrap() };
        assert!(back.chunks(4).all(|c| i32::from_le_bytes(c.try_into().unwrap()) == 2), "{back:?}");
    }
}
