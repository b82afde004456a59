//! `ledger-bench`: dc-ledger against PostgreSQL; see `dc_qa::bench`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    match dc_qa::bench::run(dc_qa::bench::Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledger-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
