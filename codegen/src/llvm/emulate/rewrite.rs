//! Turns the LLVM IR of a GPU code object (the optimized module the NVPTX or AMDGPU code
//! generator compiles) into a module the host's JIT compiles, changing only what a CPU cannot
//! run:
//!
//! - every call of a GPU intrinsic (`llvm.nvvm.*`, `llvm.amdgcn.*`) and every inline-asm
//!   block becomes a call of the emulator ([`super::kiln_emu_call`]) with the operation's
//!   number: the operands are taken apart into 64-bit slots of an array, the results put
//!   together from another; an intrinsic or PTX instruction the emulator does not know is an
//!   error here, at load time;
//! - shared-memory variables (address space 3) become fixed addresses in the emulator's
//!   shared window, each kernel's from its start (so a wgmma descriptor's 18-bit address is
//!   the offset in the window, as on the GPU);
//! - kernels lose their GPU calling convention, and each gets an entry `kiln_emu_entry.NAME`
//!   taking a pointer to its argument block (the runtime's 8-byte words);
//! - the module gets the host's triple, data layout, CPU and features.
//!
//! Everything else — the kernels' arithmetic, loads, stores, loops, address computations — is
//! the code the GPU would run.

use super::ops::Op;
use super::ptx::PtxProgram;
use inkwell::llvm_sys::analysis::{LLVMVerifierFailureAction, LLVMVerifyModule};
use inkwell::llvm_sys::core::*;
use inkwell::llvm_sys::prelude::*;
use inkwell::llvm_sys::target::{LLVMABISizeOfType, LLVMGetModuleDataLayout, LLVMStoreSizeOfType};
use inkwell::llvm_sys::{LLVMLinkage, LLVMOpcode, LLVMTypeKind};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};

/// The host the JIT compiles for.
pub struct Host {
    pub triple: String,
    pub data_layout: String,
    pub cpu: String,
    pub features: String,
}

/// What a rewritten module needs at run time.
pub struct Rewritten {
    /// The operations its emulator calls name, by number.
    pub ops: Vec<Op>,
    /// Its kernels, by name.
    pub kernels: Vec<String>,
    /// The kernels whose threads meet (barriers, lane exchanges): the others' threads can
    /// run one after another.
    pub meeting: Vec<String>,
    /// Each kernel's shared variables: (kernel, variable, offset in the window, bytes).
    pub shared: Vec<(String, String, usize, usize)>,
}

/// The name of kernel `kernel`'s entry in the rewritten module.
pub fn entry_name(kernel: &str) -> String {
    format!("kiln_emu_entry.{kernel}")
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in LLVM names")
}

unsafe fn name_of(v: LLVMValueRef) -> String {
    let mut len = 0;
    let p = LLVMGetValueName2(v, &mut len);
    if p.is_null() {
        return String::new();
    }
    String::from_utf8_lossy(std::slice::from_raw_parts(p as *const u8, len)).into_owned()
}

unsafe fn functions(module: LLVMModuleRef) -> Vec<LLVMValueRef> {
    let mut out = Vec::new();
    let mut f = LLVMGetFirstFunction(module);
    while !f.is_null() {
        out.push(f);
        f = LLVMGetNextFunction(f);
    }
    out
}

unsafe fn instructions(function: LLVMValueRef) -> Vec<LLVMValueRef> {
    let mut out = Vec::new();
    let mut b = LLVMGetFirstBasicBlock(function);
    while !b.is_null() {
        let mut i = LLVMGetFirstInstruction(b);
        while !i.is_null() {
            out.push(i);
            i = LLVMGetNextInstruction(i);
        }
        b = LLVMGetNextBasicBlock(b);
    }
    out
}

/// The emulator operation a call stands for: `Ok(None)` for a call the host runs itself.
unsafe fn operation_of(call: LLVMValueRef) -> Result<Option<Op>, String> {
    let callee = LLVMGetCalledValue(call);
    if !LLVMIsAInlineAsm(callee).is_null() {
        let mut len = 0;
        let text = LLVMGetInlineAsmAsmString(callee, &mut len);
        let text = String::from_utf8_lossy(std::slice::from_raw_parts(text as *const u8, len)).into_owned();
        let constraints = LLVMGetInlineAsmConstraintString(callee, &mut len);
        let constraints =
            String::from_utf8_lossy(std::slice::from_raw_parts(constraints as *const u8, len)).into_owned();
        return PtxProgram::parse(&text, &constraints).map(|p| Some(Op::Ptx(p)));
    }
    if LLVMIsAFunction(callee).is_null() {
        return Ok(None);
    }
    let name = name_of(callee);
    if !(name.starts_with("llvm.nvvm.") || name.starts_with("llvm.amdgcn.")) {
        return Ok(None);
    }
    Op::of_intrinsic(&name).map(Some).ok_or_else(|| format!("the emulator does not know the intrinsic `{name}`"))
}

/// Builds IR through one builder, with the types it needs.
struct Emitter {
    context: LLVMContextRef,
    builder: LLVMBuilderRef,
    i64: LLVMTypeRef,
}

impl Emitter {
    unsafe fn int(&self, bits: u32) -> LLVMTypeRef {
        LLVMIntTypeInContext(self.context, bits)
    }

    unsafe fn const_i32(&self, v: u64) -> LLVMValueRef {
        LLVMConstInt(self.int(32), v, 0)
    }

    /// `v` taken apart into 64-bit slots (integers zero-extended, floats by their bits,
    /// pointers by their address, vectors and aggregates element by element).
    unsafe fn flatten(&self, v: LLVMValueRef, out: &mut Vec<LLVMValueRef>) -> Result<(), String> {
        let b = self.builder;
        let ty = LLVMTypeOf(v);
        let none = c"".as_ptr();
        match LLVMGetTypeKind(ty) {
            LLVMTypeKind::LLVMIntegerTypeKind => {
                let bits = LLVMGetIntTypeWidth(ty);
                match bits {
                    64 => out.push(v),
                    1..=63 => out.push(LLVMBuildZExt(b, v, self.i64, none)),
                    _ => return Err(format!("an i{bits} operand")),
                }
            }
            LLVMTypeKind::LLVMHalfTypeKind | LLVMTypeKind::LLVMBFloatTypeKind => {
                out.push(LLVMBuildZExt(b, LLVMBuildBitCast(b, v, self.int(16), none), self.i64, none))
            }
            LLVMTypeKind::LLVMFloatTypeKind => {
                out.push(LLVMBuildZExt(b, LLVMBuildBitCast(b, v, self.int(32), none), self.i64, none))
            }
            LLVMTypeKind::LLVMDoubleTypeKind => out.push(LLVMBuildBitCast(b, v, self.i64, none)),
            LLVMTypeKind::LLVMPointerTypeKind => out.push(LLVMBuildPtrToInt(b, v, self.i64, none)),
            LLVMTypeKind::LLVMVectorTypeKind => {
                for i in 0..LLVMGetVectorSize(ty) {
                    self.flatten(LLVMBuildExtractElement(b, v, self.const_i32(i.into()), none), out)?;
                }
            }
            LLVMTypeKind::LLVMStructTypeKind => {
                for i in 0..LLVMCountStructElementTypes(ty) {
                    self.flatten(LLVMBuildExtractValue(b, v, i, none), out)?;
                }
            }
            kind => return Err(format!("an operand of type kind {kind:?}")),
        }
        Ok(())
    }

    /// A value of type `ty` put together from the 64-bit slots `slots` (the inverse of
    /// [`Emitter::flatten`]).
    unsafe fn assemble(
        &self,
        ty: LLVMTypeRef,
        slots: &mut impl Iterator<Item = LLVMValueRef>,
    ) -> Result<LLVMValueRef, String> {
        let b = self.builder;
        let none = c"".as_ptr();
        let mut next = || slots.next().ok_or_else(|| "fewer result slots than the result has values".to_string());
        Ok(match LLVMGetTypeKind(ty) {
            LLVMTypeKind::LLVMIntegerTypeKind => {
                let s = next()?;
                if LLVMGetIntTypeWidth(ty) == 64 {
                    s
                } else {
                    LLVMBuildTrunc(b, s, ty, none)
                }
            }
            LLVMTypeKind::LLVMHalfTypeKind | LLVMTypeKind::LLVMBFloatTypeKind => {
                LLVMBuildBitCast(b, LLVMBuildTrunc(b, next()?, self.int(16), none), ty, none)
            }
            LLVMTypeKind::LLVMFloatTypeKind => {
                LLVMBuildBitCast(b, LLVMBuildTrunc(b, next()?, self.int(32), none), ty, none)
            }
            LLVMTypeKind::LLVMDoubleTypeKind => LLVMBuildBitCast(b, next()?, ty, none),
            LLVMTypeKind::LLVMPointerTypeKind => LLVMBuildIntToPtr(b, next()?, ty, none),
            LLVMTypeKind::LLVMVectorTypeKind => {
                let element = LLVMGetElementType(ty);
                let mut v = LLVMGetUndef(ty);
                for i in 0..LLVMGetVectorSize(ty) {
                    let x = self.assemble(element, slots)?;
                    v = LLVMBuildInsertElement(b, v, x, self.const_i32(i.into()), none);
                }
                v
            }
            LLVMTypeKind::LLVMStructTypeKind => {
                let mut v = LLVMGetUndef(ty);
                for i in 0..LLVMCountStructElementTypes(ty) {
                    let x = self.assemble(LLVMStructGetTypeAtIndex(ty, i), slots)?;
                    v = LLVMBuildInsertValue(b, v, x, i, none);
                }
                v
            }
            kind => return Err(format!("a result of type kind {kind:?}")),
        })
    }
}

/// Replaces `call` by a call of the emulator's operation `op` through `emulator`.
unsafe fn replace_call(
    e: &Emitter,
    function: LLVMValueRef,
    call: LLVMValueRef,
    op: usize,
    emulator: usize,
) -> Result<(), String> {
    let none = c"".as_ptr();
    let b = e.builder;
    LLVMPositionBuilderBefore(b, call);
    let mut slots = Vec::new();
    for i in 0..LLVMGetNumArgOperands(call) {
        e.flatten(LLVMGetOperand(call, i), &mut slots)?;
    }
    let result_ty = LLVMGetReturnType(LLVMGetCalledFunctionType(call));
    // Count the result's slots by taking an undefined value of its type apart.
    let mut result_slots = Vec::new();
    if LLVMGetTypeKind(result_ty) != LLVMTypeKind::LLVMVoidTypeKind {
        e.flatten(LLVMGetUndef(result_ty), &mut result_slots)?;
    }
    // The arrays live in the entry block (an alloca in a loop would grow the stack).
    let entry = LLVMGetFirstBasicBlock(function);
    let allocas = LLVMCreateBuilderInContext(e.context);
    LLVMPositionBuilder(allocas, entry, LLVMGetFirstInstruction(entry));
    let array = |n: usize| LLVMBuildAlloca(allocas, LLVMArrayType2(e.i64, n.max(1) as u64), none);
    let (args, results) = (array(slots.len()), array(result_slots.len()));
    LLVMDisposeBuilder(allocas);
    let slot = |base: LLVMValueRef, i: usize| {
        let mut index = [LLVMConstInt(e.i64, i as u64, 0)];
        LLVMBuildInBoundsGEP2(b, e.i64, base, index.as_mut_ptr(), 1, none)
    };
    for (i, &v) in slots.iter().enumerate() {
        LLVMBuildStore(b, v, slot(args, i));
    }
    // The arrays' pointers are in the allocas' address space (AMDGPU: 5).
    let ptr = LLVMTypeOf(args);
    let i32 = e.int(32);
    let mut params = [i32, ptr, i32, ptr, i32];
    let fn_ty = LLVMFunctionType(LLVMVoidTypeInContext(e.context), params.as_mut_ptr(), 5, 0);
    let callee = LLVMConstIntToPtr(LLVMConstInt(e.i64, emulator as u64, 0), LLVMPointerTypeInContext(e.context, 0));
    let mut call_args = [
        e.const_i32(op as u64),
        args,
        e.const_i32(slots.len() as u64),
        results,
        e.const_i32(result_slots.len() as u64),
    ];
    LLVMBuildCall2(b, fn_ty, callee, call_args.as_mut_ptr(), 5, none);
    if !result_slots.is_empty() {
        let mut loaded = (0..result_slots.len()).map(|i| LLVMBuildLoad2(b, e.i64, slot(results, i), none));
        let value = e.assemble(result_ty, &mut loaded)?;
        LLVMReplaceAllUsesWith(call, value);
    }
    LLVMInstructionEraseFromParent(call);
    Ok(())
}

/// The kernel a shared variable belongs to: kiln names them `KERNEL_sharedN`.
fn owner_of_shared(name: &str) -> Option<&str> {
    let (kernel, n) = name.rsplit_once("_shared")?;
    (!n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())).then_some(kernel)
}

/// Rewrites `module` (in `context`) as the module doc says: shared variables at `window`
/// (address, bytes), emulator calls to the function at `emulator`.
///
/// # Safety
/// `module` is a valid module of `context`; `emulator` is the address of
/// [`super::kiln_emu_call`].
pub unsafe fn rewrite(
    context: LLVMContextRef,
    module: LLVMModuleRef,
    host: &Host,
    window: (usize, usize),
    emulator: Emulator,
) -> Result<Rewritten, String> {
    let builder = LLVMCreateBuilderInContext(context);
    let e = Emitter { context, builder, i64: LLVMInt64TypeInContext(context) };
    let result = rewrite_with(&e, module, host, window, emulator);
    LLVMDisposeBuilder(builder);
    result
}

/// The emulator's entry points the rewritten code calls (their addresses).
#[derive(Clone, Copy)]
pub struct Emulator {
    /// [`super::kiln_emu_call`]: a GPU operation.
    pub call: usize,
    /// [`super::kiln_emu_shared`]: a shared-memory access about to happen.
    pub shared_access: usize,
}

/// Before each load and store of shared memory (address space 3), a call of the emulator
/// with its address, size in bytes and whether it writes.
unsafe fn report_shared_accesses(e: &Emitter, module: LLVMModuleRef, function: LLVMValueRef, emulator: usize) {
    let none = c"".as_ptr();
    let target_data = LLVMGetModuleDataLayout(module);
    let i32 = e.int(32);
    let mut params = [e.i64, i32, i32];
    let fn_ty = LLVMFunctionType(LLVMVoidTypeInContext(e.context), params.as_mut_ptr(), 3, 0);
    let callee = LLVMConstIntToPtr(LLVMConstInt(e.i64, emulator as u64, 0), LLVMPointerTypeInContext(e.context, 0));
    for i in instructions(function) {
        let (pointer, value_ty, write) = match LLVMGetInstructionOpcode(i) {
            LLVMOpcode::LLVMLoad => (LLVMGetOperand(i, 0), LLVMTypeOf(i), 0),
            LLVMOpcode::LLVMStore => (LLVMGetOperand(i, 1), LLVMTypeOf(LLVMGetOperand(i, 0)), 1),
            _ => continue,
        };
        if LLVMGetPointerAddressSpace(LLVMTypeOf(pointer)) != 3 {
            continue;
        }
        LLVMPositionBuilderBefore(e.builder, i);
        let address = LLVMBuildPtrToInt(e.builder, pointer, e.i64, none);
        let bytes = LLVMStoreSizeOfType(target_data, value_ty);
        let mut args = [address, e.const_i32(bytes), e.const_i32(write)];
        LLVMBuildCall2(e.builder, fn_ty, callee, args.as_mut_ptr(), 3, none);
    }
}

unsafe fn rewrite_with(
    e: &Emitter,
    module: LLVMModuleRef,
    host: &Host,
    window: (usize, usize),
    emulator: Emulator,
) -> Result<Rewritten, String> {
    let none = c"".as_ptr();
    // The GPU's data layout may put allocas in their own address space (AMDGPU: 5).
    let gpu_layout = CStr::from_ptr(LLVMGetDataLayoutStr(module)).to_string_lossy().into_owned();
    let alloca_space = gpu_layout.split('-').find(|p| p.starts_with('A') && p[1..].parse::<u32>().is_ok());
    let layout = match alloca_space {
        Some(a) => format!("{}-{a}", host.data_layout),
        None => host.data_layout.clone(),
    };
    LLVMSetDataLayout(module, cstr(&layout).as_ptr());
    LLVMSetTarget(module, cstr(&host.triple).as_ptr());

    let defined: Vec<LLVMValueRef> = functions(module).into_iter().filter(|&f| LLVMIsDeclaration(f) == 0).collect();
    let kernels: Vec<LLVMValueRef> =
        defined.iter().copied().filter(|&f| LLVMGetLinkage(f) == LLVMLinkage::LLVMExternalLinkage).collect();
    let kernel_names: Vec<String> = kernels.iter().map(|&k| name_of(k)).collect();

    // GPU operations → emulator calls.
    let mut ops = Vec::new();
    let mut meeting = Vec::new();
    for &f in &defined {
        for i in instructions(f) {
            if LLVMGetInstructionOpcode(i) != LLVMOpcode::LLVMCall {
                continue;
            }
            let op = operation_of(i).map_err(|why| format!("kernel `{}`: {why}", name_of(f)))?;
            if let Some(op) = op {
                replace_call(e, f, i, ops.len(), emulator.call)
                    .map_err(|why| format!("kernel `{}`: {why}", name_of(f)))?;
                if op.meets() {
                    meeting.push(name_of(f));
                }
                ops.push(op);
            }
        }
    }

    for &f in &defined {
        report_shared_accesses(e, module, f, emulator.shared_access);
    }

    // Shared variables → the window, each kernel's from offset 0.
    let target_data = LLVMGetModuleDataLayout(module);
    let mut placed = Vec::new();
    let mut shared: BTreeMap<String, Vec<(String, LLVMValueRef)>> = BTreeMap::new();
    let mut g = LLVMGetFirstGlobal(module);
    while !g.is_null() {
        if LLVMGetPointerAddressSpace(LLVMTypeOf(g)) == 3 {
            let name = name_of(g);
            let owner = owner_of_shared(&name)
                .filter(|k| kernel_names.iter().any(|n| n == k))
                .ok_or_else(|| format!("shared variable `{name}` belongs to no kernel of the module"))?;
            shared.entry(owner.to_string()).or_default().push((name, g));
        }
        g = LLVMGetNextGlobal(g);
    }
    for (kernel, variables) in &shared {
        let mut offset = 0usize;
        for (name, g) in variables {
            let align = (LLVMGetAlignment(*g) as usize).max(16);
            offset = offset.div_ceil(align) * align;
            let size = LLVMABISizeOfType(target_data, LLVMGlobalGetValueType(*g)) as usize;
            if offset + size > window.1 {
                return Err(format!(
                    "kernel `{kernel}`: shared variable `{name}` ends at byte {}, beyond the emulator's {} bytes of shared memory",
                    offset + size,
                    window.1
                ));
            }
            let address = LLVMConstInt(e.i64, (window.0 + offset) as u64, 0);
            LLVMReplaceAllUsesWith(*g, LLVMConstIntToPtr(address, LLVMTypeOf(*g)));
            LLVMDeleteGlobal(*g);
            placed.push((kernel.clone(), name.clone(), offset, size));
            offset += size;
        }
    }

    // The host's calling convention, CPU and features.
    for &f in &defined {
        LLVMSetFunctionCallConv(f, 0);
        LLVMAddTargetDependentFunctionAttr(f, c"target-cpu".as_ptr(), cstr(&host.cpu).as_ptr());
        LLVMAddTargetDependentFunctionAttr(f, c"target-features".as_ptr(), cstr(&host.features).as_ptr());
    }

    // Entries: `void kiln_emu_entry.K(ptr words)` loads K's arguments and calls it.
    let ptr = LLVMPointerTypeInContext(e.context, 0);
    for (&k, name) in kernels.iter().zip(&kernel_names) {
        let fn_ty = LLVMGlobalGetValueType(k);
        let n = LLVMCountParamTypes(fn_ty) as usize;
        let mut params = vec![std::ptr::null_mut(); n];
        LLVMGetParamTypes(fn_ty, params.as_mut_ptr());
        for (i, &p) in params.iter().enumerate() {
            let kind = LLVMGetTypeKind(p);
            let eight_bytes = kind == LLVMTypeKind::LLVMPointerTypeKind
                || (kind == LLVMTypeKind::LLVMIntegerTypeKind && LLVMGetIntTypeWidth(p) == 64);
            if !eight_bytes {
                return Err(format!("kernel `{name}`: argument {i} is not 8 bytes (the runtime passes 8-byte words)"));
            }
        }
        let mut entry_params = [ptr];
        let entry_ty = LLVMFunctionType(LLVMVoidTypeInContext(e.context), entry_params.as_mut_ptr(), 1, 0);
        let entry = LLVMAddFunction(module, cstr(&entry_name(name)).as_ptr(), entry_ty);
        let block = LLVMAppendBasicBlockInContext(e.context, entry, c"entry".as_ptr());
        LLVMPositionBuilderAtEnd(e.builder, block);
        let words = LLVMGetParam(entry, 0);
        let mut args: Vec<LLVMValueRef> = params
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let mut index = [LLVMConstInt(e.i64, i as u64, 0)];
                let at = LLVMBuildInBoundsGEP2(e.builder, e.i64, words, index.as_mut_ptr(), 1, none);
                LLVMBuildLoad2(e.builder, p, at, none)
            })
            .collect();
        LLVMBuildCall2(e.builder, fn_ty, k, args.as_mut_ptr(), n as u32, none);
        LLVMBuildRetVoid(e.builder);
    }

    let mut message = std::ptr::null_mut();
    if LLVMVerifyModule(module, LLVMVerifierFailureAction::LLVMReturnStatusAction, &mut message) != 0 {
        let why = CStr::from_ptr(message).to_string_lossy().into_owned();
        LLVMDisposeMessage(message);
        return Err(format!("the rewritten module does not verify: {why}"));
    }
    if !message.is_null() {
        LLVMDisposeMessage(message);
    }
    // A meeting in a function that is not a kernel (LLVM inlines kiln's helpers, so none is
    // expected) could be anyone's.
    if meeting.iter().any(|f| !kernel_names.contains(f)) {
        meeting = kernel_names.clone();
    }
    Ok(Rewritten { ops, kernels: kernel_names, meeting, shared: placed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_variables_are_named_after_their_kernel() {
        assert_eq!(owner_of_shared("kiln_add_1_0_shared5"), Some("kiln_add_1_0"));
        assert_eq!(owner_of_shared("kiln_view_shared_0_shared12"), Some("kiln_view_shared_0"));
        assert_eq!(owner_of_shared("kiln_add_shared"), None);
        assert_eq!(owner_of_shared("tile"), None);
    }
}
