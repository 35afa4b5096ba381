//! One pod's worker: it owns the pod's containers on this node and
//! reconciles them with the pod's spec whenever anything changes (the
//! spec, a container's state, a timer), then reports the pod's status.
//!
//! Order of work, as the kubelet's: the sandbox first (it holds the
//! network namespace, hostname and hosts file), then the volumes, then the
//! init containers one at a time, then the app containers; restarts follow
//! the restart policy with crash-loop back-off; probes run when due. A pod
//! being deleted gets its preStop hooks, then SIGTERM, then SIGKILL at the
//! end of its grace period, and its node confirms the deletion.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use proto::agent::PodReport;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::probes::{self, ProbeState};
use super::spec::{self, PodFields, SpecError};
use super::status::{self, ContainerView, PodView};
use super::{volumes, Context};
use crate::runtime::{ContainerInfo, Mount, Runtime, RuntimeError, State, SANDBOX};

/// How often a worker looks again with nothing else to wake it.
const RESYNC: Duration = Duration::from_secs(10);
/// How long a new sandbox waits for the node's pod network.
const NETWORK_WAIT: Duration = Duration::from_secs(5);
/// The most of a termination message kept (as the kubelet).
const MAX_MESSAGE: usize = 4096;

pub enum Message {
    /// The pod's latest spec.
    Update(Arc<Value>),
    /// Something about its containers changed.
    Poke,
    /// The node no longer holds the pod: stop its containers and go.
    Gone,
    /// Evicted under pressure (why, in the kubelet's words): kill its
    /// containers and report it Failed; it never starts again.
    Evict(String),
}

/// Per container: back-off, probes, and why it waits.
#[derive(Default)]
struct ContainerState {
    /// When the next restart may happen, and the delay that led to it.
    backoff_until: Option<Instant>,
    backoff: Duration,
    waiting: Option<(String, String)>,
    /// Probes, for the running instance they were started for.
    probes_for: String,
    startup: Option<ProbeState>,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
    /// The instance a probe or hook decided to kill.
    killing: Option<String>,
}

pub struct Worker<R: Runtime> {
    rt: R,
    ctx: Arc<Context>,
    pod: Pod,
    uid: String,
    gone: bool,
    containers: HashMap<String, ContainerState>,
    start_time: Option<String>,
    failure: Option<(String, String)>,
    pre_stop_done: bool,
    /// The status last reported (see [`status::PodView::previous`]).
    last_status: Option<Value>,
}

enum Next {
    At(Instant),
    Done,
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl<R: Runtime> Worker<R> {
    pub fn new(rt: R, ctx: Arc<Context>, pod: Pod) -> Self {
        let uid = spec::uid(&pod).to_string();
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        Worker {
            rt,
            ctx,
            pod,
            uid,
            gone: false,
            containers: HashMap::new(),
            start_time,
            failure: None,
            pre_stop_done: false,
            last_status: None,
        }
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Message>,
        done: mpsc::UnboundedSender<String>,
    ) {
        let mut next = Instant::now();
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Message::Update(v)) => match serde_json::from_value::<Pod>((*v).clone()) {
                        Ok(p) => self.pod = p,
                        Err(e) => tracing::warn!(uid = %self.uid, "undecodable pod: {e}"),
                    },
                    Some(Message::Poke) => {}
                    Some(Message::Evict(why)) => self.evict(why),
                    Some(Message::Gone) | None => self.gone = true,
                },
                _ = tokio::time::sleep_until(next) => {}
            }
            // Take whatever else is queued before working.
            while let Ok(m) = rx.try_recv() {
                match m {
                    Message::Update(v) => {
                        if let Ok(p) = serde_json::from_value::<Pod>((*v).clone()) {
                            self.pod = p;
                        }
                    }
                    Message::Poke => {}
                    Message::Evict(why) => self.evict(why),
                    Message::Gone => self.gone = true,
                }
            }
            match self.reconcile().await {
                Next::At(t) => next = t,
                Next::Done => break,
            }
        }
        let _ = done.send(self.uid.clone());
    }

    fn spec_of(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    fn deleting(&self) -> bool {
        self.gone || self.pod.metadata.deletion_timestamp.is_some()
    }

    async fn observed(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut all = self.rt.list(&self.ctx.node, Some(&self.uid)).await?;
        // Newest first within each container.
        all.sort_by_key(|c| std::cmp::Reverse(c.attempt()));
        Ok(all)
    }

    async fn reconcile(&mut self) -> Next {
        let observed = match self.observed().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(pod = %spec::name(&self.pod), "listing containers: {e}");
                return Next::At(Instant::now() + Duration::from_secs(1));
            }
        };
        if self.deleting() {
            return self.terminate(observed).await;
        }
        if self.evicted() {
            return self.stay_evicted(observed).await;
        }
        let mut wake = Some(Instant::now() + RESYNC);
        let (sandbox, sandbox_ip) = match self.ensure_sandbox(&observed).await {
            Ok(s) => s,
            Err(e) => {
                self.failure = Some(("SandboxFailed".into(), e.to_string()));
                self.report(&observed, false, None);
                return Next::At(Instant::now() + self.ctx.backoff_base);
            }
        };
        let observed = if observed.iter().any(|c| c.id == sandbox) {
            observed
        } else {
            self.observed().await.unwrap_or_default()
        };
        let host_ip = self.ctx.host_ip.clone();
        let pod_ip = sandbox_ip.clone().unwrap_or_default();
        let tokens = self.ctx.tokens.for_pod(&self.pod).await;
        let volumes = tokens.and_then(|tokens| {
            let fields = PodFields {
                pod: &self.pod,
                node: &self.ctx.node,
                pod_ip: &pod_ip,
                host_ip: &host_ip,
            };
            let sources = volumes::Sources {
                lookup: &*self.ctx.lookup,
                tokens: &tokens,
                cpus: self.ctx.cpus,
                memory: self.ctx.memory,
            };
            volumes::prepare(
                &self.ctx.data_dir,
                &self.pod,
                &fields,
                &sources,
                self.ctx.memory_volumes,
            )
        });
        let volumes = match volumes {
            Ok(v) => {
                if self.failure.as_ref().is_some_and(|f| f.0 == "FailedMount") {
                    self.failure = None;
                }
                v
            }
            Err(e) => {
                self.failure = Some((
                    "FailedMount".into(),
                    format!("MountVolume.SetUp failed: {e}"),
                ));
                self.report(&observed, true, sandbox_ip);
                return Next::At(Instant::now() + Duration::from_secs(2));
            }
        };
        let spec = self.spec_of();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());

        // Init containers, in order; each must succeed before the next.
        let mut init_done = true;
        for c in spec.init_containers.iter().flatten() {
            let latest = latest_of(&observed, &c.name).cloned();
            match latest {
                Some(l) if l.state == State::Exited && l.exit_code == 0 => continue,
                Some(l) if l.state == State::Running => {
                    init_done = false;
                    break;
                }
                Some(l) if l.state == State::Exited => {
                    init_done = false;
                    if policy != "Never" {
                        let w = self
                            .restart_after_backoff(c, &l, &sandbox, &pod_ip, &volumes)
                            .await;
                        wake = wake.map(|t| t.min(w));
                    }
                    break;
                }
                other => {
                    init_done = false;
                    let attempt = other.map(|l| l.attempt() + 1).unwrap_or(0);
                    if let Some(w) = self.start(c, &sandbox, attempt, &pod_ip, &volumes).await {
                        wake = earliest(wake, w);
                    }
                    break;
                }
            }
        }

        if init_done {
            for c in &spec.containers {
                let latest = latest_of(&observed, &c.name).cloned();
                let changed = latest.as_ref().is_some_and(|l| {
                    l.label(crate::runtime::LABEL_SPEC_HASH) != spec::spec_hash(c)
                });
                match latest {
                    Some(l) if changed => {
                        // A changed spec (a new image): replace the container.
                        tracing::info!(pod = %spec::name(&self.pod), container = %c.name, "spec changed; replacing");
                        if l.state == State::Running {
                            let _ = self.rt.stop(&l.id, self.grace()).await;
                        }
                        let _ = self.rt.remove(&l.id).await;
                        if let Some(w) = self
                            .start(c, &sandbox, l.attempt() + 1, &pod_ip, &volumes)
                            .await
                        {
                            wake = earliest(wake, w);
                        }
                    }
                    Some(l) if l.state == State::Running => {
                        if let Some(w) = self.probe(c, &l, &pod_ip).await {
                            wake = earliest(wake, w);
                        }
                    }
                    Some(l) if l.state == State::Created => {
                        if let Err(e) = self.rt.start(&l.id).await {
                            self.wait(c, "RunContainerError", e.to_string());
                        }
                    }
                    Some(l) if l.state == State::Exited => {
                        let restart =
                            policy == "Always" || policy == "OnFailure" && l.exit_code != 0;
                        if restart {
                            let w = self
                                .restart_after_backoff(c, &l, &sandbox, &pod_ip, &volumes)
                                .await;
                            wake = earliest(wake, w);
                        } else {
                            self.state(c).waiting = None;
                        }
                    }
                    Some(_) => {}
                    None => {
                        if let Some(w) = self.start(c, &sandbox, 0, &pod_ip, &volumes).await {
                            wake = earliest(wake, w);
                        }
                    }
                }
            }
        }
        let observed = self.observed().await.unwrap_or(observed);
        self.collect_garbage(&observed).await;
        self.report(&observed, true, sandbox_ip);
        Next::At(wake.unwrap_or_else(|| Instant::now() + RESYNC))
    }

    fn evict(&mut self, why: String) {
        if !self.evicted() {
            self.failure = Some((status::EVICTED.into(), why));
        }
    }

    fn evicted(&self) -> bool {
        self.failure
            .as_ref()
            .is_some_and(|f| f.0 == status::EVICTED)
    }

    /// An evicted pod: its containers killed at once (a hard threshold
    /// allows no grace) and kept for their logs; Failed, for good.
    async fn stay_evicted(&mut self, observed: Vec<ContainerInfo>) -> Next {
        let running = observed.iter().filter(|c| c.state == State::Running);
        let stops = running.map(|c| self.rt.stop(&c.id, Duration::ZERO));
        let stopped = futures::future::join_all(stops).await;
        let observed = if stopped.is_empty() {
            observed
        } else {
            tracing::info!(pod = %spec::name(&self.pod), "evicted; containers killed");
            self.observed().await.unwrap_or(observed)
        };
        self.report(&observed, false, None);
        Next::At(Instant::now() + RESYNC)
    }

    fn state(&mut self, c: &Container) -> &mut ContainerState {
        self.containers.entry(c.name.clone()).or_default()
    }

    fn wait(&mut self, c: &Container, reason: &str, message: String) {
        tracing::info!(pod = %spec::name(&self.pod), container = %c.name, reason, %message, "container waiting");
        self.state(c).waiting = Some((reason.to_string(), message));
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(
            self.spec_of()
                .termination_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64,
        )
    }

    /// The sandbox running, made if need be: its id and address.
    async fn ensure_sandbox(
        &mut self,
        observed: &[ContainerInfo],
    ) -> Result<(String, Option<String>), RuntimeError> {
        let sandboxes: Vec<&ContainerInfo> = observed
            .iter()
            .filter(|c| c.container_name() == SANDBOX)
            .collect();
        if let Some(s) = sandboxes.iter().find(|s| s.state == State::Running) {
            let ip = if self.spec_of().host_network.unwrap_or(false) {
                Some(self.ctx.host_ip.clone())
            } else {
                s.ip.clone()
            };
            return Ok((s.id.clone(), ip));
        }
        // No running sandbox: every container of the pod goes with the old
        // one (its network namespace is gone), as the kubelet does.
        let attempt = sandboxes.iter().map(|s| s.attempt() + 1).max().unwrap_or(0);
        if attempt > 0 {
            tracing::info!(pod = %spec::name(&self.pod), "sandbox is gone; recreating the pod's containers");
            for c in observed {
                let _ = self.rt.remove(&c.id).await;
            }
        }
        let mut cfg =
            spec::sandbox_config(&self.pod, &self.ctx.node, &self.ctx.sandbox_image, attempt);
        if let Some(net) = &self.ctx.network {
            let attached = net
                .attachment(NETWORK_WAIT)
                .await
                .ok_or(RuntimeError::NetworkNotReady)?;
            if !cfg.host_network {
                cfg.network = Some(attached.network.clone());
            }
            let server = attached.gateway.to_string();
            spec::cluster_dns(&self.pod, &server, &self.ctx.cluster_domain, &mut cfg);
            // On the pod network the engine would point resolv.conf at a
            // resolver of its own, which needs the engine's iptables: every
            // container gets the pod's file instead.
            if !cfg.host_network || !cfg.dns.is_empty() {
                let text = spec::resolv_conf(&cfg).unwrap_or_else(|| {
                    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
                });
                let path = self.resolv_conf();
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                std::fs::write(&path, text)
                    .map_err(|e| RuntimeError::Engine(format!("writing resolv.conf: {e}")))?;
            }
        }
        if !self.rt.image_present(&cfg.image).await? {
            return Err(RuntimeError::ImageNotPresent(cfg.image));
        }
        let id = self.rt.create_sandbox(&cfg).await?;
        self.rt.start(&id).await?;
        let info = self.rt.inspect(&id).await?;
        if self.start_time.is_none() {
            self.start_time =
                Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        let ip = if cfg.host_network {
            Some(self.ctx.host_ip.clone())
        } else {
            info.ip
        };
        Ok((id, ip))
    }

    fn resolv_conf(&self) -> PathBuf {
        volumes::pod_dir(&self.ctx.data_dir, &self.uid).join("resolv.conf")
    }

    fn termination_log(&self, c: &Container, attempt: u32) -> PathBuf {
        volumes::pod_dir(&self.ctx.data_dir, &self.uid)
            .join("containers")
            .join(format!("{}-{attempt}", c.name))
            .join("termination-log")
    }

    /// Create and start `c`; Some(time) to look again (a failure to retry).
    async fn start(
        &mut self,
        c: &Container,
        sandbox: &str,
        attempt: u32,
        pod_ip: &str,
        volumes: &std::collections::BTreeMap<String, PathBuf>,
    ) -> Option<Instant> {
        let image = c.image.clone().unwrap_or_default();
        match self.rt.image_present(&image).await {
            Ok(true) => {}
            Ok(false) => {
                let policy = c.image_pull_policy.as_deref().unwrap_or(
                    if crate::image_ref::pull_always_by_default(&image) {
                        "Always"
                    } else {
                        "IfNotPresent"
                    },
                );
                if policy == "Never" {
                    self.wait(
                        c,
                        "ErrImageNeverPull",
                        format!(
                            "Container image \"{image}\" is not present with pull policy of Never"
                        ),
                    );
                } else {
                    self.wait(c, "ImagePullBackOff", format!("Back-off pulling image \"{image}\": the image is not on this node and no registry is reachable from it"));
                }
                return Some(Instant::now() + self.ctx.backoff_base);
            }
            Err(e) => {
                self.wait(c, "ErrImageInspect", e.to_string());
                return Some(Instant::now() + Duration::from_secs(2));
            }
        }
        let host_ip = self.ctx.host_ip.clone();
        let env = {
            let fields = PodFields {
                pod: &self.pod,
                node: &self.ctx.node,
                pod_ip,
                host_ip: &host_ip,
            };
            spec::environment(
                c,
                &fields,
                &*self.ctx.lookup,
                self.ctx.cpus,
                self.ctx.memory,
            )
        };
        let env = match env {
            Ok(e) => e,
            Err(e) => {
                self.wait(c, "CreateContainerConfigError", e.to_string());
                return Some(Instant::now() + Duration::from_secs(2));
            }
        };
        let mut mounts = match volumes::mounts(c, volumes) {
            Ok(m) => m,
            Err(e) => {
                self.wait(c, "CreateContainerConfigError", e.to_string());
                return Some(Instant::now() + Duration::from_secs(2));
            }
        };
        let log = self.termination_log(c, attempt);
        if let Some(dir) = log.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&log, b"");
        mounts.push(Mount {
            host_path: log.to_string_lossy().into_owned(),
            container_path: c
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
            read_only: false,
        });
        let resolv = self.resolv_conf();
        if self.ctx.network.is_some() && resolv.exists() {
            mounts.push(Mount {
                host_path: resolv.to_string_lossy().into_owned(),
                container_path: "/etc/resolv.conf".into(),
                read_only: false,
            });
        }
        let cfg = match spec::container_config(
            &self.pod,
            c,
            &self.ctx.node,
            sandbox,
            attempt,
            env,
            mounts,
        ) {
            Ok(cfg) => cfg,
            Err(e) => {
                self.wait(c, "CreateContainerConfigError", e.to_string());
                return Some(Instant::now() + Duration::from_secs(2));
            }
        };
        let id = match self.rt.create_container(&cfg).await {
            Ok(id) => id,
            Err(e) => {
                self.wait(c, "CreateContainerError", e.to_string());
                return Some(Instant::now() + Duration::from_secs(2));
            }
        };
        if let Err(e) = self.rt.start(&id).await {
            self.wait(c, "RunContainerError", e.to_string());
            return Some(Instant::now() + self.ctx.backoff_base);
        }
        metrics::counter!("skiff_agent_container_starts_total").increment(1);
        if attempt > 0 {
            metrics::counter!("skiff_agent_container_restarts_total").increment(1);
        }
        self.state(c).waiting = None;
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            if let Err(message) = self.hook(&h, c, &id, pod_ip).await {
                tracing::info!(pod = %spec::name(&self.pod), container = %c.name, %message, "postStart hook failed; killing the container");
                let _ = self.rt.stop(&id, self.grace()).await;
                return Some(Instant::now());
            }
        }
        None
    }

    /// Restart an exited container once its back-off has passed.
    async fn restart_after_backoff(
        &mut self,
        c: &Container,
        exited: &ContainerInfo,
        sandbox: &str,
        pod_ip: &str,
        volumes: &std::collections::BTreeMap<String, PathBuf>,
    ) -> Instant {
        let (base, max, reset) = (
            self.ctx.backoff_base,
            self.ctx.backoff_max,
            self.ctx.backoff_reset,
        );
        let ran = match (exited.started_at, exited.finished_at) {
            (Some(s), Some(f)) => (f - s).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let pod_name = spec::name(&self.pod).to_string();
        let ns = spec::namespace(&self.pod).to_string();
        let uid = self.uid.clone();
        let st = self.state(c);
        let now = Instant::now();
        let until = match st.backoff_until {
            Some(u) => u,
            None => {
                st.backoff = if ran >= reset || st.backoff.is_zero() {
                    base
                } else {
                    (st.backoff * 2).min(max)
                };
                let u = now + st.backoff;
                st.backoff_until = Some(u);
                u
            }
        };
        if now < until {
            let message = format!(
                "back-off {} restarting failed container={} pod={pod_name}_{ns}({uid})",
                humantime::format_duration(Duration::from_secs(st.backoff.as_secs())),
                c.name
            );
            st.waiting = Some(("CrashLoopBackOff".into(), message));
            return until;
        }
        st.backoff_until = None;
        st.waiting = None;
        match self
            .start(c, sandbox, exited.attempt() + 1, pod_ip, volumes)
            .await
        {
            Some(t) => t,
            None => Instant::now() + RESYNC,
        }
    }

    /// Run the running container's due probes and act on them.
    async fn probe(&mut self, c: &Container, l: &ContainerInfo, pod_ip: &str) -> Option<Instant> {
        let now = Instant::now();
        {
            let st = self.state(c);
            if st.probes_for != l.id {
                st.probes_for = l.id.clone();
                st.startup = c.startup_probe.as_ref().map(|p| ProbeState::new(p, now));
                st.liveness = c.liveness_probe.as_ref().map(|p| ProbeState::new(p, now));
                st.readiness = c.readiness_probe.as_ref().map(|p| ProbeState::new(p, now));
                st.killing = None;
            }
            if st.killing.as_deref() == Some(l.id.as_str()) {
                return Some(now + Duration::from_secs(1));
            }
        }
        let mut wake: Option<Instant> = None;
        let started = self
            .state(c)
            .startup
            .as_ref()
            .is_none_or(|s| s.result == Some(true));
        let kinds: &[probes::Kind] = if started {
            &[probes::Kind::Liveness, probes::Kind::Readiness]
        } else {
            &[probes::Kind::Startup]
        };
        for kind in kinds {
            let probe = match kind {
                probes::Kind::Startup => c.startup_probe.as_ref(),
                probes::Kind::Liveness => c.liveness_probe.as_ref(),
                probes::Kind::Readiness => c.readiness_probe.as_ref(),
            };
            let Some(probe) = probe else { continue };
            let due = {
                let st = self.state(c);
                let s = match kind {
                    probes::Kind::Startup => st.startup.as_ref(),
                    probes::Kind::Liveness => st.liveness.as_ref(),
                    probes::Kind::Readiness => st.readiness.as_ref(),
                };
                s.map(|s| s.next).unwrap_or(now)
            };
            if due > now {
                wake = earliest(wake, due);
                continue;
            }
            let (ok, message) = probes::run(&self.rt, probe, c, &l.id, pod_ip).await;
            metrics::counter!("skiff_agent_probe_results_total", "probe" => kind.name(), "result" => if ok { "success" } else { "failure" }).increment(1);
            let after = Instant::now();
            let pod_name = spec::name(&self.pod).to_string();
            let grace = self.grace();
            let rt = self.rt.clone();
            let st = self.state(c);
            let s = match kind {
                probes::Kind::Startup => st.startup.as_mut(),
                probes::Kind::Liveness => st.liveness.as_mut(),
                probes::Kind::Readiness => st.readiness.as_mut(),
            };
            let Some(s) = s else { continue };
            s.record(probe, ok, message.clone(), after);
            wake = earliest(wake, s.next);
            let failed = s.result == Some(false);
            if failed && matches!(kind, probes::Kind::Liveness | probes::Kind::Startup) {
                tracing::info!(pod = %pod_name, container = %c.name, probe = kind.name(), %message, "probe failed; restarting the container");
                st.killing = Some(l.id.clone());
                let id = l.id.clone();
                // Stopping takes up to the grace period: not on this task.
                tokio::spawn(async move {
                    let _ = rt.stop(&id, grace).await;
                });
                return Some(after + Duration::from_secs(1));
            }
        }
        wake
    }

    /// Run a lifecycle hook to completion.
    async fn hook(
        &self,
        h: &LifecycleHandler,
        c: &Container,
        id: &str,
        pod_ip: &str,
    ) -> Result<(), String> {
        let timeout = self.grace().max(Duration::from_secs(1));
        if let Some(e) = &h.exec {
            let cmd = e.command.clone().unwrap_or_default();
            return match self.rt.exec(id, cmd, timeout).await {
                Ok(o) if o.exit_code == 0 => Ok(()),
                Ok(o) => Err(format!(
                    "exited with {}: {}",
                    o.exit_code,
                    String::from_utf8_lossy(&o.output).trim()
                )),
                Err(e) => Err(e.to_string()),
            };
        }
        if let Some(g) = &h.http_get {
            let probe = k8s_openapi::api::core::v1::Probe {
                http_get: Some(g.clone()),
                timeout_seconds: Some(timeout.as_secs() as i32),
                ..Default::default()
            };
            let (ok, message) = probes::run(&self.rt, &probe, c, id, pod_ip).await;
            return if ok { Ok(()) } else { Err(message) };
        }
        if let Some(s) = &h.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        }
        Ok(())
    }

    /// Keep each container's latest two instances (the latest and, for
    /// `--previous` and lastState, the one before); remove the rest, and
    /// containers no longer in the spec.
    async fn collect_garbage(&self, observed: &[ContainerInfo]) {
        let spec = self.spec_of();
        let names: Vec<&str> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c| c.name.as_str())
            .collect();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let running_sandbox = observed
            .iter()
            .find(|c| c.container_name() == SANDBOX && c.state == State::Running)
            .map(|c| c.id.clone());
        for c in observed {
            let name = c.container_name();
            if name == SANDBOX {
                if Some(&c.id) != running_sandbox.as_ref() {
                    let _ = self.rt.remove(&c.id).await;
                }
                continue;
            }
            let n = seen.entry(name).or_default();
            *n += 1;
            if *n > 2 || !names.contains(&name) {
                let _ = self.rt.remove(&c.id).await;
            }
        }
    }

    /// Stop everything (preStop hooks, SIGTERM, SIGKILL after the grace),
    /// remove it, and confirm a deletion.
    async fn terminate(&mut self, observed: Vec<ContainerInfo>) -> Next {
        let pod_ip = observed
            .iter()
            .find(|c| c.container_name() == SANDBOX)
            .and_then(|c| c.ip.clone())
            .unwrap_or_default();
        let deadline = self.termination_deadline();
        let running: Vec<ContainerInfo> = observed
            .iter()
            .filter(|c| c.state == State::Running && c.container_name() != SANDBOX)
            .cloned()
            .collect();
        if !running.is_empty() {
            tracing::info!(pod = %spec::name(&self.pod), grace = ?deadline.saturating_duration_since(Instant::now()), "stopping the pod's containers");
        }
        if !self.pre_stop_done {
            self.pre_stop_done = true;
            let spec = self.spec_of();
            let hooks = running.iter().filter_map(|r| {
                let c = spec
                    .containers
                    .iter()
                    .find(|c| c.name == r.container_name())?;
                let h = c.lifecycle.as_ref()?.pre_stop.clone()?;
                Some((h, c.clone(), r.id.clone()))
            });
            let this: &Self = self;
            let runs = hooks.map(move |(h, c, id)| {
                let pod_ip = pod_ip.clone();
                async move {
                    if let Err(m) = this.hook(&h, &c, &id, &pod_ip).await {
                        tracing::info!(container = %c.name, "preStop hook failed: {m}");
                    }
                }
            });
            let _ = tokio::time::timeout_at(deadline, futures::future::join_all(runs)).await;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let stops = running.iter().map(|c| self.rt.stop(&c.id, remaining));
        futures::future::join_all(stops).await;
        for c in observed.iter().filter(|c| c.container_name() == SANDBOX) {
            let _ = self.rt.stop(&c.id, Duration::ZERO).await;
        }
        // The final status: every container terminated.
        let last = match self.observed().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(pod = %spec::name(&self.pod), "listing containers: {e}");
                return Next::At(Instant::now() + Duration::from_secs(1));
            }
        };
        if !self.gone {
            self.report(&last, false, None);
        }
        for c in &last {
            if let Err(e) = self.rt.remove(&c.id).await {
                tracing::warn!(pod = %spec::name(&self.pod), "removing a container: {e}");
                return Next::At(Instant::now() + Duration::from_secs(1));
            }
        }
        // Confirm only what is true: none of the pod's containers is left.
        match self.observed().await {
            Ok(left) if left.is_empty() => {}
            Ok(left) => {
                tracing::info!(pod = %spec::name(&self.pod), left = left.len(), "containers still there; removing again");
                return Next::At(Instant::now() + Duration::from_millis(200));
            }
            Err(e) => {
                tracing::warn!(pod = %spec::name(&self.pod), "listing containers: {e}");
                return Next::At(Instant::now() + Duration::from_secs(1));
            }
        }
        volumes::clean(&self.ctx.data_dir, &self.uid);
        self.ctx.tokens.forget(&self.uid);
        if self.gone {
            self.ctx.reports.forget_pod(&self.uid);
        } else {
            let status =
                serde_json::to_vec(&self.status_json(&last, false, None)).unwrap_or_default();
            self.ctx.reports.pod(PodReport {
                namespace: spec::namespace(&self.pod).to_string(),
                name: spec::name(&self.pod).to_string(),
                uid: self.uid.clone(),
                status_json: status,
                terminated: true,
                seq: 0,
            });
        }
        tracing::info!(pod = %spec::name(&self.pod), "pod stopped and removed");
        Next::Done
    }

    /// When the grace period ends: the pod's deletion timestamp (set to the
    /// end of its grace when deleted), or the grace from now.
    fn termination_deadline(&self) -> Instant {
        let now = Instant::now();
        match &self.pod.metadata.deletion_timestamp {
            Some(t) => {
                let left = (t.0 - chrono::Utc::now()).to_std().unwrap_or_default();
                now + left.min(self.grace())
            }
            None => now + self.grace(),
        }
    }

    fn read_message(&self, c: &Container, info: &ContainerInfo) -> Option<String> {
        let path = self.termination_log(c, info.attempt());
        let bytes = std::fs::read(path).ok()?;
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_MESSAGE)]).into_owned();
        (!text.is_empty()).then_some(text)
    }

    fn status_json(
        &self,
        observed: &[ContainerInfo],
        sandbox_ready: bool,
        pod_ip: Option<String>,
    ) -> Value {
        let spec = self.spec_of();
        let view = |c: &'_ Container| -> (Option<ContainerInfo>, Option<ContainerInfo>) {
            let mut it = observed.iter().filter(|o| o.container_name() == c.name);
            (it.next().cloned(), it.next().cloned())
        };
        let init_infos: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c.clone(), view(c)))
            .collect();
        let app_infos: Vec<_> = spec
            .containers
            .iter()
            .map(|c| (c.clone(), view(c)))
            .collect();
        let make =
            |(c, (latest, prev)): &(Container, (Option<ContainerInfo>, Option<ContainerInfo>)),
             app: bool| {
                let st = self.containers.get(&c.name);
                let running = latest.as_ref().is_some_and(|l| l.state == State::Running);
                let started = running
                    && st
                        .and_then(|s| s.startup.as_ref())
                        .is_none_or(|p| p.result == Some(true));
                let ready = app
                    && started
                    && st
                        .and_then(|s| s.readiness.as_ref())
                        .is_none_or(|p| p.result == Some(true))
                    && st.is_none_or(|s| s.killing.is_none());
                let message = latest.as_ref().and_then(|l| self.read_message(c, l));
                let previous_message = prev.as_ref().and_then(|p| self.read_message(c, p));
                (
                    st.and_then(|s| s.waiting.clone()),
                    ready,
                    started,
                    message,
                    previous_message,
                )
            };
        let init_extra: Vec<_> = init_infos.iter().map(|x| make(x, false)).collect();
        let app_extra: Vec<_> = app_infos.iter().map(|x| make(x, true)).collect();
        fn views<'a>(infos: &'a [Instances], extra: &'a [Extra]) -> Vec<ContainerView<'a>> {
            infos
                .iter()
                .zip(extra)
                .map(|((c, (latest, prev)), e)| ContainerView {
                    spec: c,
                    latest: latest.as_ref(),
                    previous: prev.as_ref(),
                    waiting: e.0.clone(),
                    ready: e.1,
                    started: e.2,
                    message: e.3.clone(),
                    previous_message: e.4.clone(),
                })
                .collect()
        }
        let init = views(&init_infos, &init_extra);
        let app = views(&app_infos, &app_extra);
        status::pod_status(&PodView {
            pod: &self.pod,
            init,
            app,
            sandbox_ready,
            pod_ip,
            host_ip: &self.ctx.host_ip,
            start_time: self.start_time.clone(),
            failure: self.failure.clone(),
            previous: self.last_status.as_ref(),
        })
    }

    fn report(&mut self, observed: &[ContainerInfo], sandbox_ready: bool, pod_ip: Option<String>) {
        let status = self.status_json(observed, sandbox_ready, pod_ip);
        self.last_status = Some(status.clone());
        self.ctx.reports.pod(PodReport {
            namespace: spec::namespace(&self.pod).to_string(),
            name: spec::name(&self.pod).to_string(),
            uid: self.uid.clone(),
            status_json: serde_json::to_vec(&status).unwrap_or_default(),
            terminated: false,
            seq: 0,
        });
    }
}

/// A container's spec with its latest and previous instances.
type Instances = (Container, (Option<ContainerInfo>, Option<ContainerInfo>));

/// What the worker adds to a container's view: waiting reason, ready,
/// started, and the termination messages of the latest and previous runs.
type Extra = (
    Option<(String, String)>,
    bool,
    bool,
    Option<String>,
    Option<String>,
);

fn latest_of<'a>(observed: &'a [ContainerInfo], name: &str) -> Option<&'a ContainerInfo> {
    observed.iter().find(|c| c.container_name() == name)
}

impl From<SpecError> for RuntimeError {
    fn from(e: SpecError) -> Self {
        RuntimeError::Engine(e.to_string())
    }
}
