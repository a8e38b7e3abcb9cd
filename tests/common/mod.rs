//! Helpers shared by the integration tests: reading a fixture archive's zip entries and
//! writing edited entries back into a new zip in memory.

#![allow(dead_code)]

use std::io::{Cursor, Read, Write};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

/// A zip's entries, in order: (name, bytes).
pub type Entries = Vec<(String, Vec<u8>)>;

pub fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub fn read_fixture(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading fixture {path}: {e}"))
}

pub fn entries_of(bytes: &[u8]) -> Entries {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).expect("fixture is a zip");
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().to_string(), data)
        })
        .collect()
}

pub fn write_zip_with(entries: &Entries, method: CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(method).large_file(false);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub fn write_zip(entries: &Entries) -> Vec<u8> {
    write_zip_with(entries, CompressionMethod::Stored)
}
