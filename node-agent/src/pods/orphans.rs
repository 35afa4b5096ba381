//! Removing the containers of pods this node no longer runs (leftovers of
//! pods deleted while the agent was down), in a task of its own.
//!
//! Stopping a container waits out its grace period, so the manager's loop
//! must never wait on it: it only asks for a pass ([`Orphans::kick`]),
//! which returns at once; passes asked for while one runs fold into one.
//! A pass lists the node's containers and starts one removal per orphaned
//! pod, all at once (up to [`AT_ONCE`] containers stopping together), and
//! skips pods whose removal is still under way, so that no container is
//! ever stopped or removed by two removals at the same time.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::volumes;
use crate::desired::Desired;
use crate::runtime::{ContainerInfo, Runtime, RuntimeError, State};

/// How long an orphan gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(10);
/// Containers stopped at the same time, at most: enough that a node's
/// leftovers go in one grace period, few enough not to swamp the engine.
pub const AT_ONCE: usize = 16;

/// The manager's handle on the remover.
pub struct Orphans {
    kick: Arc<Notify>,
}

impl Orphans {
    /// Ask for a pass; never waits.
    pub fn kick(&self) {
        self.kick.notify_one();
    }
}

/// What the remover needs to know.
pub struct Remover<R> {
    pub rt: R,
    pub node: String,
    pub data_dir: PathBuf,
    pub desired: Arc<Desired>,
    /// The pods that have a worker: theirs are the workers' to remove.
    pub owned: watch::Receiver<HashSet<String>>,
    pub grace: Duration,
}

/// Start the remover; it runs until `stop`, and its removals under way
/// are abandoned then (the engine finishes a stop it has begun).
pub fn spawn<R: Runtime>(remover: Remover<R>, stop: CancellationToken) -> Orphans {
    let kick = Arc::new(Notify::new());
    tokio::spawn(remover.run(kick.clone(), stop));
    Orphans { kick }
}

/// Pod uids with a removal under way; a removal's guard takes its uid
/// out however the removal ends (done, failed, aborted).
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<HashSet<String>>>);

struct Claim {
    set: InFlight,
    uid: String,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod's removal, unless one is under way already.
    fn claim(&self, uid: &str) -> Option<Claim> {
        self.lock().insert(uid.to_string()).then(|| Claim {
            set: self.clone(),
            uid: uid.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.lock().remove(&self.uid);
    }
}

impl<R: Runtime> Remover<R> {
    async fn run(self, kick: Arc<Notify>, stop: CancellationToken) {
        let in_flight = InFlight::default();
        let at_once = Arc::new(Semaphore::new(AT_ONCE));
        let mut removals = JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                // Reap finished removals (their claims are gone already).
                Some(_) = removals.join_next() => continue,
                _ = kick.notified() => {}
            }
            for (uid, containers) in self.orphans().await {
                let Some(claim) = in_flight.claim(&uid) else {
                    continue;
                };
                tracing::info!(pod_uid = %uid, containers = containers.len(), "removing the containers of a pod this node no longer runs");
                removals.spawn(remove_pod(
                    self.rt.clone(),
                    self.data_dir.clone(),
                    containers,
                    self.grace,
                    at_once.clone(),
                    claim,
                ));
            }
            metrics::gauge!("skiff_agent_orphan_pods_removing").set(in_flight.lock().len() as f64);
        }
    }

    /// The node's containers whose pod has no worker and is not wanted,
    /// by pod uid. Nothing until the first snapshot: before it, what the
    /// node should hold is unknown.
    async fn orphans(&self) -> BTreeMap<String, Vec<ContainerInfo>> {
        let mut by_pod: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
        if !self.desired.synced() {
            return by_pod;
        }
        let all = match self.rt.list(&self.node, None).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!("listing containers for orphans: {e}");
                return by_pod;
            }
        };
        // Read after the listing: a pod that got a worker (or came back)
        // meanwhile is seen here, so its new containers are left alone.
        let wanted: HashSet<String> = self
            .desired
            .pods()
            .iter()
            .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        let owned = self.owned.borrow();
        for c in all {
            let uid = c.pod_uid();
            if !owned.contains(uid) && !wanted.contains(uid) {
                by_pod.entry(uid.to_string()).or_default().push(c);
            }
        }
        by_pod
    }
}

/// Stop and remove one pod's containers, together, then its directory
/// (only once they are all gone: a running container may still use it).
async fn remove_pod<R: Runtime>(
    rt: R,
    data_dir: PathBuf,
    containers: Vec<ContainerInfo>,
    grace: Duration,
    at_once: Arc<Semaphore>,
    claim: Claim,
) {
    let removed = futures::future::join_all(containers.iter().map(|c| {
        let (rt, at_once) = (rt.clone(), at_once.clone());
        async move {
            // Never closed, so acquiring fails only if it were; then go on.
            let _permit = at_once.acquire_owned().await.ok();
            remove_container(&rt, c, grace).await
        }
    }))
    .await;
    let gone = removed.iter().filter(|ok| **ok).count();
    metrics::counter!("skiff_agent_orphans_removed_total").increment(gone as u64);
    if gone == containers.len() {
        let uid = claim.uid.clone();
        let cleaned = tokio::task::spawn_blocking(move || volumes::clean(&data_dir, &uid)).await;
        if let Err(e) = cleaned {
            tracing::warn!("cleaning an orphaned pod's directory: {e}");
        }
    }
    // The claim goes last: until the directory is gone, no other removal
    // of this pod starts.
    drop(claim);
}

/// Whether the container is gone.
async fn remove_container<R: Runtime>(rt: &R, c: &ContainerInfo, grace: Duration) -> bool {
    if c.state == State::Running {
        match rt.stop(&c.id, grace).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            // Removal forces it anyway; say why it did not stop cleanly.
            Err(e) => tracing::warn!(container = %c.id, "stopping an orphan: {e}"),
        }
    }
    match rt.remove(&c.id).await {
        Ok(()) | Err(RuntimeError::NotFound(_)) => true,
        Err(e) => {
            tracing::warn!(container = %c.id, "removing an orphan (tried again on the next pass): {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    //! The fake runtime stands in for Docker here, for one property only:
    //! timing (a stop that takes as long as the test says, and a count of
    //! the stops under way). That stopping real containers removes them,
    //! together, within about one grace period is tested on Docker in
    //! `tests/orphans.rs`.

    use std::collections::HashMap;
    use std::time::Instant;

    use proto::agent::{Delta, Object, Snapshot};
    use serde_json::json;

    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::*;

    /// Who is being stopped, and how many at once.
    #[derive(Default)]
    struct Stops {
        calls: HashMap<String, usize>,
        now: HashMap<String, usize>,
        most_of_one: usize,
        under_way: usize,
        most: usize,
    }

    /// The fake runtime, with a stop that waits until the test opens the
    /// gate (as a container that ignores SIGTERM waits out its grace).
    #[derive(Clone)]
    struct SlowStop {
        inner: FakeRuntime,
        gate: watch::Receiver<bool>,
        stops: Arc<Mutex<Stops>>,
    }

    impl SlowStop {
        fn new() -> (SlowStop, watch::Sender<bool>) {
            let (open, gate) = watch::channel(false);
            let rt = SlowStop {
                inner: FakeRuntime::default(),
                gate,
                stops: Arc::default(),
            };
            (rt, open)
        }

        fn stops(&self) -> std::sync::MutexGuard<'_, Stops> {
            self.stops.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// A running container of pod `uid` on node n1.
        async fn running(&self, uid: &str, name: &str) -> String {
            let labels = HashMap::from([
                (LABEL_NODE.to_string(), "n1".to_string()),
                (LABEL_POD_UID.to_string(), uid.to_string()),
                (LABEL_CONTAINER.to_string(), name.to_string()),
            ]);
            let id = self
                .inner
                .create_container(&ContainerConfig {
                    labels,
                    ..Default::default()
                })
                .await
                .unwrap();
            self.inner.start(&id).await.unwrap();
            id
        }

        async fn pods_left(&self) -> Vec<String> {
            let mut uids: Vec<String> = self
                .inner
                .list("n1", None)
                .await
                .unwrap()
                .iter()
                .map(|c| c.pod_uid().to_string())
                .collect();
            uids.sort();
            uids.dedup();
            uids
        }
    }

    impl Runtime for SlowStop {
        async fn info(&self) -> Result<Info> {
            self.inner.info().await
        }
        async fn image_present(&self, image: &str) -> Result<bool> {
            self.inner.image_present(image).await
        }
        async fn ensure_network(&self, spec: &NetworkSpec) -> Result<()> {
            self.inner.ensure_network(spec).await
        }
        async fn create_sandbox(&self, cfg: &SandboxConfig) -> Result<String> {
            self.inner.create_sandbox(cfg).await
        }
        async fn create_container(&self, cfg: &ContainerConfig) -> Result<String> {
            self.inner.create_container(cfg).await
        }
        async fn start(&self, id: &str) -> Result<()> {
            self.inner.start(id).await
        }
        async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
            {
                let mut s = self.stops();
                *s.calls.entry(id.to_string()).or_default() += 1;
                let now = s.now.entry(id.to_string()).or_default();
                *now += 1;
                let now = *now;
                s.most_of_one = s.most_of_one.max(now);
                s.under_way += 1;
                s.most = s.most.max(s.under_way);
            }
            let _ = self.gate.clone().wait_for(|open| *open).await;
            {
                let mut s = self.stops();
                s.under_way -= 1;
                if let Some(n) = s.now.get_mut(id) {
                    *n -= 1;
                }
            }
            self.inner.stop(id, grace).await
        }
        async fn remove(&self, id: &str) -> Result<()> {
            self.inner.remove(id).await
        }
        async fn list(&self, node: &str, pod_uid: Option<&str>) -> Result<Vec<ContainerInfo>> {
            self.inner.list(node, pod_uid).await
        }
        async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
            self.inner.inspect(id).await
        }
        async fn exec(&self, id: &str, cmd: Vec<String>, timeout: Duration) -> Result<ExecOutput> {
            self.inner.exec(id, cmd, timeout).await
        }
        async fn exec_session(
            &self,
            id: &str,
            cmd: Vec<String>,
            tty: bool,
            stdin: bool,
        ) -> Result<Session> {
            self.inner.exec_session(id, cmd, tty, stdin).await
        }
        async fn attach(&self, id: &str, stdin: bool) -> Result<Session> {
            self.inner.attach(id, stdin).await
        }
        fn logs(&self, id: &str, opts: &LogOptions) -> ByteStream {
            self.inner.logs(id, opts)
        }
        async fn stats(&self, id: &str) -> Result<Usage> {
            self.inner.stats(id).await
        }
        fn events(&self, node: &str) -> EventStream {
            self.inner.events(node)
        }
    }

    fn pod(uid: &str) -> Object {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": uid, "namespace": "d", "uid": uid},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox:local"}]},
        });
        Object {
            kind: "Pod".into(),
            json: serde_json::to_vec(&pod).unwrap().into(),
        }
    }

    async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !f() {
            assert!(Instant::now() < deadline, "not within {within:?}: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The manager's loop goes on serving while orphans take their time to
    /// stop: a pod that arrives meanwhile gets its containers at once.
    /// Before, the loop stopped orphans itself, one after another, and
    /// nothing else happened until the last had stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_manager_keeps_serving_while_orphans_stop() {
        let (rt, open) = SlowStop::new();
        for uid in ["gone-1", "gone-2", "gone-3"] {
            rt.running(uid, "app").await;
        }
        let dir = tempfile::tempdir().unwrap();
        let desired = Arc::new(Desired::default());
        desired.replace(Snapshot {
            revision: 1,
            objects: vec![],
        });
        let ctx = Arc::new(crate::pods::Context {
            node: "n1".into(),
            data_dir: dir.path().to_path_buf(),
            sandbox_image: "skiff-pause:local".into(),
            host_ip: "127.0.0.1".into(),
            cpus: 2,
            memory: 4 << 30,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(4),
            backoff_reset: Duration::from_secs(60),
            lookup: desired.clone(),
            reports: Arc::default(),
            network: None,
            cluster_domain: "cluster.local".into(),
            tokens: Arc::new(crate::pods::tokens::Tokens::new(Arc::new(
                crate::pods::tokens::NoMasters,
            ))),
            memory_volumes: false,
        });
        let stop = CancellationToken::new();
        let manager = tokio::spawn(crate::pods::run(
            rt.clone(),
            ctx,
            desired.clone(),
            tokio::sync::watch::channel(Vec::new()).1,
            stop.clone(),
        ));

        // The first relist finds the three orphans; all three stop at once.
        until("three orphans stopping", Duration::from_secs(5), || {
            rt.stops().under_way == 3
        })
        .await;
        // While they are stopping, a new pod runs.
        desired
            .apply(Delta {
                revision: 2,
                follows: 1,
                upserts: vec![pod("new")],
                deletes: vec![],
            })
            .unwrap();
        let started = Instant::now();
        let mut running = false;
        while !running && started.elapsed() < Duration::from_secs(3) {
            running = rt
                .inner
                .list("n1", Some("new"))
                .await
                .unwrap()
                .iter()
                .any(|c| c.container_name() == "app" && c.state == State::Running);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(running, "the new pod's container did not start within 3 s");
        assert_eq!(rt.stops().under_way, 3, "the orphans are still stopping");

        open.send_replace(true);
        let mut left = Vec::new();
        for _ in 0..150 {
            left = rt.pods_left().await;
            if left == ["new"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(left, ["new"]);
        stop.cancel();
        manager.await.unwrap();
    }

    /// Passes asked for while removals are under way start no second
    /// removal of the same container; a pod's containers stop together and
    /// its directory goes once they are gone; pods with a worker, wanted
    /// pods, and everything before the first snapshot are left alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_orphan_is_removed_once_and_only_orphans_are() {
        let (rt, open) = SlowStop::new();
        let dir = tempfile::tempdir().unwrap();
        for uid in ["gone-1", "gone-2", "kept", "wanted"] {
            std::fs::create_dir_all(volumes::pod_dir(dir.path(), uid)).unwrap();
        }
        let gone_1 = [
            rt.running("gone-1", "POD").await,
            rt.running("gone-1", "app").await,
        ];
        let gone_2 = rt.running("gone-2", "app").await;
        rt.running("kept", "app").await;
        rt.running("wanted", "app").await;
        let desired = Arc::new(Desired::default());
        let (_owned, owned_rx) = watch::channel(HashSet::from(["kept".to_string()]));
        let stop = CancellationToken::new();
        let orphans = spawn(
            Remover {
                rt: rt.clone(),
                node: "n1".into(),
                data_dir: dir.path().to_path_buf(),
                desired: desired.clone(),
                owned: owned_rx,
                grace: Duration::from_secs(1),
            },
            stop.clone(),
        );

        // No snapshot yet: what the node should hold is unknown.
        orphans.kick();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rt.stops().calls.is_empty());

        desired.replace(Snapshot {
            revision: 1,
            objects: vec![pod("wanted")],
        });
        for _ in 0..5 {
            orphans.kick();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        until("the three orphans stopping", Duration::from_secs(5), || {
            rt.stops().under_way == 3
        })
        .await;
        assert!(
            volumes::pod_dir(dir.path(), "gone-1").exists(),
            "a pod's directory stays while its containers run"
        );
        open.send_replace(true);
        let mut left = Vec::new();
        for _ in 0..150 {
            left = rt.pods_left().await;
            if left == ["kept", "wanted"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(left, ["kept", "wanted"]);
        until(
            "the orphans' directories gone",
            Duration::from_secs(3),
            || {
                !volumes::pod_dir(dir.path(), "gone-1").exists()
                    && !volumes::pod_dir(dir.path(), "gone-2").exists()
            },
        )
        .await;
        assert!(volumes::pod_dir(dir.path(), "kept").exists());
        assert!(volumes::pod_dir(dir.path(), "wanted").exists());

        // Once more, with nothing left to remove.
        orphans.kick();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = rt.stops();
        let mut stopped: Vec<(&str, usize)> =
            s.calls.iter().map(|(id, n)| (id.as_str(), *n)).collect();
        stopped.sort();
        let mut expected = vec![
            (gone_1[0].as_str(), 1),
            (gone_1[1].as_str(), 1),
            (gone_2.as_str(), 1),
        ];
        expected.sort();
        assert_eq!(stopped, expected, "each orphan stopped exactly once");
        assert_eq!(s.most_of_one, 1);
        assert_eq!(s.most, 3, "all three stopping together");
        drop(s);
        stop.cancel();
    }
}
