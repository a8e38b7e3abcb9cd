//! Tests of `kiln_runtime::loader`: loads the committed gcc-built objects in
//! `tests/data/` (see `regen.sh`), calls their functions, and feeds it damaged objects.

use kiln_runtime::loader::{LoadError, LoadedCode};

const KERNELS_NOPIC: &[u8] = include_bytes!("data/kernels_nopic.o");
const KERNELS_PIC: &[u8] = include_bytes!("data/kernels_pic.o");
const ABS32_NOPIC: &[u8] = include_bytes!("data/abs32_nopic.o");
const ABS32_PIC: &[u8] = include_bytes!("data/abs32_pic.o");
const ALL: [(&str, &[u8]); 4] = [
    ("kernels_nopic", KERNELS_NOPIC),
    ("kernels_pic", KERNELS_PIC),
    ("abs32_nopic", ABS32_NOPIC),
    ("abs32_pic", ABS32_PIC),
];

extern "C" fn kiln_test_extern(x: f32) -> f32 {
    x * 2.0 + 1.0
}

fn externs(name: &str) -> Option<usize> {
    (name == "kiln_test_extern").then_some(kiln_test_extern as extern "C" fn(f32) -> f32 as usize)
}

fn no_externs(_: &str) -> Option<usize> {
    None
}

/// Looks a function up and transmutes it to the type `F` (an `extern "C" fn`).
macro_rules! func {
    ($code:expr, $name:literal, $ty:ty) => {{
        let ptr = $code.symbol($name).unwrap_or_else(|| panic!("no function {}", $name));
        // SAFETY: the C source in tests/data/kernels.c defines the function with this signature.
        unsafe { std::mem::transmute::<*const u8, $ty>(ptr) }
    }};
}

#[cfg(target_arch = "x86_64")]
fn check_kernels(object: &[u8]) {
    let code = LoadedCode::load(object, &externs).expect("load");
    assert_eq!(
        code.function_names(),
        ["kiln_add", "kiln_bump", "kiln_call_extern", "kiln_calls", "kiln_scaled", "kiln_table", "kiln_table_sum"]
    );
    assert!(code.symbol("table").is_none() && code.symbol("kiln_scale").is_none(), "only global functions");

    let add = func!(code, "kiln_add", extern "C" fn(*const f32, *const f32, *mut f32, i64, i64));
    let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [10.0f32, 20.0, 30.0, 40.0, 50.0, 60.0];
    let mut out = [-1.0f32; 6];
    add(a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), 1, 5);
    assert_eq!(out, [-1.0, 22.0, 33.0, 44.0, 55.0, -1.0]);

    // Through the extern: f(3) + f(4) with f(x) = 2x + 1. The call reaches it directly or,
    // when it is more than 2 GiB away, through the loader's stub.
    let call_extern = func!(code, "kiln_call_extern", extern "C" fn(f32) -> f32);
    assert_eq!(call_extern(3.0), 16.0);

    let table = func!(code, "kiln_table", extern "C" fn(i64) -> f32);
    let expected = [1.5f32, 2.5, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
    for i in 0..16 {
        assert_eq!(table(i), expected[(i & 7) as usize], "table({i})");
    }
    assert_eq!(func!(code, "kiln_table_sum", extern "C" fn() -> f32)(), 6.5);

    let bump = func!(code, "kiln_bump", extern "C" fn(f32) -> f32);
    let calls = func!(code, "kiln_calls", extern "C" fn() -> i64);
    assert_eq!(calls(), 0, ".bss starts zeroed");
    assert_eq!(bump(1.5), 11.5);
    assert_eq!(bump(1.5), 13.0);
    assert_eq!(calls(), 2);
    assert_eq!(func!(code, "kiln_scaled", extern "C" fn(f32) -> f32)(2.0), 6.0, "global read through the GOT");

    // A second load has its own data.
    let again = LoadedCode::load(object, &externs).expect("second load");
    assert_eq!(func!(again, "kiln_bump", extern "C" fn(f32) -> f32)(1.0), 11.0);
    assert_eq!(calls(), 2);
    check_w_xor_x(&code);
}

/// No page of the mapping is writable and executable; the code is r-x; there are r-- and rw-
/// pages for the read-only and writable data.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn check_w_xor_x(code: &LoadedCode) {
    let range = code.memory_range();
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let mut perms = Vec::new();
    for line in maps.lines() {
        let (span, rest) = line.split_once(' ').unwrap();
        let (lo, hi) = span.split_once('-').unwrap();
        let (lo, hi) = (usize::from_str_radix(lo, 16).unwrap(), usize::from_str_radix(hi, 16).unwrap());
        if lo < range.end && hi > range.start {
            let p = &rest[..4];
            assert!(!(p.contains('w') && p.contains('x')), "writable and executable: {line}");
            perms.push(p.to_owned());
            let f = code.symbol("kiln_add").unwrap() as usize;
            if (lo..hi).contains(&f) {
                assert_eq!(p, "r-xp", "code pages");
            }
        }
    }
    for want in ["r-xp", "r--p", "rw-p"] {
        assert!(perms.iter().any(|p| p == want), "no {want} pages in {perms:?}");
    }
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn check_w_xor_x(_: &LoadedCode) {}

#[test]
#[cfg(target_arch = "x86_64")]
fn non_pic_kernels_run() {
    check_kernels(KERNELS_NOPIC);
}

#[test]
#[cfg(target_arch = "x86_64")]
fn pic_kernels_run() {
    check_kernels(KERNELS_PIC);
}

#[test]
#[cfg(target_arch = "x86_64")]
fn loaded_code_is_send_and_sync() {
    let code = std::sync::Arc::new(LoadedCode::load(KERNELS_PIC, &externs).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let code = code.clone();
            std::thread::spawn(move || {
                let f = func!(code, "kiln_call_extern", extern "C" fn(f32) -> f32);
                assert_eq!(f(t as f32), (2 * t + 1) as f32 + (2 * t + 3) as f32);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn missing_extern_is_named() {
    for (name, object) in [("kernels_nopic", KERNELS_NOPIC), ("kernels_pic", KERNELS_PIC)] {
        match LoadedCode::load(object, &no_externs) {
            Err(LoadError::UnresolvedSymbol(s)) => assert_eq!(s, "kiln_test_extern", "{name}"),
            #[cfg(not(target_arch = "x86_64"))]
            Err(LoadError::UnsupportedMachine { machine: 62, .. }) => {}
            other => panic!("{name}: expected UnresolvedSymbol, got {other:?}"),
        }
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn extern_address_through_absolute_32_bit_and_got() {
    type GetPtr = extern "C" fn() -> usize;
    let real = externs("kiln_test_extern").unwrap();
    // PIC reads it from the loader's GOT: any address works.
    let code = LoadedCode::load(ABS32_PIC, &externs).unwrap();
    assert_eq!(func!(code, "kiln_extern_address", GetPtr)(), real);

    // Non-PIC: `mov $kiln_test_extern, %eax` holds only 32 bits.
    let low = |_: &str| Some(0x1234_5678usize);
    let code = LoadedCode::load(ABS32_NOPIC, &low).unwrap();
    assert_eq!(func!(code, "kiln_extern_address", GetPtr)(), 0x1234_5678);
    let high = |_: &str| Some(0x1_0000_0000usize);
    match LoadedCode::load(ABS32_NOPIC, &high) {
        Err(e @ LoadError::RelocationOutOfRange { kind: "R_X86_64_32", .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("kiln_test_extern") && msg.contains(".text"), "{msg}");
        }
        other => panic!("expected RelocationOutOfRange, got {other:?}"),
    }
}

/// The file offset and size of the section called `name` (a minimal reader for the tests).
fn section(object: &[u8], name: &str) -> (usize, usize) {
    let rd = |o: usize, n: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&object[o..o + n]);
        u64::from_le_bytes(b)
    };
    let (shoff, shnum, shstrndx) = (rd(40, 8) as usize, rd(60, 2) as usize, rd(62, 2) as usize);
    let hdr = |i: usize| shoff + i * 64;
    let strtab = rd(hdr(shstrndx) + 24, 8) as usize;
    (0..shnum)
        .find(|&i| {
            let n = strtab + rd(hdr(i), 4) as usize;
            object[n..].starts_with(name.as_bytes()) && object[n + name.len()] == 0
        })
        .map(|i| (rd(hdr(i) + 24, 8) as usize, rd(hdr(i) + 32, 8) as usize))
        .unwrap_or_else(|| panic!("no section {name}"))
}

#[test]
#[cfg(target_arch = "x86_64")]
fn unsupported_relocation_is_typed() {
    let mut object = KERNELS_PIC.to_vec();
    let (rela, _) = section(&object, ".rela.text");
    object[rela + 8..rela + 12].copy_from_slice(&23u32.to_le_bytes()); // R_X86_64_TPOFF32
    match LoadedCode::load(&object, &externs) {
        Err(LoadError::UnsupportedRelocation { kind: 23, section }) => assert_eq!(section, ".text"),
        other => panic!("expected UnsupportedRelocation, got {other:?}"),
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn relocation_outside_its_section_is_malformed() {
    let mut object = KERNELS_PIC.to_vec();
    let (rela, _) = section(&object, ".rela.text");
    object[rela..rela + 8].copy_from_slice(&0xffff_fffeu64.to_le_bytes());
    assert!(matches!(LoadedCode::load(&object, &externs), Err(LoadError::Malformed(_))));
    object[rela..rela + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(LoadedCode::load(&object, &externs), Err(LoadError::Malformed(_))));
}

#[test]
fn header_damage_gives_typed_errors() {
    let cases: [(&str, usize, &[u8]); 5] = [
        ("magic", 0, b"\x7fELG"),
        ("32-bit class", 4, &[1]),
        ("big-endian", 5, &[2]),
        ("executable, not relocatable", 16, &[2, 0]),
        ("section header size", 58, &[40, 0]),
    ];
    for (what, at, bytes) in cases {
        let mut object = KERNELS_PIC.to_vec();
        object[at..at + bytes.len()].copy_from_slice(bytes);
        let result = LoadedCode::load(&object, &externs);
        assert!(matches!(result, Err(LoadError::Malformed(_))), "{what}: {result:?}");
    }
    for machine in [40u16, 183, 0xffff] {
        let mut object = KERNELS_PIC.to_vec();
        object[18..20].copy_from_slice(&machine.to_le_bytes());
        match LoadedCode::load(&object, &externs) {
            Err(e @ LoadError::UnsupportedMachine { machine: m, .. }) => {
                assert_eq!(m, machine);
                assert!(e.to_string().contains(std::env::consts::ARCH), "{e}");
            }
            #[cfg(target_arch = "aarch64")]
            Err(_) if machine == 183 => {} // right machine, wrong code: relocation errors.
            other => panic!("machine {machine}: expected UnsupportedMachine, got {other:?}"),
        }
    }
    assert!(matches!(LoadedCode::load(&[], &externs), Err(LoadError::Malformed(_))));
}

/// Loads a damaged object: any result but a panic is fine. A successful load is dropped
/// without calling anything (the code may be garbage).
fn load_damaged(object: &[u8]) -> &'static str {
    match LoadedCode::load(object, &externs) {
        Ok(_) => "ok",
        Err(LoadError::Malformed(_)) => "malformed",
        Err(LoadError::UnsupportedMachine { .. }) => "machine",
        Err(LoadError::UnsupportedRelocation { .. }) => "relocation",
        Err(LoadError::UnresolvedSymbol(_)) => "unresolved",
        Err(LoadError::RelocationOutOfRange { .. }) => "range",
        Err(LoadError::Unsupported(_)) => "unsupported",
        Err(e @ LoadError::Memory { .. }) => panic!("mapping failed: {e}"),
    }
}

#[test]
fn truncated_objects_never_panic() {
    for (name, object) in ALL {
        for len in 0..object.len() {
            // The section header table is at the end, so every truncation breaks the file.
            let result = LoadedCode::load(&object[..len], &externs);
            assert!(matches!(result, Err(LoadError::Malformed(_))), "{name} cut to {len}: {result:?}");
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let mut tally = std::collections::BTreeMap::new();
    for (_, object) in ALL {
        for i in 0..object.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut damaged = object.to_vec();
                damaged[i] ^= mask;
                *tally.entry(load_damaged(&damaged)).or_insert(0) += 1;
            }
        }
    }
    // Random multi-byte damage, from a fixed-seed xorshift generator.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (_, object) in ALL {
        for _ in 0..2000 {
            let mut damaged = object.to_vec();
            for _ in 0..1 + next() % 8 {
                let at = (next() % object.len() as u64) as usize;
                damaged[at] = next() as u8;
            }
            *tally.entry(load_damaged(&damaged)).or_insert(0) += 1;
        }
    }
    eprintln!("outcomes of damaged loads: {tally:?}");
    assert!(tally.get("malformed").copied().unwrap_or(0) > 0);
}
