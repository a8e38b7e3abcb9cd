//! `kiln`: the command-line program. Parses arguments and calls into the library crates; the
//! logic lives in `kiln-frontend`, `kiln-ir` and friends.

mod cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kiln", version, about = "Ahead-of-time compiler for exported PyTorch models (.pt2)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model: signature, weights, op histogram, unsupported ops.
    Inspect {
        /// A `.pt2` archive written by `torch.export.save`.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a model (with the reference interpreter) and optionally check its outputs.
    Run(cmd::run::RunArgs),
    /// Print a model's kiln IR in the text form.
    Ir {
        model: PathBuf,
    },
    /// List the supported ATen ops (`--markdown` writes the docs/ops.md table).
    Ops {
        #[arg(long)]
        markdown: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { model, json } => cmd::inspect::run(&model, json),
        Command::Run(args) => cmd::run::run(&args),
        Command::Ir { model } => cmd::inspect::print_ir(&model),
        Command::Ops { markdown } => cmd::ops::run(markdown),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
