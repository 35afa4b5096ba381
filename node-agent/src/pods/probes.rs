//! Liveness, readiness and startup probes: exec, httpGet and tcpSocket,
//! with their timing (initialDelaySeconds, periodSeconds, timeoutSeconds,
//! successThreshold, failureThreshold). The pod worker runs the probes
//! that are due and acts on the results: a failed startup or liveness
//! probe kills the container, readiness drives the Ready condition.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }
}

/// One probe's state for one running container.
#[derive(Debug, Clone)]
pub struct ProbeState {
    successes: u32,
    failures: u32,
    /// The settled result: None until the thresholds decide it.
    pub result: Option<bool>,
    pub next: Instant,
    pub last_message: String,
}

impl ProbeState {
    pub fn new(p: &Probe, started: Instant) -> ProbeState {
        ProbeState {
            successes: 0,
            failures: 0,
            result: None,
            next: started + Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
            last_message: String::new(),
        }
    }

    /// Record one run's outcome.
    pub fn record(&mut self, p: &Probe, ok: bool, message: String, now: Instant) {
        let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
        self.next = now + period;
        self.last_message = message;
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= p.success_threshold.unwrap_or(1).max(1) as u32 {
                self.result = Some(true);
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= p.failure_threshold.unwrap_or(3).max(1) as u32 {
                self.result = Some(false);
            }
        }
    }
}

fn port_of(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no port named {name:?}")),
    }
}

/// Run the probe once: (success, message).
pub async fn run<R: Runtime>(
    rt: &R,
    p: &Probe,
    c: &Container,
    container_id: &str,
    pod_ip: &str,
) -> (bool, String) {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match rt.exec(container_id, cmd, timeout).await {
            Ok(o) if o.exit_code == 0 => (true, String::new()),
            Ok(o) => (
                false,
                format!(
                    "command exited with {}: {}",
                    o.exit_code,
                    String::from_utf8_lossy(&o.output).trim()
                ),
            ),
            Err(e) => (false, e.to_string()),
        };
    }
    if let Some(h) = &p.http_get {
        let port = match port_of(c, &h.port) {
            Ok(p) => p,
            Err(e) => return (false, e),
        };
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        return match tokio::time::timeout(timeout, http_get(&host, port, &path)).await {
            Ok(Ok(code)) if (200..400).contains(&code) => (true, String::new()),
            Ok(Ok(code)) => (false, format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => (false, format!("Get \"http://{host}:{port}{path}\": {e}")),
            Err(_) => (
                false,
                format!("Get \"http://{host}:{port}{path}\": timed out after {timeout:?}"),
            ),
        };
    }
    if let Some(t) = &p.tcp_socket {
        let port = match port_of(c, &t.port) {
            Ok(p) => p,
            Err(e) => return (false, e),
        };
        let host = t
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => (true, String::new()),
            Ok(Err(e)) => (false, format!("dial tcp {host}:{port}: {e}")),
            Err(_) => (false, format!("dial tcp {host}:{port}: timed out")),
        };
    }
    (
        false,
        "probe has no handler this node supports (exec, httpGet, tcpSocket)".into(),
    )
}

/// The status code of `GET path` (HTTP/1.0, enough for a probe).
async fn http_get(host: &str, port: u16, path: &str) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect((host, port)).await?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 256];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("malformed HTTP response {line:?}")))
}
