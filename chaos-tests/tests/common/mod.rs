//! Shared by the harness's integration tests.

use std::path::PathBuf;
use std::process::Command;

/// The `control-plane` binary beside the harness's, built if missing.
pub fn control_plane() -> PathBuf {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_chaos-tests"));
    let bin = me.with_file_name("control-plane");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = me.parent().and_then(|d| d.file_name()) == Some("release".as_ref());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "control-plane"]);
        if release {
            build.arg("--release");
        }
        assert!(build.status().expect("cargo build").success());
    }
    bin
}
