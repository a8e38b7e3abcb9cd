//! A GPU emulated on the host CPU, for checking kiln's GPU code where no GPU is: an
//! implementation of the runtime's [`GpuApi`], so that the runtime's own GPU device
//! ([`GpuDevice`]) loads an artifact's GPU code, uploads weights, builds argument blocks and
//! grids and launches the plan as it does on CUDA or HIP — and the kernels run.
//!
//! The kernels run are the code the GPU would run, one step before its code generator: the
//! optimized LLVM IR of the code object (`kiln compile --emit llvm`), rewritten
//! ([`rewrite`]) so that the host's JIT (LLVM's MCJIT) compiles it, with the GPU-only
//! operations — thread ids, barriers, lane exchanges, matrix instructions, inline PTX — done
//! by the emulator ([`ops`], [`ptx`]) from the vendors' documented semantics. A launch runs
//! its blocks one after another, each as [`BLOCK_THREADS`] OS threads that meet at barriers
//! and exchanges ([`sync`]); a block whose threads can never all meet (a barrier some threads
//! skip) is an error, not a hang.
//!
//! What this checks: the kernels' index arithmetic, shared-memory tiling and barriers, the
//! warp reductions, the matrix instructions' fragment layouts (`mma.sync`, `wgmma` and its
//! descriptors, MFMA, WMMA) and the runtime's launches — everything up to the GPU's code
//! generator (`ptxas`, the driver's JIT, the AMDGPU backend), whose output is checked by
//! assembling it. Not checked: timing, memory-model races beyond barrier placement, and
//! rounding inside the matrix units (the emulator adds a product's terms in order in f32).
//!
//! The emulator runs only code it was given the IR of ([`EmulatedGpu::add_code`]): a code
//! object is matched by its bytes.

mod ops;
mod ptx;
mod races;
mod rewrite;
mod sync;

use inkwell::llvm_sys::core::{
    LLVMContextCreate, LLVMContextDispose, LLVMCreateMemoryBufferWithMemoryRangeCopy, LLVMDisposeMessage,
};
use inkwell::llvm_sys::execution_engine::{
    LLVMCreateMCJITCompilerForModule, LLVMDisposeExecutionEngine, LLVMExecutionEngineRef, LLVMGetFunctionAddress,
    LLVMInitializeMCJITCompilerOptions, LLVMLinkInMCJIT, LLVMMCJITCompilerOptions,
};
use inkwell::llvm_sys::ir_reader::LLVMParseIRInContext;
use inkwell::llvm_sys::prelude::{LLVMContextRef, LLVMModuleRef};
use inkwell::targets::{InitializationConfig, Target, TargetMachine};
use kiln_runtime::device::gpu::{GpuApi, GpuDevice};
use kiln_runtime::device::gpu_launch::BLOCK_THREADS;
use ops::{Lane, Op};
use races::Shadow;
use std::alloc::Layout;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_char;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};
use sync::{BlockSync, Meeting};

/// Bytes of shared memory a block has (and the alignment of the window that holds them, so
/// that an address's low 18 bits are its offset in it, as wgmma descriptors need).
pub const SHARED_BYTES: usize = 256 * 1024;

/// The GPU targets the emulator runs, with their warp (wavefront) size.
pub const EMULATED_TARGETS: &[(&str, u32)] =
    &[("sm_80", 32), ("sm_90", 32), ("sm_90a", 32), ("gfx90a", 64), ("gfx942", 64), ("gfx1100", 32)];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A JIT-compiled code object.
struct Jit {
    context: LLVMContextRef,
    engine: LLVMExecutionEngineRef,
    ops: Vec<Op>,
    /// Kernel name → address of its entry, and whether its threads meet.
    entries: HashMap<String, (usize, bool)>,
    /// Shared variables: (kernel, variable, offset in the window, bytes).
    shared: Vec<(String, String, usize, usize)>,
}

// SAFETY: after compilation the engine is only read (addresses looked up at load) and freed
// once, in `drop`; the compiled code is immutable and reentrant.
unsafe impl Send for Jit {}
unsafe impl Sync for Jit {}

impl Drop for Jit {
    fn drop(&mut self) {
        // SAFETY: the engine owns the module; both were made by `Jit::compile` and no launch
        // runs (the runtime unloads modules only then).
        unsafe {
            LLVMDisposeExecutionEngine(self.engine);
            LLVMContextDispose(self.context);
        }
    }
}

fn host() -> Result<rewrite::Host, String> {
    Target::initialize_native(&InitializationConfig::default())?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple).map_err(|e| e.to_string())?;
    let cpu = TargetMachine::get_host_cpu_name().to_string();
    let features = TargetMachine::get_host_cpu_features().to_string();
    let tm = target
        .create_target_machine(
            &triple,
            &cpu,
            &features,
            inkwell::OptimizationLevel::Default,
            inkwell::targets::RelocMode::Default,
            inkwell::targets::CodeModel::JITDefault,
        )
        .ok_or("LLVM has no target machine for the host")?;
    let data_layout = tm.get_target_data().get_data_layout().as_str().to_string_lossy().into_owned();
    Ok(rewrite::Host { triple: triple.as_str().to_string_lossy().into_owned(), data_layout, cpu, features })
}

impl Jit {
    /// Parses, rewrites and compiles the LLVM IR `ir`, its shared memory in `window`.
    fn compile(ir: &str, window: (usize, usize)) -> Result<Jit, String> {
        let host = host()?;
        // SAFETY: LLVM C API calls on objects made here; the module is owned by the engine
        // once created, the context by `Jit`.
        unsafe {
            LLVMLinkInMCJIT();
            let context = LLVMContextCreate();
            let fail = |why: String| -> Result<Jit, String> {
                LLVMContextDispose(context);
                Err(why)
            };
            let buffer =
                LLVMCreateMemoryBufferWithMemoryRangeCopy(ir.as_ptr() as *const c_char, ir.len(), c"gpu-code".as_ptr());
            let mut module: LLVMModuleRef = std::ptr::null_mut();
            let mut message: *mut c_char = std::ptr::null_mut();
            if LLVMParseIRInContext(context, buffer, &mut module, &mut message) != 0 {
                let why = CStr::from_ptr(message).to_string_lossy().into_owned();
                LLVMDisposeMessage(message);
                return fail(format!("the code object's LLVM IR does not parse: {why}"));
            }
            let emulator = rewrite::Emulator {
                call: kiln_emu_call as extern "C" fn(u32, *const u64, u32, *mut u64, u32) as usize,
                shared_access: kiln_emu_shared as extern "C" fn(u64, u32, u32) as usize,
            };
            let rewritten = match rewrite::rewrite(context, module, &host, window, emulator) {
                Ok(r) => r,
                Err(why) => {
                    inkwell::llvm_sys::core::LLVMDisposeModule(module);
                    return fail(why);
                }
            };
            let mut options: LLVMMCJITCompilerOptions = std::mem::zeroed();
            LLVMInitializeMCJITCompilerOptions(&mut options, std::mem::size_of::<LLVMMCJITCompilerOptions>());
            options.OptLevel = 1;
            let mut engine: LLVMExecutionEngineRef = std::ptr::null_mut();
            if LLVMCreateMCJITCompilerForModule(
                &mut engine,
                module,
                &mut options,
                std::mem::size_of::<LLVMMCJITCompilerOptions>(),
                &mut message,
            ) != 0
            {
                let why = CStr::from_ptr(message).to_string_lossy().into_owned();
                LLVMDisposeMessage(message);
                return fail(format!("the host JIT refused the rewritten module: {why}"));
            }
            let mut jit =
                Jit { context, engine, ops: rewritten.ops, entries: HashMap::new(), shared: rewritten.shared };
            for k in rewritten.kernels {
                let name = CString::new(rewrite::entry_name(&k)).map_err(|e| e.to_string())?;
                let address = LLVMGetFunctionAddress(engine, name.as_ptr());
                if address == 0 {
                    return Err(format!("the JIT has no entry for kernel `{k}`"));
                }
                let meets = rewritten.meeting.contains(&k);
                jit.entries.insert(k, (address as usize, meets));
            }
            Ok(jit)
        }
    }
}

/// A loaded kernel: its module, the address of its entry, whether its threads meet, and its
/// shared variables (name, offset, bytes).
#[derive(Clone)]
struct Kernel {
    name: String,
    jit: Arc<Jit>,
    entry: usize,
    meets: bool,
    shared: Arc<Vec<(String, usize, usize)>>,
}

/// The block's shared memory: [`SHARED_BYTES`] bytes aligned to their size.
struct Window {
    memory: NonNull<u8>,
}

// SAFETY: the window is plain memory; blocks use it one at a time (launches are serialized).
unsafe impl Send for Window {}
unsafe impl Sync for Window {}

impl Window {
    fn layout() -> Layout {
        Layout::from_size_align(SHARED_BYTES, SHARED_BYTES).expect("a valid layout")
    }

    fn new() -> Window {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(Window::layout()) };
        Window { memory: NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(Window::layout())) }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.memory.as_ptr(), Window::layout()) }
    }
}

/// A GPU emulated on the host: see the module doc.
pub struct EmulatedGpu {
    target: String,
    warp: u32,
    /// Code objects (their bytes) and the LLVM IR they were generated from.
    codes: Mutex<Vec<(Vec<u8>, String)>>,
    modules: Mutex<Vec<Option<Arc<Jit>>>>,
    kernels: Mutex<Vec<Kernel>>,
    allocations: Mutex<HashMap<u64, Layout>>,
    window: Window,
    shadow: Shadow,
    /// The next launch's first barrier epoch ([`races`]).
    epoch: std::sync::atomic::AtomicU64,
    /// One launch at a time (blocks share the window).
    launching: Mutex<()>,
}

impl EmulatedGpu {
    /// An emulated GPU running `target`'s code (`sm_80`, `gfx942`, ...; [`EMULATED_TARGETS`]).
    pub fn new(target: &str) -> Result<EmulatedGpu, String> {
        let &(_, warp) = EMULATED_TARGETS.iter().find(|(t, _)| *t == target).ok_or_else(|| {
            let names: Vec<&str> = EMULATED_TARGETS.iter().map(|(t, _)| *t).collect();
            format!("the GPU emulator runs {}, not `{target}`", names.join(", "))
        })?;
        Ok(EmulatedGpu {
            target: target.to_string(),
            warp,
            codes: Mutex::new(Vec::new()),
            modules: Mutex::new(Vec::new()),
            kernels: Mutex::new(Vec::new()),
            allocations: Mutex::new(HashMap::new()),
            window: Window::new(),
            shadow: Shadow::new(SHARED_BYTES),
            epoch: std::sync::atomic::AtomicU64::new(1),
            launching: Mutex::new(()),
        })
    }

    /// Lets the emulator run the code object `code`, generated from the LLVM IR `llvm_ir` (the
    /// code object's `llvm` listing).
    pub fn add_code(&self, code: &[u8], llvm_ir: &str) {
        lock(&self.codes).push((code.to_vec(), llvm_ir.to_string()));
    }

    /// A runtime device over this emulator, named `emulated:TARGET`, loading `target` code.
    pub fn into_device(self) -> Result<GpuDevice<EmulatedGpu>, kiln_runtime::device::DeviceError> {
        let target = self.target.clone();
        GpuDevice::new(self, format!("emulated:{target}"), target.clone(), vec![target], u32::MAX as u64)
    }
}

/// What a thread of a launch needs to run emulated operations.
#[derive(Clone, Copy)]
struct ThreadContext {
    tid: u32,
    block: u32,
    blocks: u32,
    warp: u32,
    sync: *const BlockSync,
    ops: *const Vec<Op>,
    shared: *const u8,
    shadow: *const Shadow,
    /// The kernel's shared variables (name, offset, bytes), to name them in errors.
    variables: *const Vec<(String, usize, usize)>,
    /// The barrier epoch the block began in.
    block_start: u64,
}

thread_local! {
    static CONTEXT: Cell<Option<ThreadContext>> = const { Cell::new(None) };
}

/// What the rewritten kernels call for a GPU operation: operation `op` of the running module,
/// `nargs` operand slots at `args`, `nresults` result slots to fill at `results`. Failures fail
/// the block (the launch reports them) and give zeros.
extern "C" fn kiln_emu_call(op: u32, args: *const u64, nargs: u32, results: *mut u64, nresults: u32) {
    let Some(ctx) = CONTEXT.with(|c| c.get()) else { return };
    // SAFETY: the pointers live for the launch (set by `launch`); the slots are arrays of the
    // given lengths (built by `rewrite::replace_call`).
    let (sync, ops, args, results, shared) = unsafe {
        (
            &*ctx.sync,
            &*ctx.ops,
            std::slice::from_raw_parts(args, nargs as usize),
            std::slice::from_raw_parts_mut(results, nresults as usize),
            std::slice::from_raw_parts(ctx.shared, SHARED_BYTES),
        )
    };
    results.fill(0);
    // SAFETY: as above.
    let shadow = unsafe { &*ctx.shadow };
    let lane = Lane {
        tid: ctx.tid,
        block: ctx.block,
        blocks: ctx.blocks,
        block_threads: BLOCK_THREADS,
        warp: ctx.warp,
        sync,
        shared,
        shadow,
        site: op,
        block_start: ctx.block_start,
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ops::run(&ops[op as usize], &lane, args)));
    match outcome {
        Ok(Ok(values)) if values.len() == results.len() => results.copy_from_slice(&values),
        Ok(Ok(values)) => {
            sync.fail(format!("{:?} gave {} values for {} result slots", ops[op as usize], values.len(), results.len()))
        }
        Ok(Err(why)) => {
            if why != ops::BLOCK_FAILED {
                sync.fail(format!("thread {} of block {}: {why}", ctx.tid, ctx.block));
            }
        }
        Err(_) => sync.fail(format!(
            "thread {} of block {}: the emulator panicked in {:?}",
            ctx.tid, ctx.block, ops[op as usize]
        )),
    }
}

/// What the rewritten kernels call before each shared-memory load (`write` 0) or store (1)
/// of `bytes` bytes at `address`: an access outside the window, or racing with another
/// thread's since the last barrier ([`races`]), fails the block.
extern "C" fn kiln_emu_shared(address: u64, bytes: u32, write: u32) {
    let Some(ctx) = CONTEXT.with(|c| c.get()) else { return };
    // SAFETY: the pointers live for the launch (set by `launch`).
    let (sync, shadow, variables) = unsafe { (&*ctx.sync, &*ctx.shadow, &*ctx.variables) };
    let offset = address.wrapping_sub(ctx.shared as u64) as usize;
    let (bytes, write) = (bytes as usize, write != 0);
    let name = |at: usize| {
        variables
            .iter()
            .find(|(_, start, len)| (*start..start + len).contains(&at))
            .map(|(v, start, _)| format!("`{v}` byte {}", at - start))
            .unwrap_or_else(|| format!("byte {at} of no shared variable"))
    };
    if offset.checked_add(bytes).is_none_or(|end| end > SHARED_BYTES) {
        sync.fail(format!(
            "thread {} of block {}: shared-memory access {address:#x} lies outside the block's shared memory",
            ctx.tid, ctx.block
        ));
        return;
    }
    let access = races::Access { thread: ctx.tid, write, epoch: sync.epoch(), block_start: ctx.block_start };
    let why = match shadow.record(offset, bytes, access) {
        Ok(()) => return,
        Err(races::Conflict::Race { byte, other, other_wrote }) => format!(
            "thread {} {} shared {} after thread {other} {} it, with no barrier between (a race)",
            ctx.tid,
            if write { "writes" } else { "reads" },
            name(byte),
            if other_wrote { "wrote" } else { "read" }
        ),
        Err(races::Conflict::Unwritten { byte }) => {
            format!(
                "thread {} reads shared {}, which no thread of the block has written (a missing barrier before the write, or memory the block never writes)",
                ctx.tid,
                name(byte)
            )
        }
    };
    sync.fail(format!("block {}: {why}", ctx.block));
}

impl GpuApi for EmulatedGpu {
    fn enter(&self) -> Result<(), String> {
        Ok(())
    }

    fn malloc(&self, bytes: usize) -> Result<u64, String> {
        let layout = Layout::from_size_align(bytes.max(1), 256).map_err(|e| e.to_string())?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(format!("out of host memory for {bytes} bytes"));
        }
        lock(&self.allocations).insert(p as u64, layout);
        Ok(p as u64)
    }

    unsafe fn free(&self, ptr: u64) {
        if let Some(layout) = lock(&self.allocations).remove(&ptr) {
            // SAFETY: allocated by `malloc` with this layout, freed once.
            unsafe { std::alloc::dealloc(ptr as *mut u8, layout) }
        }
    }

    unsafe fn zero(&self, ptr: u64, bytes: usize) -> Result<(), String> {
        // SAFETY: the caller guarantees the range lies in one allocation.
        unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, bytes) };
        Ok(())
    }

    unsafe fn copy_to_device(&self, dst: u64, src: &[u8]) -> Result<(), String> {
        // SAFETY: as for `zero`.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    unsafe fn copy_to_host(&self, dst: &mut [u8], src: u64) -> Result<(), String> {
        // SAFETY: as for `zero`.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    unsafe fn copy_on_device(&self, dst: u64, src: u64, bytes: usize) -> Result<(), String> {
        // SAFETY: as for `zero`; the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes) };
        Ok(())
    }

    fn load_module(&self, code: &[u8]) -> Result<usize, String> {
        let ir = lock(&self.codes).iter().find(|(c, _)| c == code).map(|(_, ir)| ir.clone()).ok_or_else(|| {
            format!("the {} emulator was not given the LLVM IR of this code object (it runs only code compiled alongside it)", self.target)
        })?;
        let jit = Jit::compile(&ir, (self.window.memory.as_ptr() as usize, SHARED_BYTES))?;
        let mut modules = lock(&self.modules);
        modules.push(Some(Arc::new(jit)));
        Ok(modules.len() - 1)
    }

    fn function(&self, module: usize, name: &CString) -> Option<usize> {
        let jit = lock(&self.modules).get(module)?.clone()?;
        let name = name.to_str().ok()?.to_string();
        let (entry, meets) = *jit.entries.get(&name)?;
        let shared = jit.shared.iter().filter(|(k, ..)| *k == name).map(|(_, v, at, n)| (v.clone(), *at, *n)).collect();
        let mut kernels = lock(&self.kernels);
        kernels.push(Kernel { name, jit, entry, meets, shared: Arc::new(shared) });
        Some(kernels.len() - 1)
    }

    unsafe fn unload(&self, module: usize) {
        if let Some(m) = lock(&self.modules).get_mut(module) {
            *m = None;
        }
    }

    unsafe fn launch(&self, function: usize, blocks: u32, args: &mut [u64]) -> Result<(), String> {
        let kernel = lock(&self.kernels).get(function).cloned().ok_or("no such kernel")?;
        let _one_at_a_time = lock(&self.launching);
        let sync = BlockSync::new(BLOCK_THREADS, self.epoch.load(std::sync::atomic::Ordering::SeqCst));
        // SAFETY: the entry takes a pointer to the argument words (rewrite::rewrite).
        let entry: extern "C" fn(*const u64) = unsafe { std::mem::transmute(kernel.entry) };
        let words = args.as_ptr() as usize;
        let shared = self.window.memory.as_ptr() as usize;
        let context = |tid: u32, block: u32, sync: &BlockSync| ThreadContext {
            block_start: sync.epoch(),
            tid,
            block,
            blocks,
            warp: self.warp,
            sync,
            ops: &kernel.jit.ops,
            shared: shared as *const u8,
            shadow: &self.shadow,
            variables: &*kernel.shared,
        };
        if !kernel.meets {
            // No thread waits for another: one after another, on this thread.
            for block in 0..blocks {
                sync.next_epoch();
                for tid in 0..BLOCK_THREADS {
                    CONTEXT.with(|c| c.set(Some(context(tid, block, &sync))));
                    entry(words as *const u64);
                }
            }
            CONTEXT.with(|c| c.set(None));
            self.epoch.store(sync.epoch() + 1, std::sync::atomic::Ordering::SeqCst);
            return match sync.failure() {
                Some(why) => Err(format!("emulated kernel `{}`: {why}", kernel.name)),
                None => Ok(()),
            };
        }
        std::thread::scope(|s| {
            for tid in 0..BLOCK_THREADS {
                let (sync, context) = (&sync, &context);
                s.spawn(move || {
                    for block in 0..blocks {
                        CONTEXT.with(|c| c.set(Some(context(tid, block, sync))));
                        entry(words as *const u64);
                        CONTEXT.with(|c| c.set(None));
                        if sync.meet(tid, Meeting::Done, Vec::new()).is_none() {
                            return;
                        }
                    }
                });
            }
        });
        self.epoch.store(sync.epoch() + 1, std::sync::atomic::Ordering::SeqCst);
        match sync.failure() {
            Some(why) => Err(format!("emulated kernel `{}`: {why}", kernel.name)),
            None => Ok(()),
        }
    }

    fn synchronize(&self) -> Result<(), String> {
        Ok(())
    }
}
