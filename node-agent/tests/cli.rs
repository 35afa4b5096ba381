//! The `node-agent` binary's command line: clear refusals before anything
//! runs. (The agent's behaviour with real masters and Docker is tested in
//! `control-plane/tests/agents.rs`, which runs this binary.)

use std::process::Command;

fn agent(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_node-agent"))
        .args(args)
        .output()
        .expect("running node-agent");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_without_joining_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = agent(&["run", "--data-dir", &dir.path().display().to_string()]);
    assert!(!ok);
    assert!(err.contains("has this node joined?"), "{err}");
}

#[test]
fn join_refuses_a_master_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = agent(&[
        "join",
        "--server",
        "127.0.0.1:9",
        "--token",
        "abcdef.0123456789abcdef",
        "--discovery-token-ca-cert-hash",
        "sha256:00",
        "--node-name",
        "n1",
        "--data-dir",
        &dir.path().display().to_string(),
    ]);
    assert!(!ok);
    assert!(err.contains("127.0.0.1:9"), "{err}");
    assert!(
        !dir.path().join("node.crt").exists(),
        "nothing is stored on a failed join"
    );
}
