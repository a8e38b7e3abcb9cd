//! # AMD GPUs as a [`Device`], through HIP
//!
//! Owns [`HipDevice`]. The HIP runtime (`libamdhip64.so`) is loaded when a device is opened,
//! never linked, so kiln builds and runs without ROCm; a missing runtime or device is an error
//! ([`HipDevice::open`]). Memory is device memory (`hipMalloc`, zeroed); inputs and outputs are
//! copied and the weights uploaded once per loaded model. Code objects are HSA code objects
//! (`ld.lld`-linked, see `kiln_codegen::llvm::gpu`), loaded with `hipModuleLoadData`. The
//! device does not ask which ISA the GPU has (that needs `hipDeviceProp_t`, whose layout
//! changes between ROCm releases): [`Device::code_targets`] lists every AMD target kiln
//! compiles for, and the executor loads the first whose code object HIP accepts (HIP refuses
//! a code object for another ISA). Launches pass the packed argument block of
//! [`gpu_launch::kernel_args`] through `hipModuleLaunchKernel`'s `extra` parameter — the layout
//! `tests/gpu.rs` checks against every compiled code object's metadata.
//!
//! **Never run**: no AMD GPU has been available to kiln's developers. It is built and its
//! no-runtime path is tested; everything up to the launch is checked without a GPU.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::gpu_launch::{self, SymbolBuffer, BLOCK_THREADS, SYMBOL_SLOTS};
use super::{CodeModule, Device, DeviceError, DevicePtr, KernelHandle};

type HipError = c_int;
type HipModule = *mut c_void;
type HipFunction = *mut c_void;

/// The AMD targets kiln compiles for, in the order the executor tries them.
pub const AMD_TARGETS: &[&str] = &["gfx942", "gfx90a", "gfx1100"];

const HIP_LAUNCH_PARAM_BUFFER_POINTER: usize = 0x01;
const HIP_LAUNCH_PARAM_BUFFER_SIZE: usize = 0x02;
const HIP_LAUNCH_PARAM_END: usize = 0x03;

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
    memcpy_dtod: unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> HipError,
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
            memcpy_dtod: sym!("hipMemcpyDtoD"),
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

/// An AMD GPU, driven through HIP.
pub struct HipDevice {
    runtime: Arc<Runtime>,
    ordinal: c_int,
    name: String,
    gpu: String,
    symbols: Mutex<SymbolBuffer>,
}

// SAFETY: every call selects the device on the calling thread first; HIP is thread-safe.
unsafe impl Send for HipDevice {}
// SAFETY: as above; the symbol buffer is behind a mutex.
unsafe impl Sync for HipDevice {}

impl HipDevice {
    /// Opens HIP device `ordinal`. Errors (never panics) when the runtime is missing, no such
    /// device exists, or HIP refuses.
    pub fn open(ordinal: usize) -> Result<HipDevice, DeviceError> {
        let name = format!("hip:{ordinal}");
        let err = |detail: String| DeviceError::Driver { device: name.clone(), detail };
        let runtime = Arc::new(Runtime::load().map_err(err)?);
        let mut count = 0;
        // SAFETY: writes one int.
        runtime.check(unsafe { (runtime.get_device_count)(&mut count) }, "hipGetDeviceCount").map_err(err)?;
        if ordinal >= count.max(0) as usize {
            return Err(err(format!("no HIP device {ordinal}: the runtime reports {count}")));
        }
        let mut raw_name = [0 as c_char; 256];
        // SAFETY: the buffer holds 256 bytes; `ordinal` is below the device count.
        runtime
            .check(
                unsafe { (runtime.device_get_name)(raw_name.as_mut_ptr(), 256, ordinal as c_int) },
                "hipDeviceGetName",
            )
            .map_err(err)?;
        // SAFETY: NUL-terminated within the buffer.
        let gpu = unsafe { CStr::from_ptr(raw_name.as_ptr()) }.to_string_lossy().into_owned();
        let mut d = HipDevice {
            runtime,
            ordinal: ordinal as c_int,
            name,
            gpu,
            symbols: Mutex::new(SymbolBuffer::new(DevicePtr(0))),
        };
        let buffer = d.alloc(8 * SYMBOL_SLOTS)?;
        d.symbols = Mutex::new(SymbolBuffer::new(buffer));
        Ok(d)
    }

    /// The GPU's name as HIP reports it.
    pub fn gpu_name(&self) -> &str {
        &self.gpu
    }

    fn err(&self, detail: String) -> DeviceError {
        DeviceError::Driver { device: self.name.clone(), detail }
    }

    /// Selects this device on the calling thread.
    fn enter(&self) -> Result<(), DeviceError> {
        // SAFETY: the ordinal was checked in `open`.
        self.call(unsafe { (self.runtime.set_device)(self.ordinal) }, "hipSetDevice")
    }

    fn call(&self, status: HipError, call: &str) -> Result<(), DeviceError> {
        self.runtime.check(status, call).map_err(|e| self.err(e))
    }
}

impl Drop for HipDevice {
    fn drop(&mut self) {
        let buffer = self.symbols.get_mut().map(|b| b.ptr).unwrap_or(DevicePtr(0));
        // SAFETY: allocated in `open` with this size; nothing is pending after drop.
        unsafe { self.free(buffer, 8 * SYMBOL_SLOTS) };
    }
}

struct HipModuleHandle {
    runtime: Arc<Runtime>,
    ordinal: c_int,
    module: HipModule,
}

// SAFETY: module handles may be used from any thread with the device selected.
unsafe impl Send for HipModuleHandle {}
// SAFETY: lookups only read the module.
unsafe impl Sync for HipModuleHandle {}

impl CodeModule for HipModuleHandle {
    fn kernel(&self, symbol: &str) -> Option<KernelHandle> {
        let name = CString::new(symbol).ok()?;
        let mut f = std::ptr::null_mut();
        // SAFETY: the device is selected; `name` is NUL-terminated.
        let status = unsafe {
            (self.runtime.set_device)(self.ordinal);
            (self.runtime.module_get_function)(&mut f, self.module, name.as_ptr())
        };
        (status == 0 && !f.is_null()).then(|| KernelHandle(f as u64))
    }
}

impl Drop for HipModuleHandle {
    fn drop(&mut self) {
        // SAFETY: the module was loaded on this device and is unloaded once.
        unsafe {
            (self.runtime.set_device)(self.ordinal);
            (self.runtime.module_unload)(self.module);
        }
    }
}

impl Device for HipDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn target(&self) -> &str {
        "amdgpu"
    }

    fn code_targets(&self) -> Vec<String> {
        AMD_TARGETS.iter().map(|t| t.to_string()).collect()
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr, DeviceError> {
        if bytes == 0 {
            return Ok(DevicePtr(0));
        }
        self.enter()?;
        let mut p = std::ptr::null_mut();
        // SAFETY: writes one device pointer.
        if unsafe { (self.runtime.malloc)(&mut p, bytes) } != 0 || p.is_null() {
            return Err(DeviceError::OutOfMemory { device: self.name.clone(), bytes });
        }
        // SAFETY: zeroes the allocation just made.
        self.call(unsafe { (self.runtime.memset)(p, 0, bytes) }, "hipMemset")?;
        Ok(DevicePtr(p as u64))
    }

    unsafe fn free(&self, ptr: DevicePtr, bytes: usize) {
        if bytes == 0 || ptr.0 == 0 || self.enter().is_err() {
            return;
        }
        // SAFETY: the caller passes an allocation of this device, freed once.
        unsafe { (self.runtime.free)(ptr.0 as *mut c_void) };
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
        self.call(
            unsafe { (self.runtime.memcpy_htod)(dst.0 as *mut c_void, src.as_ptr().cast(), src.len()) },
            "hipMemcpyHtoD",
        )
    }

    unsafe fn copy_to_host(&self, dst: &mut [u8], src: DevicePtr) -> Result<(), DeviceError> {
        if dst.is_empty() {
            return Ok(());
        }
        self.enter()?;
        // SAFETY: the caller guarantees `src` holds `dst.len()` bytes.
        self.call(
            unsafe { (self.runtime.memcpy_dtoh)(dst.as_mut_ptr().cast(), src.0 as *mut c_void, dst.len()) },
            "hipMemcpyDtoH",
        )
    }

    unsafe fn copy_on_device(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<(), DeviceError> {
        if bytes == 0 {
            return Ok(());
        }
        self.enter()?;
        // SAFETY: the caller guarantees both ranges are live and disjoint.
        self.call(
            unsafe { (self.runtime.memcpy_dtod)(dst.0 as *mut c_void, src.0 as *mut c_void, bytes) },
            "hipMemcpyDtoD",
        )
    }

    fn load_code(&self, code: &[u8]) -> Result<Box<dyn CodeModule>, DeviceError> {
        self.enter()?;
        let mut module = std::ptr::null_mut();
        // SAFETY: `code` is a complete HSA code object that outlives the call (HIP copies it).
        self.call(unsafe { (self.runtime.module_load_data)(&mut module, code.as_ptr().cast()) }, "hipModuleLoadData")?;
        Ok(Box::new(HipModuleHandle { runtime: self.runtime.clone(), ordinal: self.ordinal, module }))
    }

    unsafe fn launch(
        &self,
        kernel: KernelHandle,
        buffers: &[DevicePtr],
        symbols: &[i64],
        range: Range<i64>,
        _work: u64,
    ) -> Result<(), DeviceError> {
        let blocks = gpu_launch::grid_blocks(&range, u32::MAX as u64 / BLOCK_THREADS as u64).ok_or_else(|| {
            DeviceError::Launch {
                device: self.name.clone(),
                detail: format!(
                    "a range of {} iterations needs more blocks than the grid allows",
                    range.end - range.start
                ),
            }
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
            // launches already issued (the null stream).
            |bytes| unsafe { self.copy_to_device(at, bytes) },
            || DeviceError::Launch {
                device: self.name.clone(),
                detail: format!("{} symbols; this device passes at most {SYMBOL_SLOTS}", symbols.len()),
            },
        )?;
        drop(held);
        let mut args = gpu_launch::kernel_args(buffers, syms_ptr, &range);
        let mut size = args.len();
        let mut extra = [
            HIP_LAUNCH_PARAM_BUFFER_POINTER as *mut c_void,
            args.as_mut_ptr().cast(),
            HIP_LAUNCH_PARAM_BUFFER_SIZE as *mut c_void,
            (&mut size as *mut usize).cast(),
            HIP_LAUNCH_PARAM_END as *mut c_void,
        ];
        // SAFETY: `kernel` comes from a live module of this device and takes the argument
        // block `gpu_launch` lays out (the caller's contract); `args` and `size` outlive the call.
        let status = unsafe {
            (self.runtime.module_launch_kernel)(
                kernel.0 as HipFunction,
                blocks as c_uint,
                1,
                1,
                BLOCK_THREADS,
                1,
                1,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                extra.as_mut_ptr(),
            )
        };
        self.call(status, "hipModuleLaunchKernel")
    }

    fn synchronize(&self) -> Result<(), DeviceError> {
        self.enter()?;
        // SAFETY: waits for the selected device.
        self.call(unsafe { (self.runtime.device_synchronize)() }, "hipDeviceSynchronize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
