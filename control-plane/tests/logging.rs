//! Logs an operator can read and ship: plain text with no colour codes when
//! stderr is a file, one JSON object per line with `--log-format json`, and
//! the level changed at run time through `PUT /debug/flags/v` with the real
//! kubectl, by cluster admins only. And the node agent's level, changed by
//! SIGHUP from `--log-level-file`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::agents::create_token;
use common::{eventually, kubectl, kubectl_stdin, Cluster};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(15);

fn level(kc: &Path) -> (bool, String, String) {
    kubectl(kc, &["get", "--raw", "/debug/flags/v"])
}

fn set_level(kc: &Path, directive: &str) -> (bool, String, String) {
    kubectl_stdin(
        kc,
        &["replace", "--raw", "/debug/flags/v", "-f", "-"],
        Some(directive),
    )
}

/// Connect to the API port and hang up before any TLS: the master logs
/// the failed handshake at debug level (target control_plane::api).
async fn failed_handshake(cluster: &Cluster) {
    let addr = format!("{}:6443", cluster.masters[0].ip);
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    drop(tcp);
}

const HANDSHAKE_LINE: &str = "api TLS handshake";

#[tokio::test(flavor = "multi_thread")]
async fn text_log_and_the_level_at_run_time() {
    let cluster = Cluster::start(1, &[]).await;
    let admin = cluster.kubeconfig(0);

    // Plain text on a file: no escape sequences, the familiar words.
    let log = cluster.log(0);
    assert!(log.contains("master serving"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in the log:\n{log}");
    assert!(log.contains(" INFO "), "{log}");

    // The starting filter, as the admin sees it.
    let (good, out, err) = level(&admin);
    assert!(good, "{err}");
    assert_eq!(out.trim(), "info,openraft=warn");

    // Before any change, no debug line for a failed handshake.
    failed_handshake(&cluster).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!cluster.log(0).contains(HANDSHAKE_LINE));

    // A user who is not a cluster admin may neither read nor change it.
    let alice = cluster.kubeconfig_as("alice", &["developers"]);
    let (good, _, err) = level(&alice);
    assert!(!good && err.contains("Forbidden"), "{err}");
    let (good, _, err) = set_level(&alice, "debug");
    assert!(!good && err.contains("Forbidden"), "{err}");

    // A directive that does not parse: 400, and nothing changes.
    let (good, _, err) = set_level(&admin, "info,raft_store=loud");
    assert!(!good && err.contains("BadRequest"), "{err}");
    let (good, _, err) = set_level(&admin, "");
    assert!(!good && err.contains("BadRequest"), "{err}");
    assert_eq!(level(&admin).1.trim(), "info,openraft=warn");

    // The admin turns the API's debug lines on: they appear at once.
    let (good, out, err) = set_level(&admin, "info,openraft=warn,control_plane::api=debug");
    assert!(good, "{err}\n{out}");
    assert_eq!(
        level(&admin).1.trim(),
        "info,openraft=warn,control_plane::api=debug"
    );
    eventually("a debug line after the change", WITHIN, || async {
        failed_handshake(&cluster).await;
        cluster
            .log(0)
            .lines()
            .any(|l| l.contains(" DEBUG ") && l.contains(HANDSHAKE_LINE))
            .then_some(())
    })
    .await;

    // And off again: from then on, not even info lines.
    assert!(set_level(&admin, "warn").0);
    let before = cluster.log(0).len();
    failed_handshake(&cluster).await;
    assert!(kubectl(&admin, &["get", "ns"]).0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = cluster.log(0);
    let new = &after[before..];
    assert!(
        !new.contains(" INFO ") && !new.contains(" DEBUG "),
        "lines below warn after the filter was set to warn:\n{new}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_one_object_per_line() {
    let cluster = Cluster::start(1, &["--log-format", "json"]).await;
    let admin = cluster.kubeconfig(0);
    // Lines with fields and spans: a change of level and some requests.
    assert!(set_level(&admin, "info,openraft=warn,control_plane::api=debug").0);
    failed_handshake(&cluster).await;
    assert!(kubectl(&admin, &["get", "ns"]).0);
    let log = eventually("the debug line", WITHIN, || async {
        let log = cluster.log(0);
        log.contains(HANDSHAKE_LINE).then_some(log)
    })
    .await;
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    for l in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(l[key].is_string(), "no {key} in {l}");
        }
        assert!(l["fields"]["message"].is_string(), "no message in {l}");
    }
    let serving = lines
        .iter()
        .find(|l| l["fields"]["message"] == "master serving")
        .unwrap_or_else(|| panic!("no `master serving` line:\n{log}"));
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["fields"]["name"], "m1");
    assert_eq!(serving["target"], "control_plane::cli");
    let changed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "log filter changed")
        .unwrap_or_else(|| panic!("no `log filter changed` line:\n{log}"));
    assert_eq!(
        changed["fields"]["filter"],
        "info,openraft=warn,control_plane::api=debug"
    );
}

/// The agent: `--log-level warn` at start, then SIGHUP with a level file;
/// a bad file changes nothing, and the agent lives on.
#[tokio::test(flavor = "multi_thread")]
async fn agent_level_from_a_file_on_sighup() {
    let cluster = Cluster::start(1, &[]).await;
    let join = create_token(&cluster, &[]);
    let mut agent = cluster.join("logs", &join).expect("join");
    let file = cluster.dir.path().join("agent-level");
    let file_arg = file.display().to_string();
    agent.run(&["--log-level", "warn", "--log-level-file", &file_arg]);
    let kc = cluster.kubeconfig(0);
    let node = agent.name.clone();
    eventually("the node registered", WITHIN, || async {
        kubectl(&kc, &["get", "node", &node]).0.then_some(())
    })
    .await;
    let hangup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &agent.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    };
    let log = agent.log();
    assert!(!log.contains('\u{1b}'), "colour codes in the log:\n{log}");
    assert!(
        !log.contains(" INFO ") && !log.contains(" DEBUG "),
        "lines below warn with --log-level warn:\n{log}"
    );

    // A bad directive: said so, nothing changes, the agent lives on.
    std::fs::write(&file, "info,node_agent=loud\n").expect("level file");
    hangup();
    eventually("the refusal", WITHIN, || async {
        agent.log().contains("log filter unchanged").then_some(())
    })
    .await;
    assert!(!agent.log().contains(" INFO "));

    // A good one: lines below warn from then on, beginning with the
    // agent's own word that the filter changed (an info line).
    std::fs::write(&file, "info\n").expect("level file");
    hangup();
    eventually("the change, said at info level", WITHIN, || async {
        agent
            .log()
            .lines()
            .any(|l| l.contains(" INFO ") && l.contains("log filter changed"))
            .then_some(())
    })
    .await;
}
