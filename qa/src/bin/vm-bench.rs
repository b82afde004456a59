//! `vm-bench`: rent-to-answer phases and supervisor overhead per VM operation; see `dc_qa::vm_bench`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    match dc_qa::vm_bench::run(dc_qa::vm_bench::Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vm-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
