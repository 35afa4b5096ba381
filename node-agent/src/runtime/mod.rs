//! The container runtime, behind one narrow trait, so that the pod code
//! does not know which engine runs its containers: Docker through bollard
//! ([`docker`]), or a fake that runs nothing ([`fake`]), for many agents
//! in one process in the scale benchmark.
//!
//! Every container the agent makes carries labels naming its node, pod and
//! container and a hash of the container's spec, so that a restarted agent
//! can find its containers, adopt the ones still wanted and unchanged, and
//! remove the rest.

pub mod docker;
pub mod fake;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;

pub const LABEL_NODE: &str = "skiff.io/node";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_CONTAINER: &str = "io.kubernetes.container.name";
pub const LABEL_SPEC_HASH: &str = "skiff.io/spec-hash";
pub const LABEL_ATTEMPT: &str = "skiff.io/attempt";
/// The sandbox's container name label, as the kubelet's dockershim named it.
pub const SANDBOX: &str = "POD";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image {0} is not present on this node")]
    ImageNotPresent(String),
    #[error("no such container {0}")]
    NotFound(String),
    #[error("{0}")]
    Engine(String),
    #[error("the node's pod network is not ready (it has no podCIDR yet)")]
    NetworkNotReady,
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// A bind mount from the node into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
}

/// A port published on the node (hostPort).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: String,
    pub host_ip: Option<String>,
}

/// The sandbox: holds the pod's network namespace, hostname and hosts file.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    pub name: String,
    pub image: String,
    pub hostname: String,
    pub labels: HashMap<String, String>,
    pub host_ports: Vec<HostPort>,
    pub host_network: bool,
    /// The runtime network to join (None: the engine's default).
    pub network: Option<String>,
    pub dns: Vec<String>,
    pub dns_options: Vec<String>,
    pub dns_search: Vec<String>,
    pub extra_hosts: Vec<String>,
}

/// One app or init container, joined to its pod's sandbox.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    pub name: String,
    pub image: String,
    pub sandbox_id: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub labels: HashMap<String, String>,
    pub mounts: Vec<Mount>,
    pub memory_limit: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub user: Option<String>,
    pub read_only_root: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited,
    Unknown,
}

/// A container as the runtime reports it.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub state: State,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub error: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub image_id: String,
    /// The sandbox's address on its network.
    pub ip: Option<String>,
}

impl ContainerInfo {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }

    pub fn pod_uid(&self) -> &str {
        self.label(LABEL_POD_UID)
    }

    pub fn container_name(&self) -> &str {
        self.label(LABEL_CONTAINER)
    }

    pub fn attempt(&self) -> u32 {
        self.label(LABEL_ATTEMPT).parse().unwrap_or(0)
    }
}

/// What a command run in a container printed, and how it ended.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub output: Vec<u8>,
}

/// Which logs to read.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail: Option<u64>,
    pub since: Option<i64>,
    pub timestamps: bool,
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>>> + Send>>;
pub type EventStream = Pin<Box<dyn Stream<Item = Result<String>> + Send>>;
/// An interactive process's output: (stream number, bytes).
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<(u8, Vec<u8>)>> + Send>>;
/// Resize a terminal to (width, height).
pub type Resize = Box<dyn Fn(u16, u16) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// An interactive process in a container: its output, its input, a way to
/// resize its terminal, and its exit code once it ends.
pub struct Session {
    pub output: OutputStream,
    pub input: Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    pub resize: Resize,
    pub exit_code: Pin<Box<dyn Future<Output = Option<i64>> + Send>>,
}

/// What a container has used: CPU time since it started (nanoseconds),
/// and memory the kernel cannot reclaim (usage less inactive file pages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ns: u64,
    pub memory_working_set: u64,
}

/// A bridge network for the node's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: String,
    pub gateway: String,
    /// The bridge device's name.
    pub bridge: String,
}

/// Node facts from the runtime.
#[derive(Debug, Clone, Default)]
pub struct Info {
    pub version: String,
    pub cpus: u64,
    pub memory_bytes: u64,
    pub kernel: String,
    pub os_image: String,
}

pub trait Runtime: Clone + Send + Sync + 'static {
    fn info(&self) -> impl Future<Output = Result<Info>> + Send;
    fn image_present(&self, image: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Make the pods' network as `spec` says (replacing one of the same
    /// name with another subnet).
    fn ensure_network(&self, spec: &NetworkSpec) -> impl Future<Output = Result<()>> + Send;
    fn create_sandbox(&self, cfg: &SandboxConfig) -> impl Future<Output = Result<String>> + Send;
    fn create_container(
        &self,
        cfg: &ContainerConfig,
    ) -> impl Future<Output = Result<String>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// SIGTERM (or the image's stop signal), then SIGKILL after `grace`.
    fn stop(&self, id: &str, grace: Duration) -> impl Future<Output = Result<()>> + Send;
    fn remove(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Every container this agent made on `node` (of one pod, if given).
    fn list(
        &self,
        node: &str,
        pod_uid: Option<&str>,
    ) -> impl Future<Output = Result<Vec<ContainerInfo>>> + Send;
    fn inspect(&self, id: &str) -> impl Future<Output = Result<ContainerInfo>> + Send;
    /// Run `cmd` in the container and wait (up to `timeout`) for it.
    fn exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput>> + Send;
    /// Run `cmd` attached, for `kubectl exec`.
    fn exec_session(
        &self,
        id: &str,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> impl Future<Output = Result<Session>> + Send;
    /// Attach to the container's main process, for `kubectl attach`.
    fn attach(&self, id: &str, stdin: bool) -> impl Future<Output = Result<Session>> + Send;
    fn logs(&self, id: &str, opts: &LogOptions) -> ByteStream;
    /// A running container's cumulative CPU time and its memory working set.
    fn stats(&self, id: &str) -> impl Future<Output = Result<Usage>> + Send;
    /// The pod uid of every container of `node` that changed, as it changes.
    fn events(&self, node: &str) -> EventStream;
}
