//! # Devices: where a model's memory lives and its kernels run
//!
//! The executor ([`crate::exec`]) runs a launch plan through the [`Device`] trait and nothing
//! else: it never dereferences device memory, calls a kernel or loads code itself. This module
//! owns that trait, the opaque handles it hands out ([`DevicePtr`], [`KernelHandle`]), the
//! [`CodeModule`] trait for loaded code, [`DeviceError`] and [`DeviceAllocation`] (an
//! allocation freed on drop). [`cpu`] implements the trait for the host CPU; [`gpu`]
//! implements it once for GPUs over a vendor runtime's few operations, which [`cuda`]
//! (NVIDIA, the driver API) and [`hip`] (AMD) load at run time; [`gpu_launch`] is the launch
//! contract of kiln's GPU kernels. Neither GPU device has run on a GPU yet.
//!
//! ## The contract
//!
//! - **Memory** is addressed by [`DevicePtr`], an integer in the device's address space that
//!   the host must not dereference (on a GPU it is a device address). [`Device::alloc`] and
//!   [`Device::free`] manage it; the three copies move bytes host→device, device→host and
//!   device→device. Pointer arithmetic inside one allocation ([`DevicePtr::offset`]) is valid.
//! - **Host memory the device can address** ([`Device::map_host`]): a device that can read
//!   and write host memory in place (the CPU) returns the address kernels use for it, so the
//!   executor passes inputs, outputs and the memory-mapped weights without copying; a device
//!   that cannot returns `None` and the executor allocates and copies instead. Weights are
//!   made available once per loaded model, either way.
//! - **Code**: [`Device::load_code`] turns one code object (the bytes of the artifact's section
//!   for [`Device::target`]) into a [`CodeModule`], from which [`CodeModule::kernel`] looks up
//!   kernels by symbol. A [`KernelHandle`] is valid while its module lives.
//! - **Launch**: [`Device::launch`] runs one kernel with its buffer addresses, the values of the
//!   signature's symbols, and a range `[start, end)` of the kernel's outermost parallel loop;
//!   the device chooses how to spread it (threads, a grid). Launches may be asynchronous;
//!   launches and copies issued from one thread execute in the order they were issued, and
//!   [`Device::synchronize`] waits for all of them. Several threads may use one device at once
//!   (the trait requires `Send + Sync`).
//! - **Graphs** (GPUs): [`Device::begin_capture`] / [`Device::end_capture`] record a run's
//!   launches and copies once; [`Device::replay`] submits them again as one unit, which cuts
//!   the per-launch overhead of small models. The executor replays only with the same buffers
//!   and symbol values it recorded with.

pub mod cpu;
pub mod cuda;
pub mod gpu;
pub mod gpu_launch;
pub mod hip;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::loader::LoadError;

pub use cpu::CpuDevice;

/// An address in a device's memory. Opaque to the host: only the device that produced it may
/// access the memory behind it. (CPU: a host address; CUDA: a `CUdeviceptr`; HIP: a device
/// pointer.)
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct DevicePtr(pub u64);

impl DevicePtr {
    /// The address `bytes` past `self`; only meaningful inside one allocation.
    pub fn offset(self, bytes: usize) -> DevicePtr {
        DevicePtr(self.0.wrapping_add(bytes as u64))
    }
}

impl fmt::Debug for DevicePtr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevicePtr({:#x})", self.0)
    }
}

/// A kernel of a loaded [`CodeModule`], valid as long as that module lives. Opaque: only the
/// device that loaded the module interprets it (CPU: the function's address; CUDA: a
/// `CUfunction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelHandle(pub u64);

/// One code object loaded on a device. Dropping it unloads the code: kernel handles looked up
/// from it must not be launched afterwards.
pub trait CodeModule: Send + Sync {
    /// The kernel whose symbol is `symbol`, or `None` when the code object does not define it.
    fn kernel(&self, symbol: &str) -> Option<KernelHandle>;
}

/// What can go wrong on a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The code object could not be loaded (CPU: the ELF loader's error).
    #[error(transparent)]
    Code(#[from] LoadError),
    /// An allocation failed.
    #[error("{device}: cannot allocate {bytes} bytes")]
    OutOfMemory { device: String, bytes: usize },
    /// A launch was refused (e.g. a range that does not fit the device's limits).
    #[error("{device}: cannot launch a kernel: {detail}")]
    Launch { device: String, detail: String },
    /// Any other failure reported by the device or its driver.
    #[error("{device}: {detail}")]
    Driver { device: String, detail: String },
}

/// A compute device: memory, code loading, kernel launches. See the [module docs](self) for the
/// contract. Object safe, so a model holds a `Box<dyn Device>` chosen at run time.
pub trait Device: Send + Sync {
    /// A short name for messages (`cpu`, later `cuda:0`).
    fn name(&self) -> &str;

    /// The code-object target this device runs, as artifacts name it (`x86_64`, `aarch64`,
    /// later `sm_90`, `gfx942`).
    fn target(&self) -> &str;

    /// The code-object targets this device can run, in order of preference (an artifact's
    /// first match is loaded): [`Device::target`] alone unless the device also runs code for
    /// older targets (a CUDA GPU runs PTX made for an older architecture).
    fn code_targets(&self) -> Vec<String> {
        vec![self.target().to_string()]
    }

    /// Allocates `bytes` bytes (zeroed, aligned to at least 64 bytes). `alloc(0)` succeeds with
    /// an address that must not be accessed.
    fn alloc(&self, bytes: usize) -> Result<DevicePtr, DeviceError>;

    /// Frees an allocation.
    ///
    /// # Safety
    /// `ptr` and `bytes` come from one successful [`Device::alloc`] on this device, are freed
    /// once, and no pending launch or copy still uses the memory.
    unsafe fn free(&self, ptr: DevicePtr, bytes: usize);

    /// The address kernels on this device use for the host memory `[host, host + bytes)`, when
    /// the device can access host memory in place (zero copy); `None` otherwise.
    fn map_host(&self, host: *const u8, bytes: usize) -> Option<DevicePtr>;

    /// Copies `src` from the host into device memory at `dst`.
    ///
    /// # Safety
    /// `[dst, dst + src.len())` lies inside one live allocation (or mapping) of this device.
    unsafe fn copy_to_device(&self, dst: DevicePtr, src: &[u8]) -> Result<(), DeviceError>;

    /// Copies `dst.len()` bytes of device memory at `src` to the host; returns when they are
    /// there (after the launches issued before it).
    ///
    /// # Safety
    /// `[src, src + dst.len())` lies inside one live allocation (or mapping) of this device.
    unsafe fn copy_to_host(&self, dst: &mut [u8], src: DevicePtr) -> Result<(), DeviceError>;

    /// Copies `bytes` bytes from `src` to `dst`, both in device memory.
    ///
    /// # Safety
    /// Both ranges lie inside live allocations (or mappings) of this device and do not overlap.
    unsafe fn copy_on_device(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<(), DeviceError>;

    /// Loads a code object for [`Device::target`].
    fn load_code(&self, code: &[u8]) -> Result<Box<dyn CodeModule>, DeviceError>;

    /// Runs `kernel` over `[range.start, range.end)` of its outermost parallel loop, with
    /// `buffers` as its buffer arguments and `symbols` as the values of the signature's symbols.
    /// Running any ranges that cover the loop's extent computes the kernel, so the device may
    /// split the range (an empty range may still call the kernel, which then does nothing).
    /// `hints` say what else the compiler knows about the launch ([`LaunchHints`]).
    ///
    /// # Safety
    /// `kernel` comes from a live [`CodeModule`] of this device; `buffers` are live device
    /// addresses sized as the kernel accesses them for `symbols` over `range`, in the order and
    /// number the kernel expects; kernels running at the same time do not write memory that
    /// another one reads or writes.
    unsafe fn launch(
        &self,
        kernel: KernelHandle,
        buffers: &[DevicePtr],
        symbols: &[i64],
        range: Range<i64>,
        hints: LaunchHints,
    ) -> Result<(), DeviceError>;

    /// Waits until every launch and copy issued on this device has finished.
    fn synchronize(&self) -> Result<(), DeviceError>;

    /// Starts recording the launches and device-to-device copies this thread issues next,
    /// instead of running them, into a graph that [`Device::replay`] runs again (CUDA and
    /// HIP graphs: one submission for a whole plan). The launches will see `symbols` (the
    /// device makes them current first; nothing else may be copied or allocated until
    /// [`Device::end_capture`]). `Ok(false)`: the device has no graphs (the default).
    fn begin_capture(&self, symbols: &[i64]) -> Result<bool, DeviceError> {
        let _ = symbols;
        Ok(false)
    }

    /// Ends a recording begun by [`Device::begin_capture`] (always call it once that returned
    /// `true`, even when a launch failed) and makes it replayable.
    fn end_capture(&self) -> Result<GraphHandle, DeviceError> {
        Err(DeviceError::Driver { device: self.name().into(), detail: "this device has no graphs".into() })
    }

    /// Runs a recorded graph again (asynchronously, like launches), with `symbols` as the
    /// symbol values its launches read.
    ///
    /// # Safety
    /// `graph` comes from [`Device::end_capture`] of this device and is live; every buffer its
    /// launches and copies use is still allocated.
    unsafe fn replay(&self, graph: GraphHandle, symbols: &[i64]) -> Result<(), DeviceError> {
        let _ = (graph, symbols);
        Err(DeviceError::Driver { device: self.name().into(), detail: "this device has no graphs".into() })
    }

    /// Frees a recorded graph.
    ///
    /// # Safety
    /// `graph` comes from [`Device::end_capture`] of this device, is freed once, and no replay
    /// of it is pending.
    unsafe fn drop_graph(&self, graph: GraphHandle) {
        let _ = graph;
    }
}

/// A recorded graph of launches and copies ([`Device::begin_capture`]). Opaque: only the
/// device that recorded it interprets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GraphHandle(pub u64);

/// What the compiler knows about one launch besides its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchHints {
    /// The scalar operations of the whole launch (0: unknown); a CPU runs a small launch
    /// without splitting it, where splitting costs more than it saves.
    pub work: u64,
    /// Threads per item of the range in the GPU code (its kernels run a row's elements one
    /// per thread; see the manifest's `KernelSpec::gpu_threads_per_item`): a GPU runs
    /// `(end - start) * threads_per_item` threads. Always 1 for CPU code.
    pub threads_per_item: u64,
    /// The blocks a GPU launches when its code runs the kernel in tiles (the manifest's
    /// `KernelSpec::gpu_tiles`, evaluated for the range); overrides `threads_per_item`.
    pub gpu_blocks: Option<u64>,
}

impl Default for LaunchHints {
    fn default() -> Self {
        LaunchHints { work: 0, threads_per_item: 1, gpu_blocks: None }
    }
}

/// Device memory freed on drop: from [`Device::alloc`], or host memory seen through
/// [`Device::map_host`] (not freed). Holds its device, so it may outlive the code that made it.
pub struct DeviceAllocation {
    device: Arc<dyn Device>,
    ptr: DevicePtr,
    bytes: usize,
    owned: bool,
}

impl DeviceAllocation {
    /// Allocates `bytes` bytes on `device`.
    pub fn new(device: &Arc<dyn Device>, bytes: usize) -> Result<DeviceAllocation, DeviceError> {
        Ok(DeviceAllocation { ptr: device.alloc(bytes)?, device: device.clone(), bytes, owned: true })
    }

    /// The device's view of `host` when the device can address it in place, else a new
    /// allocation holding a copy of it.
    ///
    /// The caller must keep `host` alive and unmoved while the result is in use.
    pub fn of_host(device: &Arc<dyn Device>, host: &[u8]) -> Result<DeviceAllocation, DeviceError> {
        if let Some(ptr) = device.map_host(host.as_ptr(), host.len()) {
            return Ok(DeviceAllocation { device: device.clone(), ptr, bytes: host.len(), owned: false });
        }
        let a = DeviceAllocation::new(device, host.len())?;
        // SAFETY: the allocation is `host.len()` bytes long.
        unsafe { device.copy_to_device(a.ptr, host)? };
        Ok(a)
    }

    /// Where kernels write a result that ends up in `host`: `host` itself when the device can
    /// address it in place, else a new (zeroed) allocation of its size, which the caller
    /// copies back with [`Device::copy_to_host`] when [`DeviceAllocation::is_device_memory`].
    ///
    /// The caller must keep `host` alive, unmoved and otherwise unaccessed while the result is
    /// in use.
    pub fn for_host_output(device: &Arc<dyn Device>, host: &mut [u8]) -> Result<DeviceAllocation, DeviceError> {
        match device.map_host(host.as_mut_ptr(), host.len()) {
            Some(ptr) => Ok(DeviceAllocation { device: device.clone(), ptr, bytes: host.len(), owned: false }),
            None => DeviceAllocation::new(device, host.len()),
        }
    }

    pub fn ptr(&self) -> DevicePtr {
        self.ptr
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether this is memory of the device (`false`: host memory used in place).
    pub fn is_device_memory(&self) -> bool {
        self.owned
    }
}

impl fmt::Debug for DeviceAllocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAllocation")
            .field("device", &self.device.name())
            .field("ptr", &self.ptr)
            .field("bytes", &self.bytes)
            .field("owned", &self.owned)
            .finish()
    }
}

impl Drop for DeviceAllocation {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: allocated by `new` on this device and freed only here; users synchronize
            // the device before dropping memory that launches used.
            unsafe { self.device.free(self.ptr, self.bytes) };
        }
    }
}
