//! The `writ` binary: see `writ --help`.
#![forbid(unsafe_code)]

use clap::Parser;

/// mimalloc rather than the system allocator: about 9 % fewer instructions
/// per issuance (ADR 0019).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = writ::cli::Cli::parse();
    let runtime = match writ::runtime::build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(writ::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            match error.downcast_ref::<tonic::Status>() {
                Some(status) => {
                    eprintln!("error: {:?}: {}", status.code(), status.message());
                    // What a plaintext client sees from a TLS listener: the
                    // connection fails below gRPC, in one of a few ways.
                    let below_grpc = ["h2 protocol error", "transport error", "operation was canceled"]
                        .iter()
                        .any(|said| status.message().contains(said));
                    if below_grpc {
                        eprintln!(
                            "hint: the connection failed below gRPC; if Writ serves TLS, use an https:// \
                             endpoint (with --ca or WRIT_CA for a private CA)"
                        );
                    }
                }
                None => eprintln!("error: {error:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}
