//! What the GPU devices share: [`GpuDevice`] implements [`Device`] once, over the few
//! operations of a vendor's runtime ([`GpuApi`]: CUDA's driver API in [`super::cuda`], HIP in
//! [`super::hip`]).
//!
//! Memory is device memory (allocated zeroed); host memory is never mapped, so the executor
//! copies inputs and outputs and uploads the weights once per loaded model. A launch runs
//! [`BLOCK_THREADS`]-thread blocks with the packed argument block of
//! [`gpu_launch::kernel_args`]; the symbol values live in a small device buffer
//! ([`SymbolBuffer`]), uploaded when they change. Launches and device-to-device copies go
//! on the runtime's stream (one per device, synchronized with the host copies), in issue
//! order; a run's launches can be recorded into a graph and replayed ([`GpuApi::begin_capture`]).

use std::ffi::CString;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::gpu_launch::{self, SymbolBuffer, BLOCK_THREADS, SYMBOL_SLOTS};
use super::{CodeModule, Device, DeviceError, DevicePtr, GraphHandle, KernelHandle, LaunchHints};

/// A vendor runtime's operations on one device, as [`GpuDevice`] uses them. Handles (device
/// addresses, modules, functions) are plain integers; errors are the runtime's description.
pub trait GpuApi: Send + Sync + 'static {
    /// Makes the device current on the calling thread (every other call follows one).
    fn enter(&self) -> Result<(), String>;
    /// Allocates `bytes > 0` bytes of device memory.
    fn malloc(&self, bytes: usize) -> Result<u64, String>;
    /// Frees an allocation.
    ///
    /// # Safety
    /// `ptr` comes from [`GpuApi::malloc`], is freed once and no longer used.
    unsafe fn free(&self, ptr: u64);
    /// Sets `bytes` bytes at `ptr` to zero.
    ///
    /// # Safety
    /// The range lies in one allocation.
    unsafe fn zero(&self, ptr: u64, bytes: usize) -> Result<(), String>;
    /// # Safety
    /// `[dst, dst + src.len())` lies in one allocation.
    unsafe fn copy_to_device(&self, dst: u64, src: &[u8]) -> Result<(), String>;
    /// # Safety
    /// `[src, src + dst.len())` lies in one allocation.
    unsafe fn copy_to_host(&self, dst: &mut [u8], src: u64) -> Result<(), String>;
    /// # Safety
    /// Both ranges lie in allocations and do not overlap.
    unsafe fn copy_on_device(&self, dst: u64, src: u64, bytes: usize) -> Result<(), String>;
    /// Loads a code object; returns the module.
    fn load_module(&self, code: &[u8]) -> Result<usize, String>;
    /// The kernel `name` of a loaded module.
    fn function(&self, module: usize, name: &CString) -> Option<usize>;
    /// Unloads a module.
    ///
    /// # Safety
    /// `module` comes from [`GpuApi::load_module`], is unloaded once, and no launch of its
    /// kernels is pending.
    unsafe fn unload(&self, module: usize);
    /// Launches `function` on `blocks` blocks of [`BLOCK_THREADS`] threads with the argument
    /// block `args` (8-byte words).
    ///
    /// # Safety
    /// `function` is a kernel of a live module taking exactly this argument block.
    unsafe fn launch(&self, function: usize, blocks: u32, args: &mut [u64]) -> Result<(), String>;
    /// Waits for everything issued on the device.
    fn synchronize(&self) -> Result<(), String>;
    /// Whether the runtime records graphs (the four methods below); default: no.
    fn has_graphs(&self) -> bool {
        false
    }
    /// Starts recording this thread's launches and device copies on the runtime's stream
    /// into a graph instead of running them.
    fn begin_capture(&self) -> Result<(), String> {
        Err("this runtime has no graphs".into())
    }
    /// Ends the recording and instantiates it; returns the executable graph.
    fn end_capture(&self) -> Result<u64, String> {
        Err("this runtime has no graphs".into())
    }
    /// Submits an executable graph on the runtime's stream.
    ///
    /// # Safety
    /// `graph` comes from [`GpuApi::end_capture`] and is live; its buffers are allocated.
    unsafe fn launch_graph(&self, graph: u64) -> Result<(), String> {
        let _ = graph;
        Err("this runtime has no graphs".into())
    }
    /// Frees an executable graph.
    ///
    /// # Safety
    /// `graph` comes from [`GpuApi::end_capture`], is freed once, and is not running.
    unsafe fn destroy_graph(&self, graph: u64) {
        let _ = graph;
    }
}

/// A GPU as a [`Device`], over its runtime's [`GpuApi`].
pub struct GpuDevice<A: GpuApi> {
    api: Arc<A>,
    name: String,
    target: String,
    code_targets: Vec<String>,
    max_blocks: u64,
    symbols: Mutex<SymbolBuffer>,
}

impl<A: GpuApi> GpuDevice<A> {
    /// A device named `name` (`cuda:0`) running code for `target`, loading the first of
    /// `code_targets` an artifact has and the device accepts, with grids of at most
    /// `max_blocks` blocks. (CUDA and HIP devices are made by their `open`; this is public
    /// for other runtimes and for tests.)
    pub fn new(
        api: A,
        name: String,
        target: String,
        code_targets: Vec<String>,
        max_blocks: u64,
    ) -> Result<Self, DeviceError> {
        let mut d = GpuDevice {
            api: Arc::new(api),
            name,
            target,
            code_targets,
            max_blocks,
            symbols: Mutex::new(SymbolBuffer::new(DevicePtr(0))),
        };
        let buffer = d.alloc(8 * SYMBOL_SLOTS)?;
        d.symbols = Mutex::new(SymbolBuffer::new(buffer));
        Ok(d)
    }

    /// The vendor runtime.
    pub fn api(&self) -> &A {
        &self.api
    }

    fn err(&self, detail: String) -> DeviceError {
        DeviceError::Driver { device: self.name.clone(), detail }
    }

    fn enter(&self) -> Result<(), DeviceError> {
        self.api.enter().map_err(|e| self.err(e))
    }
}

impl<A: GpuApi> Drop for GpuDevice<A> {
    fn drop(&mut self) {
        let buffer = self.symbols.get_mut().map(|b| b.ptr).unwrap_or(DevicePtr(0));
        // SAFETY: allocated in `new` with this size; nothing is pending after the device.
        unsafe { self.free(buffer, 8 * SYMBOL_SLOTS) };
    }
}

/// A loaded code object; holds the runtime, so it may outlive its device handle.
struct GpuModule<A: GpuApi> {
    api: Arc<A>,
    module: usize,
}

impl<A: GpuApi> CodeModule for GpuModule<A> {
    fn kernel(&self, symbol: &str) -> Option<KernelHandle> {
        let name = CString::new(symbol).ok()?;
        self.api.enter().ok()?;
        self.api.function(self.module, &name).map(|f| KernelHandle(f as u64))
    }
}

impl<A: GpuApi> Drop for GpuModule<A> {
    fn drop(&mut self) {
        if self.api.enter().is_ok() {
            // SAFETY: loaded by this runtime, unloaded once, here.
            unsafe { self.api.unload(self.module) };
        }
    }
}

impl<A: GpuApi> Device for GpuDevice<A> {
    fn name(&self) -> &str {
        &self.name
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn code_targets(&self) -> Vec<String> {
        self.code_targets.clone()
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr, DeviceError> {
        if bytes == 0 {
            return Ok(DevicePtr(0));
        }
        self.enter()?;
        let p = self.api.malloc(bytes).map_err(|_| DeviceError::OutOfMemory { device: self.name.clone(), bytes })?;
        // SAFETY: the allocation just made.
        unsafe { self.api.zero(p, bytes) }.map_err(|e| self.err(e))?;
        Ok(DevicePtr(p))
    }

    unsafe fn free(&self, ptr: DevicePtr, bytes: usize) {
        if bytes == 0 || ptr.0 == 0 || self.enter().is_err() {
            return;
        }
        // SAFETY: the caller passes an allocation of this device, freed once.
        unsafe { self.api.free(ptr.0) };
    }

    fn map_host(&self, _host: *const u8, _bytes: usize) -> Option<DevicePtr> {
        None
    }

    unsafe fn copy_to_device(&self, dst: DevicePtr, src: &[u8]) -> Result<(), DeviceError> {
        if src.is_empty() {
            return Ok(());
        }
        self.enter()?;
        // SAFETY: the caller's contract.
        unsafe { self.api.copy_to_device(dst.0, src) }.map_err(|e| self.err(e))
    }

    unsafe fn copy_to_host(&self, dst: &mut [u8], src: DevicePtr) -> Result<(), DeviceError> {
        if dst.is_empty() {
            return Ok(());
        }
        self.enter()?;
        // SAFETY: the caller's contract.
        unsafe { self.api.copy_to_host(dst, src.0) }.map_err(|e| self.err(e))
    }

    unsafe fn copy_on_device(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<(), DeviceError> {
        if bytes == 0 {
            return Ok(());
        }
        self.enter()?;
        // SAFETY: the caller's contract.
        unsafe { self.api.copy_on_device(dst.0, src.0, bytes) }.map_err(|e| self.err(e))
    }

    fn load_code(&self, code: &[u8]) -> Result<Box<dyn CodeModule>, DeviceError> {
        self.enter()?;
        let module = self.api.load_module(code).map_err(|e| self.err(e))?;
        Ok(Box::new(GpuModule { api: self.api.clone(), module }))
    }

    unsafe fn launch(
        &self,
        kernel: KernelHandle,
        buffers: &[DevicePtr],
        symbols: &[i64],
        range: Range<i64>,
        hints: LaunchHints,
    ) -> Result<(), DeviceError> {
        let launch_error = |detail: String| DeviceError::Launch { device: self.name.clone(), detail };
        let blocks = match hints.gpu_blocks {
            Some(b) => Some(b).filter(|&b| b <= self.max_blocks),
            None => gpu_launch::grid_blocks(&range, hints.threads_per_item, self.max_blocks),
        };
        let blocks = blocks.ok_or_else(|| {
            launch_error(format!(
                "a range of {} items of {} threads needs more blocks than the grid allows",
                range.end - range.start,
                hints.threads_per_item
            ))
        })?;
        if blocks == 0 {
            return Ok(());
        }
        self.enter()?;
        let syms_ptr = self.hold_symbols(symbols)?;
        let packed = gpu_launch::kernel_args(buffers, syms_ptr, &range);
        let mut words: Vec<u64> = packed.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().unwrap())).collect();
        // SAFETY: `kernel` is a function of a live module of this device taking the argument
        // block `gpu_launch` lays out (the caller's contract).
        unsafe { self.api.launch(kernel.0 as usize, blocks as u32, &mut words) }.map_err(launch_error)
    }

    fn synchronize(&self) -> Result<(), DeviceError> {
        self.enter()?;
        self.api.synchronize().map_err(|e| self.err(e))
    }

    fn begin_capture(&self, symbols: &[i64]) -> Result<bool, DeviceError> {
        if !self.api.has_graphs() {
            return Ok(false);
        }
        self.enter()?;
        // The symbol values go to the device before the recording: a recorded launch must
        // not copy from the host.
        self.hold_symbols(symbols)?;
        self.api.begin_capture().map_err(|e| self.err(e))?;
        Ok(true)
    }

    fn end_capture(&self) -> Result<GraphHandle, DeviceError> {
        self.enter()?;
        self.api.end_capture().map(GraphHandle).map_err(|e| self.err(e))
    }

    unsafe fn replay(&self, graph: GraphHandle, symbols: &[i64]) -> Result<(), DeviceError> {
        self.enter()?;
        self.hold_symbols(symbols)?;
        // SAFETY: the caller's contract.
        unsafe { self.api.launch_graph(graph.0) }.map_err(|e| self.err(e))
    }

    unsafe fn drop_graph(&self, graph: GraphHandle) {
        if self.enter().is_ok() {
            // SAFETY: the caller's contract.
            unsafe { self.api.destroy_graph(graph.0) };
        }
    }
}

impl<A: GpuApi> GpuDevice<A> {
    /// Makes the symbol buffer hold `symbols` (uploading them when it holds other values);
    /// returns its address.
    fn hold_symbols(&self, symbols: &[i64]) -> Result<DevicePtr, DeviceError> {
        let mut held = self.symbols.lock().map_err(|_| self.err("the symbol buffer's lock is poisoned".into()))?;
        let at = held.ptr;
        held.hold(
            symbols,
            // SAFETY: the buffer holds SYMBOL_SLOTS values; the copy is ordered after the
            // launches already issued, which read the old values (the copy is synchronous
            // with respect to the runtime's stream).
            |bytes| unsafe { self.copy_to_device(at, bytes) },
            || DeviceError::Launch {
                device: self.name.clone(),
                detail: format!("{} symbols; this device passes at most {SYMBOL_SLOTS}", symbols.len()),
            },
        )
    }
}

/// The 8-byte words of an argument block as the `extra` launch parameter both CUDA and HIP
/// take: `[BUFFER_POINTER, &words, BUFFER_SIZE, &size, END]` with each runtime's tags.
pub(crate) fn extra_params(
    words: &mut [u64],
    size: &mut usize,
    tags: (usize, usize, usize),
) -> [*mut std::ffi::c_void; 5] {
    [tags.0 as *mut _, words.as_mut_ptr().cast(), tags.1 as *mut _, (size as *mut usize).cast(), tags.2 as *mut _]
}

/// `BLOCK_THREADS` as the runtimes' launch calls take it.
pub(crate) const BLOCK: u32 = BLOCK_THREADS;
