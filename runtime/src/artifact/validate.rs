//! Checks of a manifest's internal consistency, shared by the writer (so it never writes an
//! artifact the reader refuses) and the reader (so the executor can index without checking).

use std::collections::HashSet;

use crate::manifest::{BufferRef, Manifest, SizeExpr, Step};

/// `product(shape) * elem_size`, or why it cannot be computed.
pub(crate) fn weight_size(shape: &[i64], elem_size: usize) -> Result<u64, String> {
    let mut n: u64 = elem_size as u64;
    for &d in shape {
        let d = u64::try_from(d).map_err(|_| format!("negative dim {d} in shape {shape:?}"))?;
        n = n.checked_mul(d).ok_or_else(|| format!("size of shape {shape:?} overflows"))?;
    }
    Ok(n)
}

fn check_expr(e: &SizeExpr, nsym: usize, what: &dyn Fn() -> String) -> Result<(), String> {
    for (mono, _) in &e.terms {
        if let Some(&s) = mono.iter().find(|&&s| s as usize >= nsym) {
            return Err(format!("{}: symbol {s} out of range ({nsym} symbols)", what()));
        }
    }
    Ok(())
}

/// Everything except where weights and code objects sit in the file.
pub(crate) fn validate_manifest(m: &Manifest) -> Result<(), String> {
    let sig = &m.signature;
    let nsym = sig.symbols.len();
    for (i, s) in sig.symbols.iter().enumerate() {
        if let Some(max) = s.max {
            if max < s.min {
                return Err(format!("symbol {i} ({}) has range [{}, {max}], empty", s.name, s.min));
            }
        }
    }
    for (kind, list) in [("input", &sig.inputs), ("output", &sig.outputs)] {
        for (i, t) in list.iter().enumerate() {
            for (d, e) in t.shape.iter().enumerate() {
                check_expr(e, nsym, &|| format!("{kind} {i} ({}) dim {d}", t.name))?;
            }
        }
    }
    for (i, w) in m.weights.iter().enumerate() {
        let size = weight_size(&w.shape, w.dtype.size_bytes()).map_err(|e| format!("weight {i} ({}): {e}", w.name))?;
        if size != w.bytes {
            return Err(format!(
                "weight {i} ({}): {:?}{:?} needs {size} bytes, the manifest says {}",
                w.name, w.dtype, w.shape, w.bytes
            ));
        }
    }
    let mut targets = HashSet::new();
    for c in &m.code_objects {
        if c.target.is_empty() {
            return Err("a code object has an empty target name".into());
        }
        if !targets.insert(c.target.as_str()) {
            return Err(format!("two code objects for target {}", c.target));
        }
    }
    check_expr(&m.arena_bytes, nsym, &|| "arena_bytes".into())?;
    let buf = |b: &BufferRef, step: usize| -> Result<(), String> {
        let (what, i, n) = match b {
            BufferRef::Input(i) => ("input", *i, sig.inputs.len()),
            BufferRef::Output(i) => ("output", *i, sig.outputs.len()),
            BufferRef::Weight(i) => ("weight", *i, m.weights.len()),
            BufferRef::Scratch { offset, bytes } => {
                check_expr(offset, nsym, &|| format!("plan step {step}: scratch offset"))?;
                return check_expr(bytes, nsym, &|| format!("plan step {step}: scratch bytes"));
            }
        };
        if i as usize >= n {
            return Err(format!("plan step {step}: {what} {i} out of range ({n} {what}s)"));
        }
        Ok(())
    };
    for (s, step) in m.plan.iter().enumerate() {
        match step {
            Step::Launch { kernel, buffers, range } => {
                let k = m.kernels.get(*kernel as usize).ok_or_else(|| {
                    format!("plan step {s}: kernel {kernel} out of range ({} kernels)", m.kernels.len())
                })?;
                if buffers.len() != k.buffers as usize {
                    return Err(format!(
                        "plan step {s}: kernel {kernel} ({}) takes {} buffers, the launch passes {}",
                        k.name,
                        k.buffers,
                        buffers.len()
                    ));
                }
                for b in buffers {
                    buf(b, s)?;
                }
                check_expr(range, nsym, &|| format!("plan step {s}: range"))?;
            }
            Step::Copy { from, to, bytes } => {
                buf(from, s)?;
                buf(to, s)?;
                check_expr(bytes, nsym, &|| format!("plan step {s}: bytes"))?;
            }
        }
    }
    Ok(())
}
