//! Locates the kernel object built by `cargo xtask build-ebpf` so `src/capture.rs` can embed it.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=SNIFFER_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let object = env::var_os("SNIFFER_EBPF_OBJECT").map_or_else(default_object, PathBuf::from);
    println!("cargo:rerun-if-changed={}", object.display());
    if !object.is_file() {
        eprintln!(
            "error: the kernel object {} does not exist.\n\
             Run `cargo xtask build-ebpf` first: it installs what the eBPF build needs and builds it.",
            object.display()
        );
        std::process::exit(1);
    }
    println!("cargo:rustc-env=SNIFFER_EBPF_OBJECT={}", object.display());
}

fn default_object() -> PathBuf {
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("bpfel-unknown-none/release/sniffer-ebpf")
}
