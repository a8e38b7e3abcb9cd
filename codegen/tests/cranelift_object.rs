//! `cranelift::compile_object` writes valid ELF relocatables for x86-64 and aarch64: the right
//! machine, one defined global function per kernel, no undefined symbols and no relocations
//! (so the runtime's loader needs no externs), with CLIF and disassembly listings.

use kiln_codegen::cranelift::{compile_object, CompileOptions, CraneliftError, X86Level, TRIPLES};
use kiln_codegen::kernel::{lower_graph, math, Kernel};
use object::{Architecture, BinaryFormat, Object, ObjectKind, ObjectSection, ObjectSymbol};
use std::path::PathBuf;

fn kernels(models: &[&str]) -> Vec<Kernel> {
    let mut out = Vec::new();
    for m in models {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(format!("{m}.t215.core.pt2"));
        let model = kiln_frontend::load(&path).unwrap();
        let prog = lower_graph(&model.graph).unwrap();
        out.extend(prog.kernels.iter().map(math::expand));
    }
    out
}

#[test]
fn objects_are_elf_relocatables_without_externs() {
    let ks = kernels(&["mlp", "resblock", "encoder", "gpt", "mobile", "dynbatch", "views", "dynseq"]);
    for (triple, machine, arch) in
        [(TRIPLES[0], 62u16, Architecture::X86_64), (TRIPLES[1], 183u16, Architecture::Aarch64)]
    {
        let opts = CompileOptions { disasm: true, ..CompileOptions::default() };
        let obj = compile_object(&ks, triple, &opts).unwrap_or_else(|e| panic!("{triple}: {e}"));
        assert_eq!(&obj.bytes[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([obj.bytes[18], obj.bytes[19]]), machine, "{triple}");
        let file = object::File::parse(&*obj.bytes).unwrap();
        assert_eq!(file.format(), BinaryFormat::Elf);
        assert_eq!(file.kind(), ObjectKind::Relocatable);
        assert_eq!(file.architecture(), arch);
        assert_eq!(obj.symbols.len(), ks.len());
        let mut unique = obj.symbols.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ks.len(), "symbols are unique");
        for s in &obj.symbols {
            let sym = file.symbol_by_name(s).unwrap_or_else(|| panic!("{triple}: no symbol {s}"));
            assert!(sym.is_definition() && sym.is_global(), "{s}");
            assert_eq!(sym.kind(), object::SymbolKind::Text, "{s}");
            assert!(sym.size() > 0, "{s}");
        }
        let undefined: Vec<String> =
            file.symbols().filter(|s| s.is_undefined()).map(|s| s.name().unwrap_or("?").to_string()).collect();
        assert!(undefined.is_empty(), "{triple}: undefined symbols {undefined:?}");
        for section in file.sections() {
            assert_eq!(section.relocations().count(), 0, "{triple}: relocations in {}", section.name().unwrap_or("?"));
        }
        assert_eq!(obj.clif.len(), ks.len());
        assert!(obj.clif.iter().all(|c| c.starts_with("function ")));
        let asm = obj.asm.as_ref().expect("disassembly was asked for");
        assert!(asm.iter().all(|a| !a.is_empty()));
    }
}

#[test]
fn output_is_deterministic_and_levels_compile() {
    let ks = kernels(&["mlp"]);
    let a = compile_object(&ks, TRIPLES[0], &CompileOptions::default()).unwrap();
    let b = compile_object(&ks, TRIPLES[0], &CompileOptions::default()).unwrap();
    assert_eq!(a.bytes, b.bytes);
    assert_eq!(a.clif, b.clif);
    assert!(a.asm.is_none());
    let v3 = CompileOptions { x86_level: X86Level::V3, ..CompileOptions::default() };
    compile_object(&ks, TRIPLES[0], &v3).unwrap();
    let e = compile_object(&ks, "x86_64-pc-windows-msvc", &v3).unwrap_err();
    assert!(matches!(e, CraneliftError::Target { .. }), "{e}");
}
