//! Compiles proto/eddy.proto with protox (a pure-Rust protobuf compiler), so a fresh machine
//! needs no protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/eddy.proto");
    let fds = protox::compile(["eddy.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
