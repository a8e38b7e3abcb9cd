//! # kiln-capi: the C API of the kiln runtime
//!
//! Owns the C entry points declared in `include/kiln.h` (that header is the API's
//! documentation: ownership, lifetimes, thread safety) and nothing else: every call forwards
//! to [`kiln_runtime`]. Built as `libkiln.so` / `libkiln.a` (lib name `kiln`); the rlib lets
//! Rust tests call the same functions.
//!
//! Rules every entry point follows:
//! - its body runs inside [`error::guard`] (`catch_unwind`), so no panic crosses into C;
//! - every pointer argument is checked for NULL and every index and tensor description is
//!   checked before use; failures return a status and set the thread's last error;
//! - output parameters are written only on success.

#![allow(clippy::missing_safety_doc)] // The safety contract of each function is in kiln.h.

pub mod error;
pub mod signature;

use std::ffi::{c_char, c_void, CStr};
use std::path::PathBuf;

use error::{guard, guard_value, Error};
use kiln_runtime::exec::{LoadOptions, Model, RuntimeError};
use kiln_runtime::manifest::ElemType;
use kiln_runtime::tensor::TensorRef;
use signature::{code_of_dtype, dtype_name, dtype_of_code, TensorInfo};
pub use signature::{
    KILN_DTYPE_BF16, KILN_DTYPE_BOOL, KILN_DTYPE_F16, KILN_DTYPE_F32, KILN_DTYPE_F64, KILN_DTYPE_I16, KILN_DTYPE_I32,
    KILN_DTYPE_I64, KILN_DTYPE_I8, KILN_DTYPE_U8,
};

pub use error::{
    KilnStatus, KILN_ERROR_INPUT, KILN_ERROR_INTERNAL, KILN_ERROR_INVALID_ARGUMENT, KILN_ERROR_LOAD, KILN_ERROR_RUN,
    KILN_OK,
};

/// `kiln_tensor` in `kiln.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KilnTensor {
    pub dtype: i32,
    pub rank: usize,
    pub shape: *const i64,
    pub data: *const c_void,
    pub bytes: usize,
}

/// `kiln_tensor_info` in `kiln.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KilnTensorInfo {
    pub name: *const c_char,
    pub dtype: i32,
    pub rank: usize,
    pub shape: *const i64,
}

/// `kiln_dim` in `kiln.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KilnDim {
    pub size: i64,
    pub expr: *const c_char,
    pub min: i64,
    pub max: i64,
}

/// `kiln_model`: the runtime's model and its signature in C form.
pub struct KilnModel {
    model: Model,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

/// One output's bytes, 8-byte aligned.
enum Storage {
    /// The runtime's buffer (it is aligned; checked when stored).
    Bytes(Vec<u8>),
    /// A copy, for a runtime buffer that was not aligned.
    Words(Vec<u64>),
}

/// One output of a run.
struct Output {
    dtype: i32,
    shape: Vec<i64>,
    bytes: usize,
    storage: Storage,
}

/// `kiln_outputs`: the tensors of one run.
pub struct KilnOutputs {
    tensors: Vec<Output>,
}

impl Storage {
    fn new(data: Vec<u8>) -> Storage {
        if (data.as_ptr() as usize).is_multiple_of(8) {
            return Storage::Bytes(data);
        }
        let mut words = vec![0u64; data.len().div_ceil(8)];
        // SAFETY: `words` has at least `data.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), words.as_mut_ptr() as *mut u8, data.len()) };
        Storage::Words(words)
    }

    fn ptr(&self) -> *const c_void {
        match self {
            Storage::Bytes(b) => b.as_ptr() as *const c_void,
            Storage::Words(w) => w.as_ptr() as *const c_void,
        }
    }
}

/// `*out = value` after checking `out` for NULL.
unsafe fn write_out<T>(out: *mut T, what: &str, value: T) -> Result<(), Error> {
    if out.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    out.write(value);
    Ok(())
}

/// `&*p` after checking `p` for NULL.
unsafe fn deref<'a, T>(p: *const T, what: &str) -> Result<&'a T, Error> {
    p.as_ref().ok_or_else(|| Error::invalid(format!("{what} is NULL")))
}

/// A slice from a C pointer and length; NULL is allowed for an empty slice.
unsafe fn slice<'a, T>(p: *const T, len: usize, what: &str) -> Result<&'a [T], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::invalid(format!("{what} is NULL but its length is {len}")));
    }
    if !(p as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(Error::invalid(format!("{what} is not aligned for its element type")));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

#[no_mangle]
pub extern "C" fn kiln_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

#[no_mangle]
pub extern "C" fn kiln_last_error() -> *const c_char {
    error::last_error_ptr()
}

#[no_mangle]
pub extern "C" fn kiln_dtype_name(dtype: i32) -> *const c_char {
    guard_value(std::ptr::null(), || dtype_name(dtype).map_or(std::ptr::null(), |n| n.as_ptr() as *const c_char))
}

#[no_mangle]
pub extern "C" fn kiln_dtype_size(dtype: i32) -> usize {
    dtype_of_code(dtype).map_or(0, |t| t.size_bytes())
}

#[no_mangle]
pub unsafe extern "C" fn kiln_model_load(
    path: *const c_char,
    threads: u32,
    out_model: *mut *mut KilnModel,
) -> KilnStatus {
    guard(|| {
        if out_model.is_null() {
            return Err(Error::invalid("kiln_model_load: out_model is NULL"));
        }
        let path = path_of(deref(path, "kiln_model_load: path")?)?;
        let opts = LoadOptions { threads: threads as usize };
        let model = Model::load_with(&path, &opts).map_err(|e| Error::runtime(KILN_ERROR_LOAD, &e))?;
        let sig = model.signature();
        let inputs = sig.inputs.iter().map(|t| TensorInfo::new(t, &sig.symbols)).collect();
        let outputs = sig.outputs.iter().map(|t| TensorInfo::new(t, &sig.symbols)).collect();
        out_model.write(Box::into_raw(Box::new(KilnModel { model, inputs, outputs })));
        Ok(())
    })
}

/// A path from a C string: any bytes on Unix, UTF-8 elsewhere.
fn path_of(s: &c_char) -> Result<PathBuf, Error> {
    // SAFETY: the caller passes a NUL-terminated string (kiln.h); `s` is its first byte.
    let c = unsafe { CStr::from_ptr(s) };
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(c.to_bytes())))
    }
    #[cfg(not(unix))]
    {
        c.to_str().map(PathBuf::from).map_err(|_| Error::invalid("kiln_model_load: path is not UTF-8"))
    }
}

#[no_mangle]
pub unsafe extern "C" fn kiln_model_free(model: *mut KilnModel) {
    guard_value((), || {
        if !model.is_null() {
            drop(Box::from_raw(model));
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn kiln_model_num_inputs(model: *const KilnModel, out_count: *mut usize) -> KilnStatus {
    guard(|| write_out(out_count, "out_count", deref(model, "model")?.inputs.len()))
}

#[no_mangle]
pub unsafe extern "C" fn kiln_model_num_outputs(model: *const KilnModel, out_count: *mut usize) -> KilnStatus {
    guard(|| write_out(out_count, "out_count", deref(model, "model")?.outputs.len()))
}

/// Input (`output == false`) or output `index` of `model`.
unsafe fn tensor_info<'a>(model: *const KilnModel, output: bool, index: usize) -> Result<&'a TensorInfo, Error> {
    let m = deref(model, "model")?;
    let (list, what) = if output { (&m.outputs, "output") } else { (&m.inputs, "input") };
    list.get(index)
        .ok_or_else(|| Error::invalid(format!("{what} index {index} is out of range: the model has {}", list.len())))
}

unsafe fn describe(model: *const KilnModel, output: bool, index: usize, out: *mut KilnTensorInfo) -> KilnStatus {
    guard(|| {
        let t = tensor_info(model, output, index)?;
        let info =
            KilnTensorInfo { name: t.name.as_ptr(), dtype: t.dtype, rank: t.shape.len(), shape: t.shape.as_ptr() };
        write_out(out, "out_info", info)
    })
}

#[no_mangle]
pub unsafe extern "C" fn kiln_model_input(
    model: *const KilnModel,
    index: usize,
    out_info: *mut KilnTensorInfo,
) -> KilnStatus {
    describe(model, false, index, out_info)
}

#[no_mangle]
pub unsafe extern "C" fn kiln_model_output(
    model: *const KilnModel,
    index: usize,
    out_info: *mut KilnTensorInfo,
) -> KilnStatus {
    describe(model, true, index, out_info)
}

unsafe fn describe_dim(
    model: *const KilnModel,
    output: bool,
    index: usize,
    dim: usize,
    out: *mut KilnDim,
) -> KilnStatus {
    guard(|| {
        let t = tensor_info(model, output, index)?;
        let d = t.dims.get(dim).ok_or_else(|| {
            Error::invalid(format!(
                "dim {dim} is out of range: `{}` has rank {}",
                t.name.to_string_lossy(),
                t.dims.len()
            ))
        })?;
        write_out(out, "out_dim", KilnDim { size: d.size, expr: d.expr.as_ptr(), min: d.min, max: d.max })
    })
}

#[no_mangle]
pub unsafe extern "C" fn kiln_model_input_dim(
    model: *const KilnModel,
    index: usize,
    dim: usize,
    out_dim: *mut KilnDim,
) -> KilnStatus {
    describe_dim(model, false, index, dim, out_dim)
}

#[no_mangle]
pub unsafe extern "C" fn kiln_model_output_dim(
    model: *const KilnModel,
    index: usize,
    dim: usize,
    out_dim: *mut KilnDim,
) -> KilnStatus {
    describe_dim(model, true, index, dim, out_dim)
}

/// Checks one C input tensor and returns its dtype and shape.
unsafe fn check_input(t: &KilnTensor, name: &str) -> Result<(ElemType, Vec<usize>), Error> {
    let bad = |what: String| Error::invalid(format!("input {name}: {what}"));
    let dtype = dtype_of_code(t.dtype).ok_or_else(|| bad(format!("unknown dtype {}", t.dtype)))?;
    let dims = slice(t.shape, t.rank, "its shape").map_err(|e| bad(e.message))?;
    let shape: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("negative dim {d} in shape {dims:?}"))))
        .collect::<Result<_, _>>()?;
    let want = kiln_runtime::tensor::byte_len(dtype, &shape);
    if want != Some(t.bytes) {
        let want = want.map_or_else(|| "more than fit in memory".to_string(), |w| w.to_string());
        return Err(bad(format!("{} bytes, but a {dims:?} tensor of {dtype:?} has {want}", t.bytes)));
    }
    if t.bytes > 0 && t.data.is_null() {
        return Err(bad("data is NULL".into()));
    }
    if !(t.data as usize).is_multiple_of(dtype.size_bytes()) {
        return Err(bad(format!("data is not aligned to its element size ({} bytes)", dtype.size_bytes())));
    }
    Ok((dtype, shape))
}

#[no_mangle]
pub unsafe extern "C" fn kiln_model_run(
    model: *const KilnModel,
    inputs: *const KilnTensor,
    num_inputs: usize,
    out_outputs: *mut *mut KilnOutputs,
) -> KilnStatus {
    guard(|| {
        let m = deref(model, "model")?;
        if out_outputs.is_null() {
            return Err(Error::invalid("out_outputs is NULL"));
        }
        let inputs = slice(inputs, num_inputs, "inputs")?;
        let name =
            |i: usize| m.inputs.get(i).map_or_else(|| i.to_string(), |t| format!("`{}`", t.name.to_string_lossy()));
        let checked: Vec<(ElemType, Vec<usize>)> =
            inputs.iter().enumerate().map(|(i, t)| check_input(t, &name(i))).collect::<Result<_, _>>()?;
        let refs: Vec<TensorRef> = inputs
            .iter()
            .zip(&checked)
            .map(|(t, (dtype, shape))| TensorRef {
                dtype: *dtype,
                shape,
                data: if t.bytes == 0 { &[] } else { std::slice::from_raw_parts(t.data as *const u8, t.bytes) },
            })
            .collect();
        let outs = m.model.run_refs(&refs).map_err(|e| {
            let status = match e {
                RuntimeError::InputCount { .. } | RuntimeError::Input { .. } => KILN_ERROR_INPUT,
                _ => KILN_ERROR_RUN,
            };
            Error::runtime(status, &e)
        })?;
        let tensors = outs
            .into_iter()
            .map(|t| Output {
                dtype: code_of_dtype(t.dtype),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                bytes: t.data.len(),
                storage: Storage::new(t.data),
            })
            .collect();
        out_outputs.write(Box::into_raw(Box::new(KilnOutputs { tensors })));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn kiln_outputs_count(outputs: *const KilnOutputs, out_count: *mut usize) -> KilnStatus {
    guard(|| write_out(out_count, "out_count", deref(outputs, "outputs")?.tensors.len()))
}

#[no_mangle]
pub unsafe extern "C" fn kiln_outputs_get(
    outputs: *const KilnOutputs,
    index: usize,
    out_tensor: *mut KilnTensor,
) -> KilnStatus {
    guard(|| {
        let o = deref(outputs, "outputs")?;
        let t = o.tensors.get(index).ok_or_else(|| {
            Error::invalid(format!("output index {index} is out of range: there are {}", o.tensors.len()))
        })?;
        let tensor = KilnTensor {
            dtype: t.dtype,
            rank: t.shape.len(),
            shape: t.shape.as_ptr(),
            data: t.storage.ptr(),
            bytes: t.bytes,
        };
        write_out(out_tensor, "out_tensor", tensor)
    })
}

#[no_mangle]
pub unsafe extern "C" fn kiln_outputs_free(outputs: *mut KilnOutputs) {
    guard_value((), || {
        if !outputs.is_null() {
            drop(Box::from_raw(outputs));
        }
    })
}
