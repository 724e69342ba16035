//! Generates the `writ.v1` client stubs from the repository's
//! `proto/writ/v1/writ.proto` with protox (pure Rust, no system `protoc`),
//! as the `writ` crate does for its server. Only clients are generated,
//! and the messages that hold secrets get no derived `Debug` (the crate
//! writes one that redacts them).

use std::path::PathBuf;

/// Messages whose fields are credentials.
const SECRET_MESSAGES: [&str; 3] = [".writ.v1.BearerToken", ".writ.v1.Password", ".writ.v1.AwsSession"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let descriptors = protox::compile(["writ/v1/writ.proto"], [&proto])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .skip_debug(SECRET_MESSAGES)
        .compile_fds(descriptors)?;
    Ok(())
}
