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
    /// Compile a `.pt2` archive into a `.kiln` artifact.
    Compile(cmd::compile::CompileArgs),
    /// Describe a model (`.pt2`: signature, weights, op histogram, unsupported ops) or a
    /// compiled artifact (`.kiln`: format, signature, targets, kernels, memory, plan).
    Inspect {
        /// A `.pt2` archive or a `.kiln` artifact.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a model (`.kiln` natively, `.pt2` with the reference interpreter) and optionally
    /// check its outputs.
    Run(cmd::run::RunArgs),
    /// Measure latency and throughput of a compiled model.
    Bench(cmd::bench::BenchArgs),
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
        Command::Compile(args) => cmd::compile::run(&args),
        Command::Bench(args) => cmd::bench::run(&args),
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
