//! # NVIDIA GPUs as a [`Device`], through the CUDA driver API
//!
//! [`CudaDevice`] is a [`GpuDevice`] over [`Cuda`], the driver API (`libcuda.so.1`) loaded
//! when a device is opened, never linked: kiln builds, and its tests run, on machines without
//! CUDA, and a missing driver or device is an error ([`CudaDevice::open`]), not a crash.
//! Code objects are PTX, which the driver JIT-compiles for the GPU at load
//! (`cuModuleLoadDataEx`; its error log is part of the error). PTX made for an older
//! architecture runs on newer GPUs, so the device's code targets are every kiln NVIDIA target
//! up to its compute capability, newest first. Every call makes the device's primary context
//! current on the calling thread first, so any thread may use the device. Launches and
//! device copies go on one blocking stream, which CUDA graphs record (stream capture) and
//! replay (`cuGraphLaunch`).
//!
//! **Not yet run on a GPU**: only the no-driver path is tested here.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

use super::gpu::{extra_params, GpuApi, GpuDevice, BLOCK};
use super::DeviceError;

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;
type CuModule = *mut c_void;
type CuFunction = *mut c_void;
type CuStream = *mut c_void;
type CuGraph = *mut c_void;
type CuGraphExec = *mut c_void;

const CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: c_int = 5;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;
const CU_JIT_ERROR_LOG_BUFFER: c_int = 5;
const CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES: c_int = 6;
/// `CU_STREAM_CAPTURE_MODE_THREAD_LOCAL`: only this thread's unsafe calls break a recording.
const CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: c_int = 1;
/// `CU_LAUNCH_PARAM_BUFFER_POINTER`, `CU_LAUNCH_PARAM_BUFFER_SIZE`, `CU_LAUNCH_PARAM_END`.
const CU_LAUNCH_PARAMS: (usize, usize, usize) = (0x01, 0x02, 0x00);

/// The NVIDIA targets kiln compiles for, best first: (name, the compute capability its code
/// needs, whether it runs on that capability only). sm_90a's PTX uses Hopper's own
/// instructions (`wgmma`), which later GPUs do not have; the driver compiles sm_90 and sm_80
/// PTX for every GPU of at least their capability.
pub const NVIDIA_TARGETS: &[(&str, (i32, i32), bool)] =
    &[("sm_90a", (9, 0), true), ("sm_90", (9, 0), false), ("sm_80", (8, 0), false)];

/// The targets whose code runs on a GPU of compute capability `capability`, best first.
pub fn code_targets_for(capability: (i32, i32)) -> Vec<String> {
    NVIDIA_TARGETS
        .iter()
        .filter(|(_, cc, only)| if *only { *cc == capability } else { *cc <= capability })
        .map(|(t, ..)| t.to_string())
        .collect()
}

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
    memcpy_dtod_async: unsafe extern "C" fn(u64, u64, usize, CuStream) -> CuResult,
    stream_create: unsafe extern "C" fn(*mut CuStream, c_uint) -> CuResult,
    stream_destroy: unsafe extern "C" fn(CuStream) -> CuResult,
    stream_begin_capture: unsafe extern "C" fn(CuStream, c_int) -> CuResult,
    stream_end_capture: unsafe extern "C" fn(CuStream, *mut CuGraph) -> CuResult,
    graph_instantiate: unsafe extern "C" fn(*mut CuGraphExec, CuGraph, u64) -> CuResult,
    graph_launch: unsafe extern "C" fn(CuGraphExec, CuStream) -> CuResult,
    graph_exec_destroy: unsafe extern "C" fn(CuGraphExec) -> CuResult,
    graph_destroy: unsafe extern "C" fn(CuGraph) -> CuResult,
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
            memcpy_dtod_async: sym!("cuMemcpyDtoDAsync_v2"),
            stream_create: sym!("cuStreamCreate"),
            stream_destroy: sym!("cuStreamDestroy_v2"),
            stream_begin_capture: sym!("cuStreamBeginCapture_v2"),
            stream_end_capture: sym!("cuStreamEndCapture"),
            graph_instantiate: sym!("cuGraphInstantiateWithFlags"),
            graph_launch: sym!("cuGraphLaunch"),
            graph_exec_destroy: sym!("cuGraphExecDestroy"),
            graph_destroy: sym!("cuGraphDestroy"),
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

/// The CUDA driver API on one device, with its retained primary context and the stream
/// kiln's launches go on (a blocking stream: ordered with the synchronous host copies).
pub struct Cuda {
    driver: Driver,
    device: CuDevice,
    context: CuContext,
    stream: CuStream,
    gpu: String,
    capability: (i32, i32),
}

// SAFETY: the context handle is only used after making it current on the calling thread, and
// the driver API is thread-safe.
unsafe impl Send for Cuda {}
// SAFETY: as above.
unsafe impl Sync for Cuda {}

/// An NVIDIA GPU.
pub type CudaDevice = GpuDevice<Cuda>;

impl GpuDevice<Cuda> {
    /// Opens CUDA device `ordinal`. Errors (never panics) when the driver is missing, no such
    /// device exists, or the driver refuses.
    pub fn open(ordinal: usize) -> Result<CudaDevice, DeviceError> {
        let name = format!("cuda:{ordinal}");
        let err = |detail: String| DeviceError::Driver { device: name.clone(), detail };
        let driver = Driver::load().map_err(err)?;
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
            let status = unsafe { (driver.device_get_attribute)(&mut v, a, device) };
            driver.check(status, "cuDeviceGetAttribute").map_err(err)?;
            Ok(v)
        };
        let capability = (
            attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        );
        let max_blocks = attribute(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?.max(1) as u64;
        let mut raw_name = [0 as c_char; 256];
        // SAFETY: the buffer holds 256 bytes.
        let status = unsafe { (driver.device_get_name)(raw_name.as_mut_ptr(), 256, device) };
        driver.check(status, "cuDeviceGetName").map_err(err)?;
        // SAFETY: the driver NUL-terminates the name within the buffer.
        let gpu = unsafe { CStr::from_ptr(raw_name.as_ptr()) }.to_string_lossy().into_owned();
        let mut context = std::ptr::null_mut();
        // SAFETY: retains the device's primary context (released when `Cuda` drops).
        let status = unsafe { (driver.primary_ctx_retain)(&mut context, device) };
        driver.check(status, "cuDevicePrimaryCtxRetain").map_err(err)?;
        let mut stream = std::ptr::null_mut();
        // SAFETY: the context was just retained; the stream is made in it and destroyed when
        // `Cuda` drops.
        let status = unsafe {
            match (driver.ctx_set_current)(context) {
                0 => (driver.stream_create)(&mut stream, 0),
                failed => failed,
            }
        };
        if let Err(e) = driver.check(status, "cuStreamCreate") {
            // SAFETY: releases the context retained above.
            unsafe { (driver.primary_ctx_release)(device) };
            return Err(err(e));
        }
        let target = format!("sm_{}{}", capability.0, capability.1);
        let code_targets = code_targets_for(capability);
        let api = Cuda { driver, device, context, stream, gpu, capability };
        GpuDevice::new(api, name, target, code_targets, max_blocks)
    }

    /// The GPU's name as the driver reports it (`NVIDIA H200`).
    pub fn gpu_name(&self) -> &str {
        &self.api().gpu
    }

    /// The compute capability (9.0 for Hopper).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.api().capability
    }
}

impl Drop for Cuda {
    fn drop(&mut self) {
        // SAFETY: destroys the stream made in `open` and releases the primary context retained
        // there, after every module, graph and allocation (they hold this value).
        unsafe {
            (self.driver.ctx_set_current)(self.context);
            (self.driver.stream_destroy)(self.stream);
            (self.driver.primary_ctx_release)(self.device);
        }
    }
}

impl GpuApi for Cuda {
    fn enter(&self) -> Result<(), String> {
        // SAFETY: the context is retained for this value's lifetime.
        self.driver.check(unsafe { (self.driver.ctx_set_current)(self.context) }, "cuCtxSetCurrent")
    }

    fn malloc(&self, bytes: usize) -> Result<u64, String> {
        let mut p = 0u64;
        // SAFETY: writes one device pointer.
        self.driver.check(unsafe { (self.driver.mem_alloc)(&mut p, bytes) }, "cuMemAlloc")?;
        Ok(p)
    }

    unsafe fn free(&self, ptr: u64) {
        // SAFETY: the caller's contract.
        unsafe { (self.driver.mem_free)(ptr) };
    }

    unsafe fn zero(&self, ptr: u64, bytes: usize) -> Result<(), String> {
        // SAFETY: the caller's contract.
        self.driver.check(unsafe { (self.driver.memset_d8)(ptr, 0, bytes) }, "cuMemsetD8")
    }

    unsafe fn copy_to_device(&self, dst: u64, src: &[u8]) -> Result<(), String> {
        // SAFETY: the caller's contract.
        let status = unsafe { (self.driver.memcpy_htod)(dst, src.as_ptr().cast(), src.len()) };
        self.driver.check(status, "cuMemcpyHtoD")
    }

    unsafe fn copy_to_host(&self, dst: &mut [u8], src: u64) -> Result<(), String> {
        // SAFETY: the caller's contract.
        let status = unsafe { (self.driver.memcpy_dtoh)(dst.as_mut_ptr().cast(), src, dst.len()) };
        self.driver.check(status, "cuMemcpyDtoH")
    }

    unsafe fn copy_on_device(&self, dst: u64, src: u64, bytes: usize) -> Result<(), String> {
        // SAFETY: the caller's contract.
        let status = unsafe { (self.driver.memcpy_dtod_async)(dst, src, bytes, self.stream) };
        self.driver.check(status, "cuMemcpyDtoDAsync")
    }

    fn load_module(&self, code: &[u8]) -> Result<usize, String> {
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
        self.driver.check(status, "cuModuleLoadDataEx").map_err(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]);
            if log.is_empty() {
                format!("loading the PTX: {e}")
            } else {
                format!("loading the PTX: {e}: {log}")
            }
        })?;
        Ok(module as usize)
    }

    fn function(&self, module: usize, name: &CString) -> Option<usize> {
        let mut f = std::ptr::null_mut();
        // SAFETY: a live module; `name` is NUL-terminated.
        let status = unsafe { (self.driver.module_get_function)(&mut f, module as CuModule, name.as_ptr()) };
        (status == 0 && !f.is_null()).then_some(f as usize)
    }

    unsafe fn unload(&self, module: usize) {
        // SAFETY: the caller's contract.
        unsafe { (self.driver.module_unload)(module as CuModule) };
    }

    unsafe fn launch(&self, function: usize, blocks: u32, args: &mut [u64]) -> Result<(), String> {
        let mut size = 8 * args.len();
        let mut extra = extra_params(args, &mut size, CU_LAUNCH_PARAMS);
        // SAFETY: the caller's contract; `args` and `size` outlive the call.
        let status = unsafe {
            (self.driver.launch_kernel)(
                function as CuFunction,
                blocks,
                1,
                1,
                BLOCK,
                1,
                1,
                0,
                self.stream,
                std::ptr::null_mut(),
                extra.as_mut_ptr(),
            )
        };
        self.driver.check(status, "cuLaunchKernel")
    }

    fn synchronize(&self) -> Result<(), String> {
        // SAFETY: waits for the current context.
        self.driver.check(unsafe { (self.driver.ctx_synchronize)() }, "cuCtxSynchronize")
    }

    fn has_graphs(&self) -> bool {
        true
    }

    fn begin_capture(&self) -> Result<(), String> {
        // SAFETY: the stream is live.
        let status = unsafe { (self.driver.stream_begin_capture)(self.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL) };
        self.driver.check(status, "cuStreamBeginCapture")
    }

    fn end_capture(&self) -> Result<u64, String> {
        let mut graph = std::ptr::null_mut();
        // SAFETY: ends the recording begun on this stream; the graph is freed below once
        // instantiated (the executable graph does not need it).
        let status = unsafe { (self.driver.stream_end_capture)(self.stream, &mut graph) };
        self.driver.check(status, "cuStreamEndCapture")?;
        let mut exec = std::ptr::null_mut();
        // SAFETY: `graph` is the recording just made.
        let status = unsafe { (self.driver.graph_instantiate)(&mut exec, graph, 0) };
        // SAFETY: `graph` is not used after this.
        unsafe { (self.driver.graph_destroy)(graph) };
        self.driver.check(status, "cuGraphInstantiateWithFlags")?;
        Ok(exec as u64)
    }

    unsafe fn launch_graph(&self, graph: u64) -> Result<(), String> {
        // SAFETY: the caller's contract.
        let status = unsafe { (self.driver.graph_launch)(graph as CuGraphExec, self.stream) };
        self.driver.check(status, "cuGraphLaunch")
    }

    unsafe fn destroy_graph(&self, graph: u64) {
        // SAFETY: the caller's contract.
        unsafe { (self.driver.graph_exec_destroy)(graph as CuGraphExec) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;

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

    /// Hopper (9.0) prefers its own code (sm_90a, with `wgmma`), then sm_90, then sm_80; a
    /// later GPU never gets sm_90a; an Ada GPU (8.9) gets sm_80; a Turing GPU none.
    #[test]
    fn each_compute_capability_gets_the_code_it_can_run_best_first() {
        assert_eq!(code_targets_for((9, 0)), ["sm_90a", "sm_90", "sm_80"]);
        assert_eq!(code_targets_for((10, 0)), ["sm_90", "sm_80"]);
        assert_eq!(code_targets_for((12, 0)), ["sm_90", "sm_80"]);
        assert_eq!(code_targets_for((8, 9)), ["sm_80"]);
        assert!(code_targets_for((7, 5)).is_empty());
    }
}
