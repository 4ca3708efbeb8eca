//! Builds the disk-fault shim (`faultfs/faultfs.c`) that the end-to-end tests preload into
//! raftd processes (LD_PRELOAD) to make their disk full, fail an fsync or stall it. Tests
//! only: nothing of it is in the raftd binary.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=faultfs/faultfs.c");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let so = out.join("libfaultfs.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o"])
        .arg(&so)
        .arg("faultfs/faultfs.c")
        .arg("-ldl")
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` to build the test shim: {e}"));
    assert!(status.success(), "building faultfs/faultfs.c failed");
    println!("cargo:rustc-env=RAFTD_FAULTFS_SO={}", so.display());
}
