//! `dcctl`: parses arguments, runs the command, reports errors in one line.

use std::process::ExitCode;

use clap::Parser;
use dc_controller::{cli, exit};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return exit::report(&exit::CliError::local(format!(
                "cannot start the runtime: {e}"
            )))
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}
