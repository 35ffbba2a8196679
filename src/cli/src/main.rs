//! The `strata` binary: parses the command line and dispatches.
//!
//! Every error ends here as one line on stderr, `strata: error: ...`, and a
//! non-zero exit status (see [`exit`]).

mod args;
mod bench;
mod blk;
mod exit;
mod image;
mod run;
mod table;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::args::{BenchCommand, Cli, Command};
use crate::exit::{Failure, STATUS_STRATA_FAILED};

fn main() -> ExitCode {
    let main_start_ns = strata_vmm::vcpu::monotonic_ns();
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("STRATA_LOG", "warn"))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            eprintln!("strata: error: {}", first_line_of(&e));
            return ExitCode::from(STATUS_STRATA_FAILED);
        }
    };
    let result = match &cli.command {
        Command::Run(args) => run::run(args, main_start_ns),
        Command::Image(args) => image::run(args),
        Command::Blk(blk::BlkCommand::Serve(args)) => blk::serve(args),
        Command::Bench(BenchCommand::Boot(args)) => bench::boot(args),
        Command::Bench(BenchCommand::Blk(args)) => bench::blk::run(args),
        Command::Bench(BenchCommand::GuestDisk(args)) => bench::guest_disk::run(args),
    };
    match result {
        Ok(status) => ExitCode::from(status.code()),
        Err(Failure(message)) => {
            eprintln!("strata: error: {message}");
            ExitCode::from(STATUS_STRATA_FAILED)
        }
    }
}

/// clap's error, reduced to its first line plus where to look for help.
fn first_line_of(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    format!("{line} (see `strata --help`)")
}
