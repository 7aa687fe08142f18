//! Compiles `library/**.proto` with protox (pure Rust: no system `protoc`) and writes the
//! descriptor set that gRPC reflection serves.
use std::{env, path::PathBuf};

const PROTOS: [&str; 4] = [
    "library/book/v1/book.proto",
    "library/borrow/v1/borrow.proto",
    "library/dashboard/v1/dashboard.proto",
    "library/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut compiler = protox::Compiler::new(["."])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    std::fs::write(
        out_dir.join("library_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    for file in compiler.files() {
        if let Some(path) = file.path() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
