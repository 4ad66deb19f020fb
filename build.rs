//! Builds the workload agent that becomes the guests' init: plain rustc, std
//! only, statically linked, so it runs in a bare initramfs. The crate embeds
//! the binary (`guest::image`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/agent");
    println!("cargo:rerun-if-changed=src/wire.rs");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("migsuite-agent");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition=2021",
            "-O",
            "-C",
            "target-feature=+crt-static",
            "--crate-type=bin",
            "--crate-name=migsuite_agent",
        ])
        .arg("-o")
        .arg(&out)
        .arg("src/agent/main.rs")
        .status()
        .expect("running rustc for the agent");
    assert!(status.success(), "building the workload agent failed");
}
