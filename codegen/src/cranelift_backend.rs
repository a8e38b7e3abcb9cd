//! The Cranelift backend behind the [`Backend`] trait: `x86_64` (native) and `aarch64`
//! (cross-compiled; checked by compiling only).

use crate::cranelift::{compile_object, CompileOptions};
use crate::kernel::Kernel;
use crate::target::{Backend, CodeObject, CodegenError, CodegenOptions, Listing};

pub struct CraneliftBackend;

fn triple(target: &str) -> Option<&'static str> {
    match target {
        "x86_64" => Some("x86_64-unknown-linux-gnu"),
        "aarch64" => Some("aarch64-unknown-linux-gnu"),
        _ => None,
    }
}

impl Backend for CraneliftBackend {
    fn name(&self) -> &'static str {
        "cranelift"
    }

    fn targets(&self) -> &'static [&'static str] {
        &["x86_64", "aarch64"]
    }

    /// Cranelift never fuses operations, so `fp_contract` changes nothing here.
    fn compile(&self, kernels: &[Kernel], target: &str, opts: &CodegenOptions) -> Result<CodeObject, CodegenError> {
        let triple = triple(target).ok_or_else(|| CodegenError::UnsupportedTarget {
            backend: self.name().into(),
            target: target.into(),
            supported: self.targets().join(", "),
        })?;
        let opts = CompileOptions { disasm: opts.listings, ..CompileOptions::default() };
        // A panic inside Cranelift (an instruction it cannot lower for this ISA) becomes an
        // error instead of crossing into the caller.
        let result = std::panic::catch_unwind(|| compile_object(kernels, triple, &opts));
        let obj = match result {
            Ok(r) => r.map_err(|e| CodegenError::Backend { backend: self.name().into(), reason: e.to_string() })?,
            Err(p) => {
                let what =
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                return Err(CodegenError::Backend {
                    backend: self.name().into(),
                    reason: format!(
                        "Cranelift failed while compiling for {target}: {}",
                        what.unwrap_or_else(|| "internal error".into())
                    ),
                });
            }
        };
        Ok(CodeObject {
            target: target.into(),
            format: "elf-relocatable".into(),
            bytes: obj.bytes,
            symbols: obj.symbols,
            cpu_features: Vec::new(),
            listings: std::iter::once(("clif", Listing::PerKernel(obj.clif)))
                .chain(obj.asm.map(|a| ("asm", Listing::PerKernel(a))))
                .collect(),
        })
    }
}
