//! # AMD GPUs as a [`Device`], through HIP
//!
//! [`HipDevice`] is a [`GpuDevice`] over [`Hip`]: the HIP runtime (`libamdhip64.so`) loaded
//! when a device is opened, never linked, so kiln builds and runs without ROCm; a missing
//! runtime or device is an error ([`HipDevice::open`]). Code objects are HSA code objects
//! (`ld.lld`-linked, see `kiln_codegen::llvm::gpu`), loaded with `hipModuleLoadData`. The
//! device does not ask which ISA the GPU has (that needs `hipDeviceProp_t`, whose layout
//! changes between ROCm releases): its code targets are every AMD target kiln compiles for,
//! and the executor loads the first whose code object HIP accepts (HIP refuses a code object
//! for another ISA). Launches pass the packed argument block through
//! `hipModuleLaunchKernel`'s `extra` parameter — the layout `tests/gpu.rs` checks against
//! every compiled code object's metadata — on one stream, which HIP graphs record and replay.
//!
//! **Never run**: no AMD GPU has been available to kiln's developers. It is built and its
//! no-runtime path is tested; everything up to the launch is checked without a GPU.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

use super::gpu::{extra_params, GpuApi, GpuDevice, BLOCK};
use super::DeviceError;

type HipError = c_int;
type HipModule = *mut c_void;
type HipFunction = *mut c_void;
type HipStream = *mut c_void;
type HipGraph = *mut c_void;
type HipGraphExec = *mut c_void;

/// `hipStreamCaptureModeThreadLocal`.
const HIP_STREAM_CAPTURE_MODE_THREAD_LOCAL: c_int = 1;

/// The AMD targets kiln compiles for, in the order the executor tries them.
pub const AMD_TARGETS: &[&str] = &["gfx942", "gfx90a", "gfx1100"];

/// `HIP_LAUNCH_PARAM_BUFFER_POINTER`, `HIP_LAUNCH_PARAM_BUFFER_SIZE`, `HIP_LAUNCH_PARAM_END`.
const HIP_LAUNCH_PARAMS: (usize, usize, usize) = (0x01, 0x02, 0x03);

/// The HIP entry points kiln uses, resolved from `libamdhip64.so`.
struct Runtime {
    _lib: libloading::Library,
    get_error_string: unsafe extern "C" fn(HipError) -> *const c_char,
    get_device_count: unsafe extern "C" fn(*mut c_int) -> HipError,
    set_device: unsafe extern "C" fn(c_int) -> HipError,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> HipError,
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> HipError,
    free: unsafe extern "C" fn(*mut c_void) -> HipError,
    memset: unsafe extern "C" fn(*mut c_void, c_int, usize) -> HipError,
    memcpy_htod: unsafe extern "C" fn(*mut c_void, *const c_void, usize) -> HipError,
    memcpy_dtoh: unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> HipError,
    memcpy_dtod_async: unsafe extern "C" fn(*mut c_void, *mut c_void, usize, HipStream) -> HipError,
    stream_create: unsafe extern "C" fn(*mut HipStream) -> HipError,
    stream_destroy: unsafe extern "C" fn(HipStream) -> HipError,
    stream_begin_capture: unsafe extern "C" fn(HipStream, c_int) -> HipError,
    stream_end_capture: unsafe extern "C" fn(HipStream, *mut HipGraph) -> HipError,
    graph_instantiate:
        unsafe extern "C" fn(*mut HipGraphExec, HipGraph, *mut *mut c_void, *mut c_char, usize) -> HipError,
    graph_launch: unsafe extern "C" fn(HipGraphExec, HipStream) -> HipError,
    graph_exec_destroy: unsafe extern "C" fn(HipGraphExec) -> HipError,
    graph_destroy: unsafe extern "C" fn(HipGraph) -> HipError,
    module_load_data: unsafe extern "C" fn(*mut HipModule, *const c_void) -> HipError,
    module_get_function: unsafe extern "C" fn(*mut HipFunction, HipModule, *const c_char) -> HipError,
    module_unload: unsafe extern "C" fn(HipModule) -> HipError,
    #[allow(clippy::type_complexity)]
    module_launch_kernel: unsafe extern "C" fn(
        HipFunction,
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
    ) -> HipError,
    device_synchronize: unsafe extern "C" fn() -> HipError,
}

impl Runtime {
    fn load() -> Result<Runtime, String> {
        // SAFETY: loading the HIP runtime runs its initializers, sound in any process.
        let lib = unsafe { libloading::Library::new("libamdhip64.so") }
            .map_err(|e| format!("the HIP runtime (libamdhip64.so, from ROCm) cannot be loaded: {e}"))?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the symbol is the HIP function of this name, whose C signature is the
                // field's type (`hip_runtime_api.h`).
                *unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| format!("the HIP runtime has no `{}`: {e}", $name))?
            };
        }
        let init: unsafe extern "C" fn(c_uint) -> HipError = sym!("hipInit");
        let runtime = Runtime {
            get_error_string: sym!("hipGetErrorString"),
            get_device_count: sym!("hipGetDeviceCount"),
            set_device: sym!("hipSetDevice"),
            device_get_name: sym!("hipDeviceGetName"),
            malloc: sym!("hipMalloc"),
            free: sym!("hipFree"),
            memset: sym!("hipMemset"),
            memcpy_htod: sym!("hipMemcpyHtoD"),
            memcpy_dtoh: sym!("hipMemcpyDtoH"),
            memcpy_dtod_async: sym!("hipMemcpyDtoDAsync"),
            stream_create: sym!("hipStreamCreate"),
            stream_destroy: sym!("hipStreamDestroy"),
            stream_begin_capture: sym!("hipStreamBeginCapture"),
            stream_end_capture: sym!("hipStreamEndCapture"),
            graph_instantiate: sym!("hipGraphInstantiate"),
            graph_launch: sym!("hipGraphLaunch"),
            graph_exec_destroy: sym!("hipGraphExecDestroy"),
            graph_destroy: sym!("hipGraphDestroy"),
            module_load_data: sym!("hipModuleLoadData"),
            module_get_function: sym!("hipModuleGetFunction"),
            module_unload: sym!("hipModuleUnload"),
            module_launch_kernel: sym!("hipModuleLaunchKernel"),
            device_synchronize: sym!("hipDeviceSynchronize"),
            _lib: lib,
        };
        // SAFETY: `hipInit(0)` may be called any number of times.
        runtime.check(unsafe { init(0) }, "hipInit")?;
        Ok(runtime)
    }

    fn check(&self, status: HipError, call: &str) -> Result<(), String> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: returns a static NUL-terminated string (or null).
        let text = unsafe { (self.get_error_string)(status) };
        let what = if text.is_null() {
            "unknown error".into()
        } else {
            // SAFETY: a static NUL-terminated string from the runtime.
            unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
        };
        Err(format!("{call} failed: {what} (hipError_t {status})"))
    }
}

/// The HIP runtime on one device, with the stream kiln's launches go on (blocking: ordered
/// with the synchronous host copies).
pub struct Hip {
    runtime: Runtime,
    ordinal: c_int,
    stream: HipStream,
    gpu: String,
}

// SAFETY: every call selects the device on the calling thread first; HIP is thread-safe.
unsafe impl Send for Hip {}
// SAFETY: as above.
unsafe impl Sync for Hip {}

/// An AMD GPU.
pub type HipDevice = GpuDevice<Hip>;

impl GpuDevice<Hip> {
    /// Opens HIP device `ordinal`. Errors (never panics) when the runtime is missing, no such
    /// device exists, or HIP refuses.
    pub fn open(ordinal: usize) -> Result<HipDevice, DeviceError> {
        let name = format!("hip:{ordinal}");
        let err = |detail: String| DeviceError::Driver { device: name.clone(), detail };
        let runtime = Runtime::load().map_err(err)?;
        let mut count = 0;
        // SAFETY: writes one int.
        runtime.check(unsafe { (runtime.get_device_count)(&mut count) }, "hipGetDeviceCount").map_err(err)?;
        if ordinal >= count.max(0) as usize {
            return Err(err(format!("no HIP device {ordinal}: the runtime reports {count}")));
        }
        let mut raw_name = [0 as c_char; 256];
        // SAFETY: the buffer holds 256 bytes; `ordinal` is below the device count.
        let status = unsafe { (runtime.device_get_name)(raw_name.as_mut_ptr(), 256, ordinal as c_int) };
        runtime.check(status, "hipDeviceGetName").map_err(err)?;
        // SAFETY: NUL-terminated within the buffer.
        let gpu = unsafe { CStr::from_ptr(raw_name.as_ptr()) }.to_string_lossy().into_owned();
        let mut stream = std::ptr::null_mut();
        // SAFETY: selects the checked device, then makes a stream on it (destroyed on drop).
        let status = unsafe {
            match (runtime.set_device)(ordinal as c_int) {
                0 => (runtime.stream_create)(&mut stream),
                failed => failed,
            }
        };
        runtime.check(status, "hipStreamCreate").map_err(err)?;
        let api = Hip { runtime, ordinal: ordinal as c_int, stream, gpu };
        let code_targets = AMD_TARGETS.iter().map(|t| t.to_string()).collect();
        // Grids of up to 2^32 - 1 threads.
        GpuDevice::new(api, name, "amdgpu".into(), code_targets, u32::MAX as u64 / BLOCK as u64)
    }

    /// The GPU's name as HIP reports it.
    pub fn gpu_name(&self) -> &str {
        &self.api().gpu
    }
}

impl Drop for Hip {
    fn drop(&mut self) {
        // SAFETY: destroys the stream made in `open`, after every launch on it (the device
        // synchronizes before its memory and graphs go).
        unsafe {
            (self.runtime.set_device)(self.ordinal);
            (self.runtime.stream_destroy)(self.stream);
        }
    }
}

impl GpuApi for Hip {
    fn enter(&self) -> Result<(), String> {
        // SAFETY: the ordinal was checked in `open`.
        self.runtime.check(unsafe { (self.runtime.set_device)(self.ordinal) }, "hipSetDevice")
    }

    fn malloc(&self, bytes: usize) -> Result<u64, String> {
        let mut p = std::ptr::null_mut();
        // SAFETY: writes one device pointer.
        self.runtime.check(unsafe { (self.runtime.malloc)(&mut p, bytes) }, "hipMalloc")?;
        Ok(p as u64)
    }

    unsafe fn free(&self, ptr: u64) {
        // SAFETY: the caller's contract.
        unsafe { (self.runtime.free)(ptr as *mut c_void) };
    }

    unsafe fn zero(&self, ptr: u64, bytes: usize) -> Result<(), String> {
        // SAFETY: the caller's contract.
        self.runtime.check(unsafe { (self.runtime.memset)(ptr as *mut c_void, 0, bytes) }, "hipMemset")
    }

    unsafe fn copy_to_device(&self, dst: u64, src: &[u8]) -> Result<(), String> {
        // SAFETY: the caller's contract.
        let status = unsafe { (self.runtime.memcpy_htod)(dst as *mut c_void, src.as_ptr().cast(), src.len()) };
        self.runtime.check(status, "hipMemcpyHtoD")
    }

    unsafe fn copy_to_host(&self, dst: &mut [u8], src: u64) -> Result<(), String> {
        // SAFETY: the caller's contract.
        let status = unsafe { (self.runtime.memcpy_dtoh)(dst.as_mut_ptr().cast(), src as *mut c_void, dst.len()) };
        self.runtime.check(status, "hipMemcpyDtoH")
    }

    unsafe fn copy_on_device(&self, dst: u64, src: u64, bytes: usize) -> Result<(), String> {
        // SAFETY: the caller's contract.
        let status =
            unsafe { (self.runtime.memcpy_dtod_async)(dst as *mut c_void, src as *mut c_void, bytes, self.stream) };
        self.runtime.check(status, "hipMemcpyDtoDAsync")
    }

    fn load_module(&self, code: &[u8]) -> Result<usize, String> {
        let mut module = std::ptr::null_mut();
        // SAFETY: `code` is a complete HSA code object that outlives the call (HIP copies it).
        let status = unsafe { (self.runtime.module_load_data)(&mut module, code.as_ptr().cast()) };
        self.runtime.check(status, "hipModuleLoadData")?;
        Ok(module as usize)
    }

    fn function(&self, module: usize, name: &CString) -> Option<usize> {
        let mut f = std::ptr::null_mut();
        // SAFETY: a live module; `name` is NUL-terminated.
        let status = unsafe { (self.runtime.module_get_function)(&mut f, module as HipModule, name.as_ptr()) };
        (status == 0 && !f.is_null()).then_some(f as usize)
    }

    unsafe fn unload(&self, module: usize) {
        // SAFETY: the caller's contract.
        unsafe { (self.runtime.module_unload)(module as HipModule) };
    }

    unsafe fn launch(&self, function: usize, blocks: u32, args: &mut [u64]) -> Result<(), String> {
        let mut size = 8 * args.len();
        let mut extra = extra_params(args, &mut size, HIP_LAUNCH_PARAMS);
        // SAFETY: the caller's contract; `args` and `size` outlive the call.
        let status = unsafe {
            (self.runtime.module_launch_kernel)(
                function as HipFunction,
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
        self.runtime.check(status, "hipModuleLaunchKernel")
    }

    fn synchronize(&self) -> Result<(), String> {
        // SAFETY: waits for the selected device.
        self.runtime.check(unsafe { (self.runtime.device_synchronize)() }, "hipDeviceSynchronize")
    }

    fn has_graphs(&self) -> bool {
        true
    }

    fn begin_capture(&self) -> Result<(), String> {
        // SAFETY: the stream is live.
        let status = unsafe { (self.runtime.stream_begin_capture)(self.stream, HIP_STREAM_CAPTURE_MODE_THREAD_LOCAL) };
        self.runtime.check(status, "hipStreamBeginCapture")
    }

    fn end_capture(&self) -> Result<u64, String> {
        let mut graph = std::ptr::null_mut();
        // SAFETY: ends the recording begun on this stream.
        let status = unsafe { (self.runtime.stream_end_capture)(self.stream, &mut graph) };
        self.runtime.check(status, "hipStreamEndCapture")?;
        let mut exec = std::ptr::null_mut();
        // SAFETY: `graph` is the recording just made; no error node or log is asked for.
        let status = unsafe {
            (self.runtime.graph_instantiate)(&mut exec, graph, std::ptr::null_mut(), std::ptr::null_mut(), 0)
        };
        // SAFETY: `graph` is not used after this (the executable graph does not need it).
        unsafe { (self.runtime.graph_destroy)(graph) };
        self.runtime.check(status, "hipGraphInstantiate")?;
        Ok(exec as u64)
    }

    unsafe fn launch_graph(&self, graph: u64) -> Result<(), String> {
        // SAFETY: the caller's contract.
        let status = unsafe { (self.runtime.graph_launch)(graph as HipGraphExec, self.stream) };
        self.runtime.check(status, "hipGraphLaunch")
    }

    unsafe fn destroy_graph(&self, graph: u64) {
        // SAFETY: the caller's contract.
        unsafe { (self.runtime.graph_exec_destroy)(graph as HipGraphExec) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;

    #[test]
    fn opening_reports_a_missing_runtime_or_names_the_gpu() {
        match HipDevice::open(0) {
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with("hip:0: "), "{text}");
                eprintln!("no HIP device here: {text}");
            }
            Ok(d) => eprintln!("HIP device: {} (tries {:?})", d.gpu_name(), d.code_targets()),
        }
    }
}
