//! Compiles the plugin protocol with protox (pure Rust, no system `protoc`)
//! and generates the tonic client. The proto lives in the repository's
//! `proto/` tree, shared with plugin authors, so it is read from there.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/writ/provider");
    let descriptors = protox::compile(["writ/provider/v1/provider.proto"], ["../../proto"])?;
    tonic_prost_build::configure().build_server(false).build_client(true).compile_fds(descriptors)?;
    Ok(())
}
