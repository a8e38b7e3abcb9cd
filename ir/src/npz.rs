//! NumPy `.npz` / `.npy` reading and writing for [`Tensor`]s: the format kiln uses to exchange
//! inputs and outputs with PyTorch and NumPy (`numpy.savez` writes it, `numpy.load` reads it).
//!
//! Supported element types: `<f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1 |b1`, C order only. NumPy has no
//! bfloat16: [`write_npz`] stores bf16 tensors as `<f4` (every bf16 value is an f32 value, so
//! nothing is rounded). Reading is bounded: a header or array larger than the file is an
//! error, not an allocation.

use crate::dtype::DType;
use crate::tensor::Tensor;
use std::io::{Cursor, Read, Seek, Write};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NpzError {
    #[error("cannot read `{path}`: {reason}")]
    Io { path: String, reason: String },
    #[error("cannot write `{path}`: {reason}")]
    Write { path: String, reason: String },
    #[error("`{path}` is not a valid .npz file: {reason}")]
    Format { path: String, reason: String },
    #[error("array `{name}` in `{path}`: {reason}")]
    Array { path: String, name: String, reason: String },
}

fn descr_of(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
        DType::BF16 => return None,
    })
}

fn dtype_of(descr: &str) -> Option<DType> {
    let d = descr.trim_start_matches(['<', '|', '=']);
    Some(match d {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        "i8" => DType::I64,
        "i4" => DType::I32,
        "i2" => DType::I16,
        "i1" => DType::I8,
        "u1" => DType::U8,
        "b1" => DType::Bool,
        _ => return None,
    })
}

/// Parses one `.npy` document.
pub fn read_npy(bytes: &[u8]) -> Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("missing the .npy magic".into());
    }
    let major = bytes[6];
    let (hlen, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(format!("unsupported .npy version {major}")),
    };
    let header = bytes.get(start..start.checked_add(hlen).ok_or("header too long")?).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))?;
        let rest = &header[at + key.len() + 2..];
        Some(rest.trim_start().strip_prefix(':')?.trim_start())
    };
    let descr =
        field("descr").and_then(|r| r.strip_prefix('\'')).and_then(|r| r.split('\'').next()).ok_or("no descr")?;
    let dtype = dtype_of(descr).ok_or_else(|| format!("element type `{descr}` is not supported"))?;
    if field("fortran_order").map(|r| r.starts_with("True")).unwrap_or(false) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape_txt =
        field("shape").and_then(|r| r.strip_prefix('(')).and_then(|r| r.split(')').next()).ok_or("no shape")?;
    let mut shape = Vec::new();
    for part in shape_txt.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        shape.push(part.parse::<usize>().map_err(|_| format!("bad shape entry `{part}`"))?);
    }
    let data = &bytes[start + hlen..];
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    let need = numel.checked_mul(dtype.size_bytes()).ok_or("shape overflows")?;
    if data.len() < need {
        return Err(format!("holds {} data bytes, shape {shape:?} of {dtype} needs {need}", data.len()));
    }
    Ok(Tensor { dtype, shape, bytes: data[..need].to_vec() })
}

/// Writes one `.npy` document (format 1.0).
pub fn write_npy(t: &Tensor) -> Result<Vec<u8>, String> {
    let descr = descr_of(t.dtype).ok_or_else(|| format!("{} cannot be stored in .npy", t.dtype))?;
    let shape = match t.shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", t.shape[0]),
        _ => format!("({})", t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.bytes.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.bytes);
    Ok(out)
}

/// Reads every array of an `.npz` (in archive order), keyed by name without `.npy`.
pub fn read_npz(path: &std::path::Path) -> Result<Vec<(String, Tensor)>, NpzError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| NpzError::Io { path: p.clone(), reason: e.to_string() })?;
    read_npz_bytes(&bytes, &p)
}

pub fn read_npz_bytes(bytes: &[u8], p: &str) -> Result<Vec<(String, Tensor)>, NpzError> {
    let fmt = |reason: String| NpzError::Format { path: p.to_string(), reason };
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| fmt(e.to_string()))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| fmt(e.to_string()))?;
        let name = f.name().trim_end_matches(".npy").to_string();
        // An array can't be larger than 64x the compressed file (zip-bomb guard) or 16 GiB.
        let limit = (bytes.len() as u64).saturating_mul(64).min(16 << 30);
        if f.size() > limit {
            return Err(NpzError::Array {
                path: p.to_string(),
                name,
                reason: format!("{} bytes is implausibly large", f.size()),
            });
        }
        let mut data = Vec::with_capacity(f.size() as usize);
        (&mut f).take(limit).read_to_end(&mut data).map_err(|e| fmt(e.to_string()))?;
        let t =
            read_npy(&data).map_err(|reason| NpzError::Array { path: p.to_string(), name: name.clone(), reason })?;
        out.push((name, t));
    }
    Ok(out)
}

/// Writes arrays into an `.npz` (stored, uncompressed, like `numpy.savez`).
pub fn write_npz(path: &std::path::Path, arrays: &[(String, Tensor)]) -> Result<(), NpzError> {
    let p = path.display().to_string();
    let io = |e: String| NpzError::Write { path: p.clone(), reason: e };
    let file = std::fs::File::create(path).map_err(|e| io(e.to_string()))?;
    write_npz_to(file, arrays).map_err(io)
}

pub fn write_npz_to<W: Write + Seek>(w: W, arrays: &[(String, Tensor)]) -> Result<(), String> {
    let mut zip = zip::ZipWriter::new(w);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, t) in arrays {
        zip.start_file(format!("{name}.npy"), opts).map_err(|e| e.to_string())?;
        let widened;
        let t = match t.dtype {
            DType::BF16 => {
                widened = Tensor::from_f64(DType::F32, t.shape.clone(), &t.to_f64());
                &widened
            }
            _ => t,
        };
        zip.write_all(&write_npy(t)?).map_err(|e| e.to_string())?;
    }
    zip.finish().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npz_round_trip() {
        let a = Tensor::from_f64(DType::F32, vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let b = Tensor::from_i64(DType::I64, vec![], &[7]);
        let c = Tensor::from_i64(DType::Bool, vec![3], &[1, 0, 1]);
        let mut buf = Cursor::new(Vec::new());
        let arrays = vec![("x".to_string(), a), ("arr_1".to_string(), b), ("m".to_string(), c)];
        write_npz_to(&mut buf, &arrays).unwrap();
        let back = read_npz_bytes(buf.get_ref(), "mem").unwrap();
        assert_eq!(back, arrays);
    }

    #[test]
    fn bf16_is_written_as_the_f32_it_equals() {
        let values = [1.0, -2.5, 0.1, 3.0e38, f64::INFINITY]; // 0.1 and 3e38 round to bf16 values
        let t = Tensor::from_f64(DType::BF16, vec![5], &values);
        let mut buf = Cursor::new(Vec::new());
        write_npz_to(&mut buf, &[("y".to_string(), t.clone())]).unwrap();
        let back = read_npz_bytes(buf.get_ref(), "mem").unwrap();
        assert_eq!(back[0].1.dtype, DType::F32);
        assert_eq!(back[0].1.to_f64(), t.to_f64());
    }

    #[test]
    fn bad_npy_is_an_error() {
        assert!(read_npy(b"\x93NUMPY\x01\x00\xff\xff").is_err());
        assert!(read_npy(b"nope").is_err());
        let t = Tensor::from_f64(DType::F32, vec![4], &[1.0; 4]);
        let mut bytes = write_npy(&t).unwrap();
        bytes.truncate(bytes.len() - 3);
        assert!(read_npy(&bytes).is_err());
        assert!(read_npz_bytes(b"garbage", "g").is_err());
    }
}
