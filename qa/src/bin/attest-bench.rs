//! `attest-bench`: attestation verification rate; see `dc_qa::attest_bench`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    match dc_qa::attest_bench::run(dc_qa::attest_bench::Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("attest-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
