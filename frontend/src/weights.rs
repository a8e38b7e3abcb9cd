//! Weights, buffers and constants: read from `data/weights/` and `data/constants/` using the
//! configs that map state-dict names to files and tensor metadata (dtype, sizes, strides,
//! storage offset). Non-contiguous views and offsets are gathered into dense row-major tensors.

use crate::archive::{Archive, MAX_ENTRY_BYTES};
use crate::error::FrontendError;
use crate::export::{dtype_from_code, TensorMeta};
use crate::json::{field, int, obj, str_, At};
use kiln_ir::{DType, Dim, SymbolTable, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Seek};

/// Where one named tensor is stored.
#[derive(Clone, Debug)]
pub struct StoredTensor {
    /// Entry path relative to the archive prefix.
    pub path: String,
    pub meta: TensorMeta,
    pub use_pickle: bool,
}

/// Reads `data/weights/model_weights_config.json` and `data/constants/model_constants_config.json`
/// (either may be absent) into a map from state-dict name to storage.
pub fn read_configs<R: Read + Seek>(archive: &mut Archive<R>) -> Result<HashMap<String, StoredTensor>, FrontendError> {
    let mut out = HashMap::new();
    for (dir, file) in [("data/weights/", "model_weights_config.json"), ("data/constants/", "model_constants_config.json")] {
        let rel = format!("{dir}{file}");
        if !archive.has(&rel) {
            continue;
        }
        let doc = archive.read_json(&rel)?;
        let entry = format!("{}{rel}", archive.prefix());
        let root = At::root(&entry);
        let config = field(&doc, "config", &root)?;
        let at_c = root.key("config");
        for (name, v) in obj(config, &at_c)? {
            let at = at_c.key(name);
            let path_name = str_(field(v, "path_name", &at)?, &at.key("path_name"))?;
            if !crate::archive::is_safe_path(path_name) || path_name.contains('/') {
                return Err(FrontendError::UnsafePath { entry: path_name.to_string() });
            }
            let use_pickle = v.get("use_pickle").and_then(Value::as_bool).unwrap_or(false);
            let meta = read_meta(name, field(v, "tensor_meta", &at)?, &at.key("tensor_meta"))?;
            out.insert(name.clone(), StoredTensor { path: format!("{dir}{path_name}"), meta, use_pickle });
        }
    }
    Ok(out)
}

fn read_meta(name: &str, v: &Value, at: &At) -> Result<TensorMeta, FrontendError> {
    let dtype = dtype_from_code(int(field(v, "dtype", at)?, &at.key("dtype"))?, name)?;
    let ints = |key: &str| -> Result<Vec<Dim>, FrontendError> {
        let at = at.key(key);
        let list = field(v, key, &at)?.as_array().ok_or_else(|| at.err("expected an array"))?;
        list.iter()
            .enumerate()
            .map(|(i, d)| {
                let at = at.index(i);
                let n = d.get("as_int").and_then(Value::as_i64).ok_or_else(|| at.err("weights must have static sizes"))?;
                Ok(Dim::constant(n))
            })
            .collect()
    };
    let sizes = ints("sizes")?;
    let strides = ints("strides")?;
    if sizes.len() != strides.len() {
        return Err(at.err("sizes and strides differ in length"));
    }
    let offset = v.get("storage_offset").and_then(|o| o.get("as_int")).and_then(Value::as_i64).unwrap_or(0);
    Ok(TensorMeta { dtype, sizes, strides, storage_offset: Dim::constant(offset) })
}

fn statics(dims: &[Dim]) -> Option<Vec<i64>> {
    dims.iter().map(Dim::as_const).collect()
}

/// Reads one stored tensor and gathers it into a dense row-major [`Tensor`].
pub fn load_tensor<R: Read + Seek>(archive: &mut Archive<R>, name: &str, stored: &StoredTensor) -> Result<Tensor, FrontendError> {
    let bad = |reason: String| FrontendError::Weight { name: name.to_string(), reason };
    if stored.use_pickle {
        return Err(bad("stored as a pickle (not a plain tensor), which kiln cannot read".into()));
    }
    let meta = &stored.meta;
    let sizes = statics(&meta.sizes).ok_or_else(|| bad("symbolic size".into()))?;
    let strides = statics(&meta.strides).ok_or_else(|| bad("symbolic stride".into()))?;
    let offset = meta.storage_offset.as_const().ok_or_else(|| bad("symbolic storage offset".into()))?;
    if sizes.iter().any(|&s| s < 0) || strides.iter().any(|&s| s < 0) || offset < 0 {
        return Err(bad(format!("negative size, stride or offset (sizes {sizes:?}, strides {strides:?}, offset {offset})")));
    }
    let numel = sizes.iter().try_fold(1u64, |a, &s| a.checked_mul(s as u64)).ok_or_else(|| bad("size overflows".into()))?;
    let elem = meta.dtype.size_bytes() as u64;
    // The last element's index in storage; every element must lie inside the file.
    let mut needed: u64 = 0;
    if numel > 0 {
        let mut last = offset as u64;
        for (&s, &st) in sizes.iter().zip(&strides) {
            last = (s as u64 - 1).checked_mul(st as u64).and_then(|x| x.checked_add(last)).ok_or_else(|| bad("stride overflows".into()))?;
        }
        needed = (last + 1).checked_mul(elem).ok_or_else(|| bad("size overflows".into()))?;
    }
    if needed > MAX_ENTRY_BYTES {
        return Err(FrontendError::TooLarge { entry: stored.path.clone(), size: needed, limit: MAX_ENTRY_BYTES });
    }
    // The storage may be larger than this view of it; only the bytes it needs are kept.
    let (storage, stored_len) = archive.read_prefix(&stored.path, needed, MAX_ENTRY_BYTES)?;
    if stored_len < needed {
        return Err(bad(format!(
            "{stored_len} bytes stored in `{}`, but dtype {} x shape {sizes:?} (strides {strides:?}, offset {offset}) needs {needed}",
            stored.path,
            meta.dtype
        )));
    }
    let shape: Vec<usize> = sizes.iter().map(|&s| s as usize).collect();
    let contiguous = is_contiguous(&sizes, &strides);
    let e = elem as usize;
    let bytes = if numel == 0 {
        Vec::new()
    } else if contiguous {
        let start = offset as usize * e;
        storage[start..start + numel as usize * e].to_vec()
    } else {
        let mut out = Vec::with_capacity(numel as usize * e);
        let mut index = vec![0i64; sizes.len()];
        for _ in 0..numel {
            let pos = offset + index.iter().zip(&strides).map(|(i, s)| i * s).sum::<i64>();
            let b = pos as usize * e;
            out.extend_from_slice(&storage[b..b + e]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < sizes[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out
    };
    Ok(Tensor { dtype: meta.dtype, shape, bytes })
}

fn is_contiguous(sizes: &[i64], strides: &[i64]) -> bool {
    let mut expected = 1;
    for (&s, &st) in sizes.iter().zip(strides).rev() {
        if s != 1 && st != expected {
            return false;
        }
        expected *= s;
    }
    true
}

/// Checks that a loaded weight agrees with the graph's declared dtype and shape.
pub fn check_matches(name: &str, tensor: &Tensor, dtype: DType, shape: &[Dim], symbols: &SymbolTable) -> Result<(), FrontendError> {
    let declared: Option<Vec<i64>> = statics(shape);
    let actual: Vec<i64> = tensor.shape.iter().map(|&s| s as i64).collect();
    if tensor.dtype != dtype || declared.as_deref() != Some(actual.as_slice()) {
        let dims: Vec<String> = shape.iter().map(|d| d.display(symbols).to_string()).collect();
        return Err(FrontendError::Weight {
            name: name.to_string(),
            reason: format!("stored as {}{actual:?} but the graph declares {dtype}[{}]", tensor.dtype, dims.join(", ")),
        });
    }
    Ok(())
}
