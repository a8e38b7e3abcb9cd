//! `kiln ops`: the supported ATen ops, as text or as the `docs/ops.md` table.

use anyhow::Result;
use std::process::ExitCode;

pub fn run(markdown: bool) -> Result<ExitCode> {
    if markdown {
        print!("{}", kiln_frontend::lower::ops_markdown());
    } else {
        for e in kiln_frontend::lower::OPS {
            println!("aten.{:<36} {}", e.name, e.doc);
        }
    }
    Ok(ExitCode::SUCCESS)
}
