//! A runtime that runs nothing: containers are records that start and run
//! until stopped. For the scale benchmark only (a thousand agents in one
//! process); every test of behaviour runs on Docker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;

use super::*;

#[derive(Clone, Default)]
pub struct FakeRuntime {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    containers: HashMap<String, ContainerInfo>,
    next: u64,
    events: broadcast::Sender<String>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            containers: HashMap::new(),
            next: 0,
            events: broadcast::channel(1024).0,
        }
    }
}

impl FakeRuntime {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn add(&self, labels: &HashMap<String, String>, image: &str, ip: Option<String>) -> String {
        self.with(|i| {
            i.next += 1;
            let id = format!("fake{:016x}", i.next);
            i.containers.insert(
                id.clone(),
                ContainerInfo {
                    id: id.clone(),
                    labels: labels.clone(),
                    state: State::Created,
                    exit_code: 0,
                    oom_killed: false,
                    error: String::new(),
                    created_at: Some(Utc::now()),
                    started_at: None,
                    finished_at: None,
                    image: image.to_string(),
                    image_id: format!("sha256:{image}"),
                    ip,
                },
            );
            id
        })
    }

    fn change(&self, id: &str, f: impl FnOnce(&mut ContainerInfo)) -> Result<()> {
        self.with(|i| {
            let c = i
                .containers
                .get_mut(id)
                .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
            f(c);
            let _ = i.events.send(c.pod_uid().to_string());
            Ok(())
        })
    }
}

impl Runtime for FakeRuntime {
    async fn info(&self) -> Result<Info> {
        Ok(Info {
            version: "fake".into(),
            cpus: 4,
            memory_bytes: 8 << 30,
            kernel: "fake".into(),
            os_image: "fake".into(),
        })
    }

    async fn image_present(&self, _image: &str) -> Result<bool> {
        Ok(true)
    }

    async fn create_sandbox(&self, cfg: &SandboxConfig) -> Result<String> {
        let n = self.with(|i| i.next);
        let ip = format!("10.88.{}.{}", (n >> 8) % 250, n % 250 + 2);
        Ok(self.add(&cfg.labels, &cfg.image, Some(ip)))
    }

    async fn create_container(&self, cfg: &ContainerConfig) -> Result<String> {
        Ok(self.add(&cfg.labels, &cfg.image, None))
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.change(id, |c| {
            c.state = State::Running;
            c.started_at = Some(Utc::now());
        })
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<()> {
        self.change(id, |c| {
            if c.state == State::Running {
                c.state = State::Exited;
                c.exit_code = 137;
                c.finished_at = Some(Utc::now());
            }
        })
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.with(|i| {
            if let Some(c) = i.containers.remove(id) {
                let _ = i.events.send(c.pod_uid().to_string());
            }
        });
        Ok(())
    }

    async fn list(&self, node: &str, pod_uid: Option<&str>) -> Result<Vec<ContainerInfo>> {
        Ok(self.with(|i| {
            i.containers
                .values()
                .filter(|c| c.label(LABEL_NODE) == node)
                .filter(|c| pod_uid.is_none_or(|u| c.pod_uid() == u))
                .cloned()
                .collect()
        }))
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        self.with(|i| i.containers.get(id).cloned())
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
        Err(RuntimeError::Engine("the fake runtime runs nothing".into()))
    }

    async fn attach(&self, _id: &str, _stdin: bool) -> Result<Session> {
        Err(RuntimeError::Engine("the fake runtime runs nothing".into()))
    }

    fn logs(&self, _id: &str, _opts: &LogOptions) -> ByteStream {
        futures::stream::empty().boxed()
    }

    fn events(&self, _node: &str) -> EventStream {
        let rx = self.with(|i| i.events.subscribe());
        tokio_stream_of(rx)
    }

    async fn usage(&self, _id: &str) -> Result<Usage> {
        Ok(Usage::default())
    }
}

fn tokio_stream_of(rx: broadcast::Receiver<String>) -> EventStream {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(uid) => return Some((Ok(uid), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}
