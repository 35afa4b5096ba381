//! Backup and restore with real processes: `etcdctl snapshot save` from a
//! follower of a running cluster under writes, the cluster destroyed, three
//! members restored from the file with `control-plane restore`, and the new
//! cluster holding every key as it was at the snapshot's revision.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{etcdctl, kubectl, put, Cluster};
use proto::etcd::mvccpb::KeyValue;
use proto::etcd::RangeRequest;

/// Every key as of `revision`, with its revisions, version, value and lease.
async fn all_keys(c: &Cluster, i: usize, revision: i64) -> Vec<KeyValue> {
    let mut kv = c.kv(i).await;
    kv.range(RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..Default::default()
    })
    .await
    .expect("range over every key")
    .into_inner()
    .kvs
}

/// The value given to `flag` in master `i`'s command line.
fn flag(c: &mut Cluster, i: usize, name: &str) -> String {
    let args = c.args_mut(i);
    let at = args.iter().position(|a| a == name).expect(name);
    args[at + 1].clone()
}

fn restore(file: &Path, data_dir: &Path, name: &str, initial: &str, token: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--name", name, "--initial-cluster", initial])
        .args(["--initial-cluster-token", token])
        .output()
        .expect("control-plane restore");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn lease_of(out: &str) -> String {
    // "lease 694d5a3c8f0e7a05 granted with TTL(600s)"
    out.split_whitespace().nth(1).expect("lease id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_save_and_restore_keep_every_key_and_revision() {
    let mut c = Cluster::start(
        3,
        &[
            "--initial-cluster-token",
            "backup-before",
            // Nothing compacts but the test's own compaction.
            "--compaction-interval-secs",
            "0",
        ],
    )
    .await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;

    // A few hundred keys, some written again.
    let mut kv = c.kv(0).await;
    for i in 0..300 {
        put(&mut kv, &format!("/backup/k{i:03}"), &format!("v{i}"))
            .await
            .expect("put");
    }
    for i in (0..300).step_by(7) {
        put(&mut kv, &format!("/backup/k{i:03}"), &format!("again{i}"))
            .await
            .expect("put");
    }
    // Some with leases, through etcdctl.
    let (ok, out, err) = c.etcdctl(&["lease", "grant", "600"]);
    assert!(ok, "{err}");
    let lease = lease_of(&out);
    for i in 0..20 {
        let (ok, _, err) = c.etcdctl(&[
            "put",
            &format!("/backup/leased/{i}"),
            "x",
            &format!("--lease={lease}"),
        ]);
        assert!(ok, "{err}");
    }
    // Some deleted, then a compaction in the middle of the history.
    let (ok, out, err) = c.etcdctl(&["del", "/backup/k01", "--prefix"]);
    assert!(ok && out.trim() == "10", "{out}{err}");
    let (ok, out, err) = c.etcdctl(&["get", "/backup/k2", "--prefix", "-w", "json"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let compact_at = json["header"]["revision"].as_i64().expect("revision") - 50;
    let (ok, _, err) = c.etcdctl(&["compact", &compact_at.to_string()]);
    assert!(ok, "{err}");
    // And objects through the Kubernetes API.
    let kubeconfig = c.kubeconfig(0);
    let (ok, _, err) = kubectl(&kubeconfig, &["create", "namespace", "backup"]);
    assert!(ok, "{err}");
    for i in 0..5 {
        let (ok, _, err) = kubectl(
            &kubeconfig,
            &[
                "create",
                "configmap",
                &format!("cm{i}"),
                "-n",
                "backup",
                &format!("--from-literal=n={i}"),
            ],
        );
        assert!(ok, "{err}");
    }
    let (ok, configmaps, err) = kubectl(
        &kubeconfig,
        &["get", "configmaps", "-n", "backup", "-o", "json"],
    );
    assert!(ok, "{err}");
    let configmaps: serde_json::Value = serde_json::from_str(&configmaps).expect("json");
    let versions = |list: &serde_json::Value| -> Vec<(String, String)> {
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    };
    let configmaps = versions(&configmaps);
    assert!(configmaps.len() >= 5, "{configmaps:?}");

    // Writes go on while the snapshot is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let mut kv = c.kv(leader).await;
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                if let Ok(rev) = put(&mut kv, &format!("/backup/live/{n}"), "x").await {
                    acked.fetch_max(rev, Ordering::AcqRel);
                }
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = acked.load(Ordering::Acquire);
    let file = c.dir.path().join("backup.db");
    let tls = c.etcdctl_tls();
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    let file_arg = file.display().to_string();
    args.extend(["snapshot", "save", &file_arg]);
    let (ok, out, err) = etcdctl(&c.endpoint(follower), &args);
    assert!(ok, "snapshot save: {out}{err}");
    assert!(out.contains("Snapshot saved at"), "{out}{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let written = writer.await.expect("writer");
    assert!(
        written > 10,
        "only {written} writes went on around the snapshot"
    );
    let info = raft_store::backup::verify(&file).expect("the saved file verifies");
    let revision = info.revision;
    assert!(
        revision >= before,
        "the snapshot (revision {revision}) misses writes acknowledged before it was asked for (up to {before})"
    );
    assert!(
        revision < acked.load(Ordering::Acquire),
        "writes went on during the snapshot, yet it holds them all"
    );
    assert_eq!(info.compacted, compact_at);

    // The old cluster's answers at the snapshot's revision.
    let expected = all_keys(&c, 0, revision).await;
    assert!(expected.len() > 300, "{} keys", expected.len());
    let old_id = c
        .status(0)
        .await
        .and_then(|s| s.header)
        .expect("status")
        .cluster_id;
    let (ok, leases, err) = c.etcdctl(&["lease", "list"]);
    assert!(ok, "{err}");
    let (ok, lease_keys, err) = c.etcdctl(&["lease", "timetolive", &lease, "--keys"]);
    assert!(ok, "{err}");

    // Destroy the cluster.
    for i in 0..3 {
        c.kill(i);
    }
    let initial = flag(&mut c, 0, "--initial-cluster");
    let data_dirs: Vec<PathBuf> = (0..3)
        .map(|i| PathBuf::from(flag(&mut c, i, "--data-dir")))
        .collect();
    for dir in &data_dirs {
        std::fs::remove_dir_all(dir).expect("removing a data dir");
    }

    // A damaged or truncated file is refused, and nothing is written.
    let bytes = std::fs::read(&file).expect("snapshot file");
    let damaged = c.dir.path().join("damaged.db");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    std::fs::write(&damaged, &flipped).expect("write");
    let truncated = c.dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1000]).expect("write");
    for bad in [&damaged, &truncated] {
        let (ok, out) = restore(bad, &data_dirs[0], "m1", &initial, "backup-after");
        assert!(!ok, "restored from {}: {out}", bad.display());
        assert!(out.contains("damaged or truncated"), "{out}");
        assert!(!data_dirs[0].exists(), "a failed restore wrote {out}");
    }
    // The old token would give the old cluster id.
    let (ok, out) = restore(&file, &data_dirs[0], "m1", &initial, "backup-before");
    assert!(!ok && out.contains("token of its own"), "{out}");
    assert!(!data_dirs[0].exists());
    // A data dir in use is never overwritten.
    let busy = c.dir.path().join("busy");
    std::fs::create_dir_all(busy.join("db")).expect("mkdir");
    let (ok, out) = restore(&file, &busy, "m1", &initial, "backup-after");
    assert!(!ok && out.contains("not empty"), "{out}");

    // Restore every member and start the new cluster.
    for (i, dir) in data_dirs.iter().enumerate() {
        let (ok, out) = restore(&file, dir, &format!("m{}", i + 1), &initial, "backup-after");
        assert!(ok, "{out}");
        assert!(out.contains(&format!("at revision {revision}")), "{out}");
        let args = c.args_mut(i);
        let at = args
            .iter()
            .position(|a| a == "--initial-cluster-token")
            .expect("token flag");
        args[at + 1] = "backup-after".into();
    }
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_leader(Duration::from_secs(30)).await;

    // Every key with its revisions, version, value and lease, on every member.
    for i in 0..3 {
        let restored = all_keys(&c, i, revision).await;
        assert_eq!(restored.len(), expected.len(), "member {i}");
        for (got, want) in restored.iter().zip(&expected) {
            assert_eq!(got, want, "member {i}");
        }
    }
    let status = c.status(0).await.expect("status");
    let header = status.header.expect("header");
    assert_ne!(
        header.cluster_id, old_id,
        "the restored cluster kept the old id"
    );
    assert!(header.revision >= revision);
    // History before the compaction point stays compacted, after it readable.
    let mut kv = c.kv(1).await;
    let err = kv
        .range(RangeRequest {
            key: b"/backup/k000".to_vec(),
            revision: compact_at - 1,
            ..Default::default()
        })
        .await
        .expect_err("a read before the compaction point");
    assert!(err.message().contains("compacted"), "{err:?}");
    kv.range(RangeRequest {
        key: b"/backup/k000".to_vec(),
        revision: compact_at,
        ..Default::default()
    })
    .await
    .expect("a read at the compaction point");
    // Revisions go on from the snapshot's.
    let next = put(&mut kv, "/backup/after", "y").await.expect("put");
    assert!(next > header.revision, "{next} after {}", header.revision);
    // The leases and their keys.
    let (ok, leases_after, err) = c.etcdctl(&["lease", "list"]);
    assert!(ok, "{err}");
    // (The new cluster may have granted leases of its own since.)
    for id in leases.lines().skip(1) {
        assert!(
            leases_after.lines().any(|l| l == id),
            "lease {id} lost: {leases_after}"
        );
    }
    let (ok, keys_after, err) = c.etcdctl(&["lease", "timetolive", &lease, "--keys"]);
    assert!(ok, "{err}");
    let attached = |s: &str| s.split("attached keys").nth(1).map(str::to_string);
    assert_eq!(attached(&keys_after), attached(&lease_keys));
    // kubectl sees the objects as they were.
    let kubeconfig = c.kubeconfig(1);
    let (ok, after, err) = kubectl(
        &kubeconfig,
        &["get", "configmaps", "-n", "backup", "-o", "json"],
    );
    assert!(ok, "{err}");
    let after: serde_json::Value = serde_json::from_str(&after).expect("json");
    assert_eq!(versions(&after), configmaps);
}
