//! The `.kiln` container: round trips, determinism, and a typed error (never a panic) for each
//! class of bad file.

use std::path::Path;

use kiln_runtime::artifact::SectionRef;
use kiln_runtime::manifest::{
    BufferRef, ElemType, KernelSpec, Manifest, Signature, SizeExpr, Step, SymbolSpec, TensorSpec, TileGrid,
};
use kiln_runtime::{describe, write_artifact, Artifact, ArtifactError, ArtifactWriter, CodeObjectData, WeightData};

fn sym(i: u32) -> SizeExpr {
    SizeExpr { terms: vec![(vec![i], 1)] }
}

fn manifest() -> Manifest {
    Manifest {
        compiler_version: "kiln 0.1.0 (test)".into(),
        model_name: "tiny".into(),
        signature: Signature {
            symbols: vec![
                SymbolSpec { name: "batch".into(), min: 1, max: Some(64) },
                SymbolSpec { name: "seq".into(), min: 2, max: None },
            ],
            inputs: vec![
                TensorSpec { name: "x".into(), dtype: ElemType::F32, shape: vec![sym(0), SizeExpr::constant(3)] },
                TensorSpec { name: "mask".into(), dtype: ElemType::Bool, shape: vec![sym(0), sym(1)] },
            ],
            outputs: vec![TensorSpec {
                name: "y".into(),
                dtype: ElemType::F32,
                shape: vec![sym(0), SizeExpr::constant(7)],
            }],
        },
        weights: vec![],
        code_objects: vec![],
        kernels: vec![
            KernelSpec {
                name: "k0".into(),
                symbol: "kiln_k0".into(),
                buffers: 3,
                work_per_item: 0,
                gpu_threads_per_item: None,
                gpu_tiles: Some(TileGrid {
                    rows_per_item: SizeExpr::constant(8),
                    batch_rows: Some(SizeExpr::constant(4)),
                    row_tile: 64,
                    columns: sym(1),
                    column_tile: 64,
                    matrix: Some("f16".into()),
                }),
            },
            KernelSpec {
                name: "k1".into(),
                symbol: "kiln_k1".into(),
                buffers: 2,
                work_per_item: 12,
                gpu_threads_per_item: Some(SizeExpr::constant(64)),
                gpu_tiles: None,
            },
        ],
        arena_bytes: SizeExpr { terms: vec![(vec![0], 28), (vec![0, 1], 4), (vec![], 64)] },
        plan: vec![
            Step::Launch {
                kernel: 0,
                buffers: vec![
                    BufferRef::Input(0),
                    BufferRef::Weight(0),
                    BufferRef::Scratch {
                        offset: SizeExpr::constant(0),
                        bytes: SizeExpr { terms: vec![(vec![0], 28)] },
                    },
                ],
                range: sym(0),
            },
            Step::Launch { kernel: 1, buffers: vec![BufferRef::Weight(2), BufferRef::Output(0)], range: sym(0) },
            Step::Copy {
                from: BufferRef::Input(1),
                to: BufferRef::Scratch { offset: SizeExpr::constant(64), bytes: sym(1) },
                bytes: sym(1),
            },
        ],
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1).collect()
}

struct Data {
    weights: Vec<(String, ElemType, Vec<i64>, Vec<u8>)>,
    code: Vec<(String, String, Vec<u8>)>,
}

fn data() -> Data {
    Data {
        weights: vec![
            ("w.f32".into(), ElemType::F32, vec![3, 7], pattern(84, 1)),
            ("w.u8".into(), ElemType::U8, vec![5], pattern(5, 2)),
            ("w.f16".into(), ElemType::F16, vec![7, 3], pattern(42, 3)),
            ("w.empty".into(), ElemType::I64, vec![0, 4], vec![]),
            ("w.bool".into(), ElemType::Bool, vec![], pattern(1, 4)),
            ("w.i64".into(), ElemType::I64, vec![9], pattern(72, 5)),
        ],
        code: vec![
            ("x86_64".into(), "elf-relocatable".into(), pattern(131, 6)),
            ("sm_90".into(), "ptx".into(), pattern(37, 7)),
        ],
    }
}

impl Data {
    fn weights(&self) -> Vec<WeightData<'_>> {
        self.weights.iter().map(|(n, d, s, b)| WeightData { name: n, dtype: *d, shape: s, bytes: b }).collect()
    }
    fn code(&self) -> Vec<CodeObjectData<'_>> {
        self.code.iter().map(|(t, f, b)| CodeObjectData { target: t, format: f, bytes: b, cpu_features: &[] }).collect()
    }
}

fn sample_bytes() -> Vec<u8> {
    let d = data();
    ArtifactWriter::new(&manifest(), &d.weights(), &d.code()).unwrap().to_bytes()
}

fn open_bytes(dir: &Path, bytes: &[u8]) -> Result<Artifact, ArtifactError> {
    let p = dir.join("case.kiln");
    std::fs::write(&p, bytes).unwrap();
    Artifact::open(&p)
}

// ---- an encoder written from the module doc, independent of the writer ----

fn le32(v: &mut [u8], at: usize, x: u32) {
    v[at..at + 4].copy_from_slice(&x.to_le_bytes());
}

fn rd32(v: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(v[at..at + 4].try_into().unwrap())
}

fn rd64(v: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(v[at..at + 8].try_into().unwrap())
}

fn fix_header_crc(v: &mut [u8]) {
    let hsize = rd32(v, 12) as usize;
    let mut h = v[..hsize].to_vec();
    h[24..28].fill(0);
    let crc = crc32fast::hash(&h);
    v[24..28].copy_from_slice(&crc.to_le_bytes());
}

/// Offset of section-table entry `i` (for the sample's compiler version).
fn entry(v: &[u8], i: usize) -> usize {
    let n = rd32(v, 28) as usize;
    (32 + n).div_ceil(8) * 8 + 8 + 32 * i
}

/// Builds a container from (kind code, alignment, bytes) following the spec.
fn build(compiler: &str, sections: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let n = compiler.len();
    let tp = (32 + n).div_ceil(8) * 8;
    let hsize = tp + 8 + 32 * sections.len();
    let mut v = vec![0u8; hsize];
    v[..8].copy_from_slice(b"KILNART\0");
    le32(&mut v, 8, 1);
    le32(&mut v, 12, hsize as u32);
    le32(&mut v, 28, n as u32);
    v[32..32 + n].copy_from_slice(compiler.as_bytes());
    le32(&mut v, tp, sections.len() as u32);
    for (i, (kind, align, bytes)) in sections.iter().enumerate() {
        let off = v.len().div_ceil(*align as usize) * *align as usize;
        v.resize(off, 0);
        v.extend_from_slice(bytes);
        let e = tp + 8 + 32 * i;
        le32(&mut v, e, *kind);
        le32(&mut v, e + 4, *align);
        v[e + 8..e + 16].copy_from_slice(&(off as u64).to_le_bytes());
        v[e + 16..e + 24].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        le32(&mut v, e + 24, crc32fast::hash(bytes));
    }
    let size = v.len() as u64;
    v[16..24].copy_from_slice(&size.to_le_bytes());
    fix_header_crc(&mut v);
    v
}

/// The sample's sections re-encoded through `build` with the manifest JSON replaced.
fn rebuild_with_manifest(m: &Manifest) -> Vec<u8> {
    let d = data();
    let w = ArtifactWriter::new(&manifest(), &d.weights(), &d.code()).unwrap();
    let bytes = w.to_bytes();
    let mut secs: Vec<(u32, u32, Vec<u8>)> = w
        .sections()
        .iter()
        .map(|s| (s.kind.code(), s.alignment, bytes[s.offset as usize..(s.offset + s.length) as usize].to_vec()))
        .collect();
    secs[0].2 = serde_json::to_vec(m).unwrap();
    build(&m.compiler_version, &secs)
}

fn stored_manifest() -> Manifest {
    let d = data();
    ArtifactWriter::new(&manifest(), &d.weights(), &d.code()).unwrap().manifest().clone()
}

// ---- good files ----

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.kiln");
    let d = data();
    let stored = write_artifact(&path, &manifest(), &d.weights(), &d.code()).unwrap();
    let a = Artifact::open(&path).unwrap();
    assert_eq!(a.manifest(), &stored);
    assert_eq!(a.format_version(), kiln_runtime::ARTIFACT_FORMAT_VERSION);
    assert_eq!(a.compiler_version(), "kiln 0.1.0 (test)");
    // The stored manifest is the input plus the filled-in weights and code objects.
    let mut expect = manifest();
    expect.weights = stored.weights.clone();
    expect.code_objects = stored.code_objects.clone();
    assert_eq!(stored, expect);
    assert_eq!(stored.weights.len(), 6);
    for (i, (name, dtype, shape, bytes)) in d.weights.iter().enumerate() {
        let spec = &a.manifest().weights[i];
        assert_eq!((&spec.name, spec.dtype, &spec.shape), (name, *dtype, shape));
        assert_eq!(spec.offset % 64, 0);
        let got = a.weight_bytes(i).unwrap();
        assert_eq!(got, &bytes[..], "weight {name}");
        assert_eq!(got.as_ptr() as usize % 64, 0, "weight {name} not 64-byte aligned in memory");
    }
    assert!(a.weight_bytes(6).is_none());
    assert_eq!(a.weights_section().as_ptr() as usize % 64, 0);
    assert_eq!(a.targets().collect::<Vec<_>>(), ["x86_64", "sm_90"]);
    assert_eq!(a.code_object("x86_64").unwrap(), &d.code[0].2[..]);
    assert_eq!(a.code_object("sm_90").unwrap(), &d.code[1].2[..]);
    assert!(a.code_object("gfx942").is_none());
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["tiny.kiln"]);
}

#[test]
fn artifact_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Artifact>();
}

#[test]
fn deterministic_and_matches_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let d = data();
    let (p1, p2) = (dir.path().join("a.kiln"), dir.path().join("b.kiln"));
    write_artifact(&p1, &manifest(), &d.weights(), &d.code()).unwrap();
    write_artifact(&p2, &manifest(), &d.weights(), &d.code()).unwrap();
    let (b1, b2) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
    assert_eq!(b1, b2);
    assert_eq!(b1, sample_bytes());
    // Overwriting an existing artifact replaces it.
    write_artifact(&p1, &manifest(), &d.weights(), &d.code()).unwrap();
    assert_eq!(std::fs::read(&p1).unwrap(), b2);
    // An encoder written from the module doc gives the same bytes.
    assert_eq!(rebuild_with_manifest(&stored_manifest()), b1);
    assert_eq!(&b1[..8], b"KILNART\0");
}

#[test]
fn a_manifest_that_already_lists_weights_is_checked() {
    let d = data();
    let mut m = stored_manifest();
    // Same weights and code objects, stale offsets: accepted and recomputed.
    m.weights[1].offset = 12345;
    m.code_objects[0].section = 99;
    let w = ArtifactWriter::new(&m, &d.weights(), &d.code()).unwrap();
    assert_eq!(w.manifest(), &stored_manifest());
    // A different weight list is refused.
    m.weights[2].name = "other".into();
    let e = ArtifactWriter::new(&m, &d.weights(), &d.code()).unwrap_err();
    assert!(matches!(e, ArtifactError::Invalid(ref s) if s.contains("other")), "{e}");
}

#[test]
fn writer_refuses_bad_inputs() {
    let d = data();
    let mut ws = d.weights();
    ws[1].bytes = &[1, 2, 3];
    let e = ArtifactWriter::new(&manifest(), &ws, &d.code()).unwrap_err();
    assert!(e.to_string().contains("w.u8"), "{e}");
    let mut cs = d.code();
    cs[1].target = "x86_64";
    let e = ArtifactWriter::new(&manifest(), &d.weights(), &cs).unwrap_err();
    assert!(e.to_string().contains("two code objects"), "{e}");
    let mut m = manifest();
    m.plan.push(Step::Launch { kernel: 9, buffers: vec![], range: sym(0) });
    let e = ArtifactWriter::new(&m, &d.weights(), &d.code()).unwrap_err();
    assert!(e.to_string().contains("kernel 9"), "{e}");
    let mut m = manifest();
    m.plan.push(Step::Launch { kernel: 1, buffers: vec![BufferRef::Input(0)], range: sym(0) });
    let e = ArtifactWriter::new(&m, &d.weights(), &d.code()).unwrap_err();
    assert!(e.to_string().contains("takes 2 buffers"), "{e}");
    // A failed write leaves nothing behind.
    let dir = tempfile::tempdir().unwrap();
    assert!(write_artifact(dir.path().join("x.kiln"), &m, &d.weights(), &d.code()).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn no_weights_no_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = manifest();
    m.plan.clear();
    let path = dir.path().join("empty.kiln");
    write_artifact(&path, &m, &[], &[]).unwrap();
    let a = Artifact::open(&path).unwrap();
    assert_eq!(a.weights_section().len(), 0);
    assert_eq!(a.targets().count(), 0);
    assert!(describe(&a).contains("(none)"));
}

#[test]
fn describe_says_what_is_inside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.kiln");
    let d = data();
    write_artifact(&path, &manifest(), &d.weights(), &d.code()).unwrap();
    let text = describe(&Artifact::open(&path).unwrap());
    for needle in [
        "format version  1",
        "kiln 0.1.0 (test)",
        "symbol batch in [1, 64]",
        "symbol seq in [2, inf]",
        "input  x: f32[batch, 3]",
        "input  mask: bool[batch, seq]",
        "output y: f32[batch, 7]",
        "x86_64 (elf-relocatable): 131 bytes",
        "sm_90 (ptx): 37 bytes",
        "kernels           2",
        "    0 k0 (kiln_k0, 3 buffers; GPU: 64x64 tiles of (8) x seq per 4 rows, in shared memory, f16 matrix instructions)",
        "    1 k1 (kiln_k1, 2 buffers; GPU: 64 threads per item)",
        "weights           6 (204 bytes",
        "arena             28*batch + 4*batch*seq + 64 bytes",
        "plan              3 steps (2 launches, 1 copy)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

// ---- bad files ----

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_bytes(dir.path(), &[]).unwrap_err();
    assert!(matches!(e, ArtifactError::Empty { .. }), "{e}");
    assert!(e.to_string().contains("case.kiln"), "{e}");
}

#[test]
fn missing_file() {
    let e = Artifact::open("/nonexistent/kiln/model.kiln").unwrap_err();
    assert!(matches!(e, ArtifactError::Io { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/kiln/model.kiln"), "{e}");
}

#[test]
fn truncated_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = sample_bytes();
    for cut in 1..bytes.len() {
        match open_bytes(dir.path(), &bytes[..cut]) {
            Err(ArtifactError::Truncated { len, needed, .. }) => {
                assert_eq!(len, cut as u64);
                assert!(needed > len);
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn trailing_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = sample_bytes();
    bytes.push(0);
    let e = open_bytes(dir.path(), &bytes).unwrap_err();
    assert!(matches!(e, ArtifactError::Malformed { what: "file", .. }), "{e}");
}

#[test]
fn flipped_byte_in_each_section_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = data();
    let w = ArtifactWriter::new(&manifest(), &d.weights(), &d.code()).unwrap();
    let bytes = w.to_bytes();
    assert_eq!(w.sections().len(), 4);
    for (i, s) in w.sections().iter().enumerate() {
        for at in [s.offset, s.offset + s.length / 2, s.offset + s.length - 1] {
            let mut b = bytes.clone();
            b[at as usize] ^= 0x10;
            let e = open_bytes(dir.path(), &b).unwrap_err();
            let want = SectionRef::Section { index: i as u32, kind: s.kind };
            assert!(matches!(e, ArtifactError::Checksum { section, .. } if section == want), "byte {at}: {e}");
            assert!(e.to_string().contains(&format!("section {i} ({})", s.kind)), "{e}");
        }
    }
    // The compiler version string and the section table are covered by the header checksum.
    for at in [33, entry(&bytes, 2) + 24] {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        let e = open_bytes(dir.path(), &b).unwrap_err();
        assert!(matches!(e, ArtifactError::Checksum { section: SectionRef::Header, .. }), "byte {at}: {e}");
    }
}

#[test]
fn every_flipped_byte_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = sample_bytes();
    assert!(bytes.len() < 4096, "keep the sample small: {}", bytes.len());
    for at in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[at] ^= mask;
            assert!(open_bytes(dir.path(), &b).is_err(), "flipping byte {at} with {mask:#x} was accepted");
        }
    }
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = sample_bytes();
    b[..8].copy_from_slice(b"PK\x03\x04abcd");
    let e = open_bytes(dir.path(), &b).unwrap_err();
    assert!(matches!(e, ArtifactError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a kiln artifact"), "{e}");
    // A short file that is not a prefix of the magic.
    let e = open_bytes(dir.path(), b"hi").unwrap_err();
    assert!(matches!(e, ArtifactError::BadMagic { .. }), "{e}");
}

#[test]
fn unsupported_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = sample_bytes();
    le32(&mut b, 8, 999);
    let e = open_bytes(dir.path(), &b).unwrap_err();
    assert!(matches!(e, ArtifactError::UnsupportedVersion { found: 999, supported: 1, .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("999") && msg.contains("recompile"), "{msg}");
    // Only magic + version of another version are read.
    let mut short = b[..12].to_vec();
    short.extend_from_slice(&[0xee; 3]);
    assert!(matches!(open_bytes(dir.path(), &short), Err(ArtifactError::UnsupportedVersion { .. })));
}

#[test]
fn random_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut rnd = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    for n in [1, 7, 8, 31, 100, 4096] {
        let e = open_bytes(dir.path(), &rnd(n)).unwrap_err();
        assert!(matches!(e, ArtifactError::BadMagic { .. }), "{e}");
        // Random bytes after a good magic and version.
        let mut b = b"KILNART\0\x01\0\0\0".to_vec();
        b.extend(rnd(n));
        assert!(open_bytes(dir.path(), &b).is_err());
    }
}

#[test]
fn section_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = sample_bytes();
    for (i, len) in [(1usize, u64::MAX - 10), (3, 1 << 40), (3, 38)] {
        let mut b = bytes.clone();
        let e = entry(&b, i);
        b[e + 16..e + 24].copy_from_slice(&len.to_le_bytes());
        fix_header_crc(&mut b);
        let err = open_bytes(dir.path(), &b).unwrap_err();
        assert!(matches!(err, ArtifactError::SectionBounds { index, .. } if index == i as u32), "{err}");
    }
    // An offset that is not where the layout puts it.
    let mut b = bytes.clone();
    let e = entry(&b, 2);
    let off = rd64(&b, e + 8) + 64;
    b[e + 8..e + 16].copy_from_slice(&off.to_le_bytes());
    fix_header_crc(&mut b);
    assert!(matches!(open_bytes(dir.path(), &b), Err(ArtifactError::SectionBounds { index: 2, .. })));
}

#[test]
fn absurd_section_count() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = sample_bytes();
    let tp = entry(&bytes, 0) - 8;
    for count in [u32::MAX, 65537] {
        let mut b = bytes.clone();
        le32(&mut b, tp, count);
        fix_header_crc(&mut b);
        let e = open_bytes(dir.path(), &b).unwrap_err();
        assert!(matches!(e, ArtifactError::Malformed { what: "section table", .. }), "{e}");
    }
    // A count within the limit whose table would run past the end of the file.
    let mut b = bytes.clone();
    le32(&mut b, tp, 65536);
    le32(&mut b, 12, (tp + 8 + 32 * 65536) as u32);
    let e = open_bytes(dir.path(), &b).unwrap_err();
    assert!(matches!(e, ArtifactError::Truncated { .. }), "{e}");
    // header_size absurd.
    let mut b = bytes.clone();
    le32(&mut b, 12, u32::MAX);
    assert!(matches!(open_bytes(dir.path(), &b), Err(ArtifactError::Truncated { .. })));
    // Compiler version length absurd.
    let mut b = bytes.clone();
    le32(&mut b, 28, u32::MAX);
    fix_header_crc(&mut b);
    assert!(matches!(open_bytes(dir.path(), &b), Err(ArtifactError::Malformed { what: "header", .. })));
}

#[test]
fn unknown_section_kind_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let json = serde_json::to_vec(&stored_manifest()).unwrap();
    let b = build("kiln 0.1.0 (test)", &[(1, 8, json.clone()), (7, 8, vec![1, 2, 3])]);
    assert!(matches!(open_bytes(dir.path(), &b), Err(ArtifactError::UnknownSectionKind { index: 1, kind: 7, .. })));
    let mut m = manifest();
    m.plan.clear();
    let json = serde_json::to_vec(&m).unwrap();
    let b = build(&m.compiler_version, &[(1, 8, json.clone()), (2, 64, vec![]), (1, 8, json.clone())]);
    let e = open_bytes(dir.path(), &b).unwrap_err();
    assert!(matches!(e, ArtifactError::Malformed { .. }) && e.to_string().contains("second manifest"), "{e}");
    let b = build(&m.compiler_version, &[(1, 8, json.clone())]);
    let e = open_bytes(dir.path(), &b).unwrap_err();
    assert!(e.to_string().contains("no weights section"), "{e}");
    // Weights aligned to less than 64.
    let b = build(&m.compiler_version, &[(1, 8, json.clone()), (2, 16, vec![])]);
    assert!(matches!(open_bytes(dir.path(), &b), Err(ArtifactError::Malformed { what: "section table", .. })));
    // And the minimal well-formed one opens.
    let b = build(&m.compiler_version, &[(1, 8, json), (2, 64, vec![])]);
    open_bytes(dir.path(), &b).unwrap();
}

#[test]
fn bad_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let good = stored_manifest();
    open_bytes(dir.path(), &rebuild_with_manifest(&good)).unwrap();

    // Not JSON / not a manifest.
    let d = data();
    let w = ArtifactWriter::new(&manifest(), &d.weights(), &d.code()).unwrap();
    let bytes = w.to_bytes();
    let mut secs: Vec<(u32, u32, Vec<u8>)> = w
        .sections()
        .iter()
        .map(|s| (s.kind.code(), s.alignment, bytes[s.offset as usize..(s.offset + s.length) as usize].to_vec()))
        .collect();
    for junk in [&b"{\"compiler_version\": 3}"[..], b"\xff\xfe", b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["] {
        secs[0].2 = junk.to_vec();
        let e = open_bytes(dir.path(), &build("kiln 0.1.0 (test)", &secs)).unwrap_err();
        assert!(matches!(e, ArtifactError::Manifest { section: 0, .. }), "{e}");
    }

    let check = |m: &Manifest, want: &str| {
        let e = open_bytes(dir.path(), &rebuild_with_manifest(m)).unwrap_err();
        assert!(e.to_string().contains(want), "want {want:?}: {e}");
        e
    };
    let mut m = good.clone();
    m.weights[1].offset = 65;
    let e = check(&m, "not a multiple of 64");
    assert!(matches!(e, ArtifactError::Weight { index: 1, ref name, .. } if name == "w.u8"));
    let mut m = good.clone();
    m.weights[5].offset = 1 << 20;
    assert!(matches!(check(&m, "outside the weight section"), ArtifactError::Weight { index: 5, .. }));
    let mut m = good.clone();
    m.weights[5].offset = u64::MAX - 63;
    check(&m, "outside the weight section");
    let mut m = good.clone();
    m.weights[0].bytes = 80;
    assert!(matches!(check(&m, "needs 84 bytes"), ArtifactError::ManifestInvalid { .. }));
    let mut m = good.clone();
    m.weights[0].shape = vec![i64::MAX, i64::MAX];
    check(&m, "overflows");
    let mut m = good.clone();
    m.code_objects[1].section = 1;
    check(&m, "a weights section");
    let mut m = good.clone();
    m.code_objects[1].section = 2;
    check(&m, "already another target");
    let mut m = good.clone();
    m.code_objects[1].section = u32::MAX;
    check(&m, "but there are 4");
    let mut m = good.clone();
    m.code_objects.pop();
    check(&m, "section 3 belongs to no target");
    let mut m = good.clone();
    m.plan[1] = Step::Launch { kernel: 1, buffers: vec![BufferRef::Weight(6), BufferRef::Output(0)], range: sym(0) };
    check(&m, "weight 6 out of range");
    let mut m = good.clone();
    m.arena_bytes = sym(2);
    check(&m, "symbol 2 out of range");
    let mut m = good.clone();
    m.signature.symbols[0].max = Some(0);
    check(&m, "empty");
    let mut m = good.clone();
    m.compiler_version = "someone else".into();
    let mut secs: Vec<(u32, u32, Vec<u8>)> = w
        .sections()
        .iter()
        .map(|s| (s.kind.code(), s.alignment, bytes[s.offset as usize..(s.offset + s.length) as usize].to_vec()))
        .collect();
    secs[0].2 = serde_json::to_vec(&m).unwrap();
    let e = open_bytes(dir.path(), &build("kiln 0.1.0 (test)", &secs)).unwrap_err();
    assert!(e.to_string().contains("someone else"), "{e}");
}

#[test]
fn nonzero_padding_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = data();
    let w = ArtifactWriter::new(&manifest(), &d.weights(), &d.code()).unwrap();
    let bytes = w.to_bytes();
    // The gap between the manifest and the weight section.
    let s = w.sections();
    let gap = (s[0].offset + s[0].length) as usize;
    assert!(gap < s[1].offset as usize, "the sample should have padding there");
    let mut b = bytes.clone();
    b[gap] = 1;
    let e = open_bytes(dir.path(), &b).unwrap_err();
    assert!(matches!(e, ArtifactError::Malformed { what: "padding", .. }), "{e}");
}

/// Code that needs CPU features this machine lacks is refused at load with a typed error,
/// before any of it is mapped.
#[test]
fn code_needing_missing_cpu_features_is_refused() {
    let d = data();
    let needs = vec!["warp-drive".to_string()];
    let code: Vec<CodeObjectData<'_>> = d
        .code
        .iter()
        .map(|(t, f, b)| CodeObjectData { target: t, format: f, bytes: b, cpu_features: &needs })
        .collect();
    let bytes = ArtifactWriter::new(&manifest(), &d.weights(), &code).unwrap().to_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("needs.kiln");
    std::fs::write(&path, &bytes).unwrap();
    let a = Artifact::open(&path).unwrap();
    assert_eq!(a.manifest().code_objects[0].cpu_features, needs);
    if cfg!(target_arch = "x86_64") {
        match kiln_runtime::exec::Model::load(&path) {
            Err(e @ kiln_runtime::exec::RuntimeError::CpuFeatures { .. }) => {
                assert!(e.to_string().contains("warp-drive"), "{e}")
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("loaded code that needs a missing CPU feature"),
        }
    }
}
