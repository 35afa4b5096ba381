//! A runtime that runs nothing: containers are records that go from
//! created to running to exited when told. It lets one process hold many
//! agents for the scale benchmark; every test of behaviour uses Docker.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::broadcast;

use super::*;

#[derive(Clone)]
pub struct FakeRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    containers: Mutex<HashMap<String, ContainerInfo>>,
    next: AtomicU64,
    events: broadcast::Sender<(String, String)>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime {
            inner: Arc::new(Inner {
                containers: Mutex::default(),
                next: AtomicU64::new(1),
                events: broadcast::channel(1024).0,
            }),
        }
    }
}

fn nothing_runs() -> RuntimeError {
    RuntimeError::Engine("the fake runtime runs no processes".into())
}

impl FakeRuntime {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ContainerInfo>> {
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, labels: &HashMap<String, String>, ip: Option<String>) -> String {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("fake{n:012}");
        self.lock().insert(
            id.clone(),
            ContainerInfo {
                id: id.clone(),
                labels: labels.clone(),
                state: State::Created,
                exit_code: 0,
                oom_killed: false,
                error: String::new(),
                started_at: None,
                finished_at: None,
                image_id: "sha256:fake".into(),
                ip,
            },
        );
        self.changed(&id);
        id
    }

    /// Tell followers of the container's node that its pod changed.
    fn changed(&self, id: &str) {
        let found = self
            .lock()
            .get(id)
            .map(|c| (c.label(LABEL_NODE).to_string(), c.pod_uid().to_string()));
        if let Some(ev) = found {
            let _ = self.inner.events.send(ev);
        }
    }

    fn set(&self, id: &str, f: impl FnOnce(&mut ContainerInfo)) -> Result<()> {
        match self.lock().get_mut(id) {
            Some(c) => f(c),
            None => return Err(RuntimeError::NotFound(id.to_string())),
        }
        self.changed(id);
        Ok(())
    }
}

impl Runtime for FakeRuntime {
    async fn info(&self) -> Result<Info> {
        Ok(Info {
            version: "fake".into(),
            cpus: 8,
            memory_bytes: 32 << 30,
            kernel: "fake".into(),
            os_image: "fake".into(),
        })
    }

    async fn image_present(&self, _image: &str) -> Result<bool> {
        Ok(true)
    }

    async fn ensure_network(&self, _spec: &NetworkSpec) -> Result<()> {
        Ok(())
    }

    async fn create_sandbox(&self, cfg: &SandboxConfig) -> Result<String> {
        let n = self.inner.next.load(Ordering::Relaxed);
        let ip = Ipv4Addr::from(0x0a80_0000 | (n as u32 & 0x007f_ffff));
        Ok(self.add(&cfg.labels, Some(ip.to_string())))
    }

    async fn create_container(&self, cfg: &ContainerConfig) -> Result<String> {
        Ok(self.add(&cfg.labels, None))
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.set(id, |c| {
            c.state = State::Running;
            c.started_at = Some(Utc::now());
        })
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<()> {
        self.set(id, |c| {
            if c.state == State::Running {
                c.state = State::Exited;
                c.exit_code = 143;
                c.finished_at = Some(Utc::now());
            }
        })
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.changed(id);
        self.lock()
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    async fn list(&self, node: &str, pod_uid: Option<&str>) -> Result<Vec<ContainerInfo>> {
        Ok(self
            .lock()
            .values()
            .filter(|c| c.label(LABEL_NODE) == node)
            .filter(|c| pod_uid.is_none_or(|uid| c.pod_uid() == uid))
            .cloned()
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    async fn exec(&self, _id: &str, _cmd: Vec<String>, _timeout: Duration) -> Result<ExecOutput> {
        Ok(ExecOutput {
            exit_code: 0,
            output: Vec::new(),
        })
    }

    async fn exec_session(
        &self,
        _id: &str,
        _cmd: Vec<String>,
        _tty: bool,
        _stdin: bool,
    ) -> Result<Session> {
        Err(nothing_runs())
    }

    async fn attach(&self, _id: &str, _stdin: bool) -> Result<Session> {
        Err(nothing_runs())
    }

    fn logs(&self, _id: &str, _opts: &LogOptions) -> ByteStream {
        Box::pin(futures::stream::empty())
    }

    async fn stats(&self, _id: &str) -> Result<Usage> {
        Ok(Usage::default())
    }

    fn events(&self, node: &str) -> EventStream {
        let node = node.to_string();
        let rx = self.inner.events.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((ev, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter_map(move |(n, uid)| {
            let mine = n == node;
            async move { mine.then_some(Ok(uid)) }
        });
        Box::pin(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn containers_go_from_created_to_running_to_exited() {
        let rt = FakeRuntime::default();
        let labels = HashMap::from([
            (LABEL_NODE.to_string(), "n1".to_string()),
            (LABEL_POD_UID.to_string(), "u1".to_string()),
        ]);
        let mut events = rt.events("n1");
        let id = rt
            .create_container(&ContainerConfig {
                labels,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(events.next().await.unwrap().unwrap(), "u1");
        rt.start(&id).await.unwrap();
        assert_eq!(rt.inspect(&id).await.unwrap().state, State::Running);
        rt.stop(&id, Duration::ZERO).await.unwrap();
        assert_eq!(
            rt.list("n1", Some("u1")).await.unwrap()[0].state,
            State::Exited
        );
        assert!(rt.list("n2", None).await.unwrap().is_empty());
        rt.remove(&id).await.unwrap();
        assert!(matches!(
            rt.inspect(&id).await,
            Err(RuntimeError::NotFound(_))
        ));
    }
}
