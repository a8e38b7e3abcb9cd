//! # NVIDIA GPUs as a [`Device`], through the CUDA driver API
//!
//! Owns [`CudaDevice`]. The driver (`libcuda.so.1`) is loaded when a device is opened, never
//! linked: kiln builds, and its tests run, on machines without CUDA, and a missing driver or
//! device is an error ([`CudaDevice::open`]), not a crash. Memory is device memory
//! (`cuMemAlloc`, zeroed); host memory is never mapped, so the executor copies inputs and
//! outputs and uploads the weights once per loaded model. Code objects are PTX, which the
//! driver JIT-compiles for the GPU at load (`cuModuleLoadDataEx`; its error log is part of the
//! error). Launches go on the context's default stream in issue order; each runs
//! [`gpu_launch::BLOCK_THREADS`]-thread blocks with the arguments [`gpu_launch`] specifies;
//! the symbol values live in a small device buffer, uploaded when they change.
//!
//! Every call makes the device's (primary) context current on the calling thread first, so
//! any thread may use the device.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::gpu_launch::{self, SymbolBuffer, BLOCK_THREADS, SYMBOL_SLOTS};
use super::{CodeModule, Device, DeviceError, DevicePtr, KernelHandle};

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;
type CuModule = *mut c_void;
type CuFunction = *mut c_void;

const CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: c_int = 5;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;
const CU_JIT_ERROR_LOG_BUFFER: c_int = 5;
const CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES: c_int = 6;

/// The NVIDIA targets kiln compiles for: (name, compute capability).
pub const NVIDIA_TARGETS: &[(&str, (i32, i32))] = &[("sm_90", (9, 0)), ("sm_80", (8, 0))];

/// The driver API entry points kiln uses, resolved from `libcuda.so.1`.
struct Driver {
    _lib: libloading::Library,
    get_error_string: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    device_get_count: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    device_get_attribute: unsafe extern "C" fn(*mut c_int, c_int, CuDevice) -> CuResult,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult,
    primary_ctx_retain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    primary_ctx_release: unsafe extern "C" fn(CuDevice) -> CuResult,
    ctx_set_current: unsafe extern "C" fn(CuContext) -> CuResult,
    ctx_synchronize: unsafe extern "C" fn() -> CuResult,
    mem_alloc: unsafe extern "C" fn(*mut u64, usize) -> CuResult,
    mem_free: unsafe extern "C" fn(u64) -> CuResult,
    memset_d8: unsafe extern "C" fn(u64, u8, usize) -> CuResult,
    memcpy_htod: unsafe extern "C" fn(u64, *const c_void, usize) -> CuResult,
    memcpy_dtoh: unsafe extern "C" fn(*mut c_void, u64, usize) -> CuResult,
    memcpy_dtod: unsafe extern "C" fn(u64, u64, usize) -> CuResult,
    module_load_data_ex:
        unsafe extern "C" fn(*mut CuModule, *const c_void, c_uint, *mut c_int, *mut *mut c_void) -> CuResult,
    module_get_function: unsafe extern "C" fn(*mut CuFunction, CuModule, *const c_char) -> CuResult,
    module_unload: unsafe extern "C" fn(CuModule) -> CuResult,
    #[allow(clippy::type_complexity)]
    launch_kernel: unsafe extern "C" fn(
        CuFunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        *mut c_void,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
}

impl Driver {
    /// Loads the driver library and resolves every entry point.
    fn load() -> Result<Driver, String> {
        // SAFETY: loading the NVIDIA driver library runs its initializers, which are sound to
        // run in any process.
        let lib = match unsafe { libloading::Library::new("libcuda.so.1") } {
            Ok(lib) => lib,
            Err(first) => unsafe { libloading::Library::new("libcuda.so") }
                .map_err(|_| format!("the NVIDIA driver (libcuda.so.1) cannot be loaded: {first}"))?,
        };
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the symbol is the driver API function of this name, whose C signature
                // is the field's type (CUDA driver API, `cuda.h`).
                *unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| format!("the NVIDIA driver has no `{}`: {e}", $name))?
            };
        }
        let init: unsafe extern "C" fn(c_uint) -> CuResult = sym!("cuInit");
        let driver = Driver {
            get_error_string: sym!("cuGetErrorString"),
            device_get_count: sym!("cuDeviceGetCount"),
            device_get: sym!("cuDeviceGet"),
            device_get_attribute: sym!("cuDeviceGetAttribute"),
            device_get_name: sym!("cuDeviceGetName"),
            primary_ctx_retain: sym!("cuDevicePrimaryCtxRetain"),
            primary_ctx_release: sym!("cuDevicePrimaryCtxRelease_v2"),
            ctx_set_current: sym!("cuCtxSetCurrent"),
            ctx_synchronize: sym!("cuCtxSynchronize"),
            mem_alloc: sym!("cuMemAlloc_v2"),
            mem_free: sym!("cuMemFree_v2"),
            memset_d8: sym!("cuMemsetD8_v2"),
            memcpy_htod: sym!("cuMemcpyHtoD_v2"),
            memcpy_dtoh: sym!("cuMemcpyDtoH_v2"),
            memcpy_dtod: sym!("cuMemcpyDtoD_v2"),
            module_load_data_ex: sym!("cuModuleLoadDataEx"),
            module_get_function: sym!("cuModuleGetFunction"),
            module_unload: sym!("cuModuleUnload"),
            launch_kernel: sym!("cuLaunchKernel"),
            _lib: lib,
        };
        // SAFETY: `cuInit(0)` may be called any number of times.
        let status = unsafe { init(0) };
        driver.check(status, "cuInit")?;
        Ok(driver)
    }

    /// `Ok` for `CUDA_SUCCESS`, else the driver's description of `status`.
    fn check(&self, status: CuResult, call: &str) -> Result<(), String> {
        if status == 0 {
            return Ok(());
        }
        let mut text: *const c_char = std::ptr::null();
        // SAFETY: `cuGetErrorString` writes a pointer to a static string (or leaves null).
        let described = unsafe { (self.get_error_string)(status, &mut text) } == 0 && !text.is_null();
        let what = if described {
            // SAFETY: a NUL-terminated static string from the driver.
            unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
        } else {
            "unknown error".into()
        };
        Err(format!("{call} failed: {what} (CUresult {status})"))
    }
}

/// An NVIDIA GPU, driven through the CUDA driver API.
pub struct CudaDevice {
    driver: Arc<Driver>,
    device: CuDevice,
    context: CuContext,
    name: String,
    gpu: String,
    target: String,
    capability: (i32, i32),
    max_grid: u64,
    /// The device buffer of symbol values.
    symbols: Mutex<SymbolBuffer>,
}

// SAFETY: the context handle is only used after making it current on the calling thread, and
// the driver API is thread-safe.
unsafe impl Send for CudaDevice {}
// SAFETY: as above; the mutable symbol buffer is behind a mutex.
unsafe impl Sync for CudaDevice {}

impl CudaDevice {
    /// Opens CUDA device `ordinal`. Errors (never panics) when the driver is missing, no such
    /// device exists, or the driver refuses.
    pub fn open(ordinal: usize) -> Result<CudaDevice, DeviceError> {
        let name = format!("cuda:{ordinal}");
        let err = |detail: String| DeviceError::Driver { device: name.clone(), detail };
        let driver = Arc::new(Driver::load().map_err(err)?);
        let mut count = 0;
        // SAFETY: writes one int.
        driver.check(unsafe { (driver.device_get_count)(&mut count) }, "cuDeviceGetCount").map_err(err)?;
        if ordinal >= count.max(0) as usize {
            return Err(err(format!("no CUDA device {ordinal}: the driver reports {count}")));
        }
        let mut device = 0;
        // SAFETY: `ordinal` is below the device count.
        driver.check(unsafe { (driver.device_get)(&mut device, ordinal as c_int) }, "cuDeviceGet").map_err(err)?;
        let attribute = |a: c_int| -> Result<i32, DeviceError> {
            let mut v = 0;
            // SAFETY: writes one int for a valid device.
            driver
                .check(unsafe { (driver.device_get_attribute)(&mut v, a, device) }, "cuDeviceGetAttribute")
                .map_err(err)?;
            Ok(v)
        };
        let capability = (
            attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        );
        let max_grid = attribute(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?.max(1) as u64;
        let mut raw_name = [0 as c_char; 256];
        // SAFETY: the buffer holds 256 bytes.
        driver
            .check(unsafe { (driver.device_get_name)(raw_name.as_mut_ptr(), 256, device) }, "cuDeviceGetName")
            .map_err(err)?;
        // SAFETY: the driver NUL-terminates the name within the buffer.
        let gpu = unsafe { CStr::from_ptr(raw_name.as_ptr()) }.to_string_lossy().into_owned();
        let mut context = std::ptr::null_mut();
        // SAFETY: retains the device's primary context (released on drop).
        driver
            .check(unsafe { (driver.primary_ctx_retain)(&mut context, device) }, "cuDevicePrimaryCtxRetain")
            .map_err(err)?;
        let mut d = CudaDevice {
            driver,
            device,
            context,
            target: format!("sm_{}{}", capability.0, capability.1),
            name,
            gpu,
            capability,
            max_grid,
            symbols: Mutex::new(SymbolBuffer::new(DevicePtr(0))),
        };
        let buffer = d.alloc(8 * SYMBOL_SLOTS)?;
        d.symbols = Mutex::new(SymbolBuffer::new(buffer));
        Ok(d)
    }

    /// The GPU's name as the driver reports it (`NVIDIA H200`).
    pub fn gpu_name(&self) -> &str {
        &self.gpu
    }

    /// The compute capability (9.0 for Hopper).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.capability
    }

    fn err(&self, detail: String) -> DeviceError {
        DeviceError::Driver { device: self.name.clone(), detail }
    }

    /// Makes the device's context current on this thread.
    fn enter(&self) -> Result<(), DeviceError> {
        // SAFETY: the context is retained for the device's lifetime.
        let status = unsafe { (self.driver.ctx_set_current)(self.context) };
        self.driver.check(status, "cuCtxSetCurrent").map_err(|e| self.err(e))
    }

    fn call(&self, status: CuResult, call: &str) -> Result<(), DeviceError> {
        self.driver.check(status, call).map_err(|e| self.err(e))
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        let buffer = self.symbols.get_mut().map(|b| b.ptr).unwrap_or(DevicePtr(0));
        if buffer.0 != 0 {
            // SAFETY: allocated in `open` with this size; no launch is pending after drop.
            unsafe { self.free(buffer, 8 * SYMBOL_SLOTS) };
        }
        // SAFETY: releases the primary context retained in `open`.
        unsafe { (self.driver.primary_ctx_release)(self.device) };
    }
}

/// A loaded PTX module.
struct CudaModule {
    driver: Arc<Driver>,
    context: CuContext,
    module: CuModule,
}

// SAFETY: module handles may be used from any thread with their context current.
unsafe impl Send for CudaModule {}
// SAFETY: lookups only read the module.
unsafe impl Sync for CudaModule {}

impl CodeModule for CudaModule {
    fn kernel(&self, symbol: &str) -> Option<KernelHandle> {
        let name = CString::new(symbol).ok()?;
        let mut f = std::ptr::null_mut();
        // SAFETY: the context is current for the lookup; `name` is NUL-terminated.
        let status = unsafe {
            (self.driver.ctx_set_current)(self.context);
            (self.driver.module_get_function)(&mut f, self.module, name.as_ptr())
        };
        (status == 0 && !f.is_null()).then(|| KernelHandle(f as u64))
    }
}

impl Drop for CudaModule {
    fn drop(&mut self) {
        // SAFETY: the module was loaded in this context and is unloaded once.
        unsafe {
            (self.driver.ctx_set_current)(self.context);
            (self.driver.module_unload)(self.module);
        }
    }
}

impl Device for CudaDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn target(&self) -> &str {
        &self.target
    }

    /// PTX for an older architecture runs on a newer GPU (the driver compiles it): every kiln
    /// NVIDIA target up to this GPU's compute capability, newest first.
    fn code_targets(&self) -> Vec<String> {
        NVIDIA_TARGETS.iter().filter(|(_, cc)| *cc <= self.capability).map(|(t, _)| t.to_string()).collect()
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr, DeviceError> {
        if bytes == 0 {
            return Ok(DevicePtr(0));
        }
        self.enter()?;
        let mut p = 0u64;
        // SAFETY: writes one device pointer.
        let status = unsafe { (self.driver.mem_alloc)(&mut p, bytes) };
        if status != 0 {
            return Err(DeviceError::OutOfMemory { device: self.name.clone(), bytes });
        }
        // SAFETY: zeroes the allocation just made.
        self.call(unsafe { (self.driver.memset_d8)(p, 0, bytes) }, "cuMemsetD8")?;
        Ok(DevicePtr(p))
    }

    unsafe fn free(&self, ptr: DevicePtr, bytes: usize) {
        if bytes == 0 || ptr.0 == 0 || self.enter().is_err() {
            return;
        }
        // SAFETY: the caller passes an allocation of this device, freed once.
        unsafe { (self.driver.mem_free)(ptr.0) };
    }

    fn map_host(&self, _host: *const u8, _bytes: usize) -> Option<DevicePtr> {
        None
    }

    unsafe fn copy_to_device(&self, dst: DevicePtr, src: &[u8]) -> Result<(), DeviceError> {
        if src.is_empty() {
            return Ok(());
        }
        self.enter()?;
        // SAFETY: the caller guarantees `dst` holds `src.len()` bytes.
        self.call(unsafe { (self.driver.memcpy_htod)(dst.0, src.as_ptr().cast(), src.len()) }, "cuMemcpyHtoD")
    }

    unsafe fn copy_to_host(&self, dst: &mut [u8], src: DevicePtr) -> Result<(), DeviceError> {
        if dst.is_empty() {
            return Ok(());
        }
        self.enter()?;
        // SAFETY: the caller guarantees `src` holds `dst.len()` bytes.
        self.call(unsafe { (self.driver.memcpy_dtoh)(dst.as_mut_ptr().cast(), src.0, dst.len()) }, "cuMemcpyDtoH")
    }

    unsafe fn copy_on_device(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<(), DeviceError> {
        if bytes == 0 {
            return Ok(());
        }
        self.enter()?;
        // SAFETY: the caller guarantees both ranges are live and disjoint.
        self.call(unsafe { (self.driver.memcpy_dtod)(dst.0, src.0, bytes) }, "cuMemcpyDtoD")
    }

    fn load_code(&self, code: &[u8]) -> Result<Box<dyn CodeModule>, DeviceError> {
        self.enter()?;
        let mut ptx = code.to_vec();
        ptx.push(0);
        let mut log = vec![0u8; 16 * 1024];
        let mut options = [CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES];
        let mut values = [log.as_mut_ptr().cast::<c_void>(), log.len() as *mut c_void];
        let mut module = std::ptr::null_mut();
        // SAFETY: `ptx` is NUL-terminated PTX text; the options point at a live log buffer of
        // the size given.
        let status = unsafe {
            (self.driver.module_load_data_ex)(
                &mut module,
                ptx.as_ptr().cast(),
                options.len() as c_uint,
                options.as_mut_ptr(),
                values.as_mut_ptr(),
            )
        };
        if let Err(e) = self.driver.check(status, "cuModuleLoadDataEx") {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]);
            return Err(self.err(format!(
                "loading the PTX: {e}{}",
                if log.is_empty() { String::new() } else { format!(": {log}") }
            )));
        }
        Ok(Box::new(CudaModule { driver: self.driver.clone(), context: self.context, module }))
    }

    unsafe fn launch(
        &self,
        kernel: KernelHandle,
        buffers: &[DevicePtr],
        symbols: &[i64],
        range: Range<i64>,
        _work: u64,
    ) -> Result<(), DeviceError> {
        let blocks = gpu_launch::grid_blocks(&range, self.max_grid).ok_or_else(|| DeviceError::Launch {
            device: self.name.clone(),
            detail: format!("a range of {} iterations needs more blocks than the grid allows", range.end - range.start),
        })?;
        if blocks == 0 {
            return Ok(());
        }
        self.enter()?;
        let mut held = self.symbols.lock().map_err(|_| self.err("the symbol buffer's lock is poisoned".into()))?;
        let at = held.ptr;
        let syms_ptr = held.hold(
            symbols,
            // SAFETY: the buffer holds SYMBOL_SLOTS values; the copy is ordered after the
            // launches already issued (one stream).
            |bytes| unsafe { self.copy_to_device(at, bytes) },
            || DeviceError::Launch {
                device: self.name.clone(),
                detail: format!("{} symbols; this device passes at most {SYMBOL_SLOTS}", symbols.len()),
            },
        )?;
        drop(held);
        let args = gpu_launch::kernel_args(buffers, syms_ptr, &range);
        let mut words: Vec<u64> = args.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        let mut params: Vec<*mut c_void> = words.iter_mut().map(|w| (w as *mut u64).cast()).collect();
        // SAFETY: `kernel` is a function of a live module of this context taking `params.len()`
        // 8-byte arguments (the caller's contract); the argument values outlive the call.
        let status = unsafe {
            (self.driver.launch_kernel)(
                kernel.0 as CuFunction,
                blocks as c_uint,
                1,
                1,
                BLOCK_THREADS,
                1,
                1,
                0,
                std::ptr::null_mut(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.call(status, "cuLaunchKernel")
    }

    fn synchronize(&self) -> Result<(), DeviceError> {
        self.enter()?;
        // SAFETY: waits for the current context.
        self.call(unsafe { (self.driver.ctx_synchronize)() }, "cuCtxSynchronize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a driver (CI, this development machine) opening fails with a message, never a
    /// crash; with one, the device reports a target kiln can pick code for.
    #[test]
    fn opening_reports_a_missing_driver_or_describes_the_gpu() {
        match CudaDevice::open(0) {
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with("cuda:0: "), "{text}");
                eprintln!("no CUDA device here: {text}");
            }
            Ok(d) => {
                assert!(d.target().starts_with("sm_"), "{}", d.target());
                eprintln!("CUDA device: {} ({}), code targets {:?}", d.gpu_name(), d.target(), d.code_targets());
            }
        }
        let e = CudaDevice::open(1 << 20).err().expect("no machine has that many GPUs");
        assert!(e.to_string().starts_with("cuda:1048576: "), "{e}");
    }
}
