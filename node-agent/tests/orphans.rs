//! Orphan removal on the machine's real Docker engine: containers of pods
//! the node no longer runs are stopped together, each with its grace
//! period, and removed, with their pods' directories; containers of pods
//! that have a worker are left alone. The images come from deploy/images.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use node_agent::desired::Desired;
use node_agent::pods::{orphans, volumes};
use node_agent::runtime::docker::DockerRuntime;
use node_agent::runtime::{Runtime, SandboxConfig, LABEL_CONTAINER, LABEL_NODE, LABEL_POD_UID};
use proto::agent::Snapshot;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "skiff-pause:local";

/// Removes whatever the test left on the engine, however it ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label={LABEL_NODE}={}", self.0),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Four orphaned pods whose containers ignore SIGTERM (the pause image's
/// `sleep` is PID 1), so each stop takes the whole grace period: one
/// after another they would take four; together, about one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_stop_together_within_about_one_grace_period() {
    let present = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running docker");
    assert!(
        present.success(),
        "image {IMAGE} is missing: run deploy/images"
    );
    let rt = DockerRuntime::connect("unix:///var/run/docker.sock")
        .await
        .expect("the Docker engine");
    let node = format!("orphans-{}-{}", std::process::id(), rand::random::<u32>());
    let _cleanup = Cleanup(node.clone());
    let dir = tempfile::tempdir().unwrap();

    let run = |uid: &str| {
        let (rt, node, uid) = (rt.clone(), node.clone(), uid.to_string());
        async move {
            let labels = HashMap::from([
                (LABEL_NODE.to_string(), node.clone()),
                (LABEL_POD_UID.to_string(), uid.clone()),
                (LABEL_CONTAINER.to_string(), "POD".to_string()),
            ]);
            let id = rt
                .create_sandbox(&SandboxConfig {
                    name: format!("{node}-{uid}"),
                    image: IMAGE.into(),
                    hostname: uid,
                    labels,
                    network: Some("none".into()),
                    ..Default::default()
                })
                .await
                .expect("creating a container");
            rt.start(&id).await.expect("starting it");
            id
        }
    };
    let orphaned = ["gone-1", "gone-2", "gone-3", "gone-4"];
    for uid in orphaned.iter().chain(&["kept"]) {
        run(uid).await;
        std::fs::create_dir_all(volumes::pod_dir(dir.path(), uid)).unwrap();
    }

    let desired = Arc::new(Desired::default());
    desired.replace(Snapshot {
        revision: 1,
        objects: vec![],
    });
    let (_owned, owned_rx) = watch::channel(HashSet::from(["kept".to_string()]));
    let grace = Duration::from_secs(3);
    let stop = CancellationToken::new();
    let remover = orphans::spawn(
        orphans::Remover {
            rt: rt.clone(),
            node: node.clone(),
            data_dir: dir.path().to_path_buf(),
            desired,
            owned: owned_rx,
            grace,
        },
        stop.clone(),
    );
    let started = Instant::now();
    remover.kick();
    let mut left: Vec<String> = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        // Passes asked for while the stops are under way start no others.
        remover.kick();
        left = rt
            .list(&node, None)
            .await
            .unwrap()
            .iter()
            .map(|c| c.pod_uid().to_string())
            .collect();
        if left == ["kept"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    assert_eq!(left, ["kept"], "after {took:?}");
    assert!(
        took >= grace,
        "each orphan had its grace period before SIGKILL: {took:?}"
    );
    assert!(
        took < grace * 2 + Duration::from_secs(2),
        "four orphans with {grace:?} each took {took:?}: not stopped together"
    );
    for uid in orphaned {
        assert!(!volumes::pod_dir(dir.path(), uid).exists(), "{uid}");
    }
    assert!(volumes::pod_dir(dir.path(), "kept").exists());
    stop.cancel();
}
