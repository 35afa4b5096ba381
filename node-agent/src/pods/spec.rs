//! A pod's spec, turned into what the runtime runs: the sandbox, and each
//! container with its command, environment (values, references to
//! ConfigMaps, Secrets, the pod's own fields and resources, `$(VAR)`
//! expansion), mounts, resource limits and security settings.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, ResourceFieldSelector};
use proto::quantity::Quantity;
use serde_json::Value;

use crate::runtime::{
    ContainerConfig, HostPort, Mount, SandboxConfig, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NODE,
    LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID, LABEL_SPEC_HASH, SANDBOX,
};

/// Why a container's configuration cannot be made (the pod shows it as
/// `CreateContainerConfigError`, as Kubernetes does).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{kind} {name:?} not found")]
    Missing { kind: &'static str, name: String },
    #[error("couldn't find key {key} in {kind} {ns}/{name}")]
    MissingKey {
        kind: &'static str,
        ns: String,
        name: String,
        key: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Objects the node holds, by kind, namespace and name.
pub trait Lookup {
    fn object(&self, kind: &str, ns: &str, name: &str) -> Option<std::sync::Arc<Value>>;
    /// Every object of `kind` in `ns` (Services, for their variables).
    fn list_in(&self, kind: &str, ns: &str) -> Vec<std::sync::Arc<Value>>;
}

impl Lookup for crate::desired::Desired {
    fn object(&self, kind: &str, ns: &str, name: &str) -> Option<std::sync::Arc<Value>> {
        self.get(kind, ns, name)
    }

    fn list_in(&self, kind: &str, ns: &str) -> Vec<std::sync::Arc<Value>> {
        crate::desired::Desired::list_in(self, kind, ns)
    }
}

/// The namespace of the `kubernetes` Service, whose variables every
/// container gets.
const MASTER_SERVICE_NAMESPACE: &str = "default";

/// A Service's name as a variable prefix: `my-svc` → `MY_SVC`.
fn variable_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// The variables of one Service, as the kubelet (and Docker links before
/// it) name them: `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT[_<NAME>]`,
/// `<SVC>_PORT`, `<SVC>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`.
fn service_variables(svc: &Value, out: &mut Vec<(String, String)>) {
    let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("");
    let ports = svc["spec"]["ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if ip.is_empty() || ip == "None" || ports.is_empty() {
        return;
    }
    let prefix = variable_name(svc["metadata"]["name"].as_str().unwrap_or(""));
    let port_of = |p: &Value| p["port"].as_i64().unwrap_or(0);
    out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
    out.push((
        format!("{prefix}_SERVICE_PORT"),
        port_of(&ports[0]).to_string(),
    ));
    for p in ports {
        if let Some(name) = p["name"].as_str().filter(|n| !n.is_empty()) {
            out.push((
                format!("{prefix}_SERVICE_PORT_{}", variable_name(name)),
                port_of(p).to_string(),
            ));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let protocol = p["protocol"].as_str().unwrap_or("TCP");
        let (lower, upper) = (protocol.to_lowercase(), protocol.to_uppercase());
        let port = port_of(p);
        let url = format!("{lower}://{ip}:{port}");
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let base = format!("{prefix}_PORT_{port}_{upper}");
        out.push((format!("{base}_PROTO"), lower));
        out.push((format!("{base}_PORT"), port.to_string()));
        out.push((format!("{base}_ADDR"), ip.to_string()));
        out.push((base, url));
    }
}

/// The variables of the Services a pod sees: those of its namespace
/// (unless `enableServiceLinks: false`) and the `kubernetes` Service.
pub fn service_environment(pod: &Pod, lookup: &dyn Lookup) -> Vec<(String, String)> {
    let ns = namespace(pod);
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut services: BTreeMap<String, std::sync::Arc<Value>> = BTreeMap::new();
    if links {
        for s in lookup.list_in("Service", ns) {
            let name = s["metadata"]["name"].as_str().unwrap_or("").to_string();
            services.insert(name, s);
        }
    }
    // The namespace's own Service of that name, if it has one, wins.
    if !services.contains_key("kubernetes") {
        if let Some(s) = lookup.object("Service", MASTER_SERVICE_NAMESPACE, "kubernetes") {
            services.insert("kubernetes".into(), s);
        }
    }
    let mut out = Vec::new();
    for s in services.values() {
        service_variables(s, &mut out);
    }
    out
}

pub fn meta<'a>(
    pod: &'a Pod,
    f: impl Fn(&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<&'a String>,
) -> &'a str {
    f(&pod.metadata).map(String::as_str).unwrap_or("")
}

pub fn uid(pod: &Pod) -> &str {
    meta(pod, |m| m.uid.as_ref())
}

pub fn name(pod: &Pod) -> &str {
    meta(pod, |m| m.name.as_ref())
}

pub fn namespace(pod: &Pod) -> &str {
    meta(pod, |m| m.namespace.as_ref())
}

/// A short stable hash of a container's spec: a container whose spec
/// changes is replaced; one whose spec is the same is adopted.
pub fn spec_hash(c: &Container) -> String {
    let json = serde_json::to_vec(c).unwrap_or_default();
    let d = ring::digest::digest(&ring::digest::SHA256, &json);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn labels(pod: &Pod, node: &str, container: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_NODE.to_string(), node.to_string()),
        (LABEL_POD_UID.to_string(), uid(pod).to_string()),
        (LABEL_POD_NAME.to_string(), name(pod).to_string()),
        (LABEL_POD_NAMESPACE.to_string(), namespace(pod).to_string()),
        (LABEL_CONTAINER.to_string(), container.to_string()),
    ])
}

/// Docker names a container once: the kubelet's dockershim scheme.
pub fn container_name(pod: &Pod, container: &str, attempt: u32) -> String {
    format!(
        "k8s_{container}_{}_{}_{}_{attempt}",
        name(pod),
        namespace(pod),
        uid(pod)
    )
}

pub fn sandbox_config(pod: &Pod, node: &str, image: &str, attempt: u32) -> SandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| name(pod).chars().take(63).collect());
    let mut labels = labels(pod, node, SANDBOX);
    labels.insert(LABEL_ATTEMPT.into(), attempt.to_string());
    let host_ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(HostPort {
                container_port: u16::try_from(p.container_port).ok()?,
                host_port: u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                host_ip: p.host_ip.clone(),
            })
        })
        .collect();
    let extra_hosts = spec
        .host_aliases
        .iter()
        .flatten()
        .flat_map(|a| {
            a.hostnames
                .iter()
                .flatten()
                .map(move |h| format!("{h}:{}", a.ip))
        })
        .collect();
    let (dns, dns_search, dns_options) = match (spec.dns_policy.as_deref(), &spec.dns_config) {
        (Some("None"), Some(c)) => (
            c.nameservers.clone().unwrap_or_default(),
            c.searches.clone().unwrap_or_default(),
            dns_options(c),
        ),
        _ => (Vec::new(), Vec::new(), Vec::new()),
    };
    SandboxConfig {
        name: container_name(pod, SANDBOX, attempt),
        image: image.to_string(),
        hostname,
        labels,
        host_ports,
        host_network: spec.host_network.unwrap_or(false),
        network: None,
        dns,
        dns_search,
        dns_options,
        extra_hosts,
    }
}

fn dns_options(c: &k8s_openapi::api::core::v1::PodDNSConfig) -> Vec<String> {
    c.options
        .iter()
        .flatten()
        .map(|o| match &o.value {
            Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or("")),
            None => o.name.clone().unwrap_or_default(),
        })
        .collect()
}

/// The resolver settings of a pod on the pod network, whose node serves
/// cluster DNS at `server`: ClusterFirst (the default) gets the cluster's
/// server and search path, with dnsConfig merged in; Default keeps the
/// node's resolver; None is left to dnsConfig alone.
pub fn cluster_dns(pod: &Pod, server: &str, domain: &str, cfg: &mut SandboxConfig) {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network.unwrap_or(false);
    let cluster_first = match policy {
        "ClusterFirst" => !host_network,
        "ClusterFirstWithHostNet" => true,
        _ => false,
    };
    if !cluster_first {
        return;
    }
    let ns = namespace(pod);
    cfg.dns = vec![server.to_string()];
    cfg.dns_search = vec![
        format!("{ns}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_string(),
    ];
    cfg.dns_options = vec!["ndots:5".to_string()];
    if let Some(c) = &spec.dns_config {
        for n in c.nameservers.iter().flatten() {
            if !cfg.dns.contains(n) {
                cfg.dns.push(n.clone());
            }
        }
        cfg.dns_search.extend(c.searches.iter().flatten().cloned());
        let extra = dns_options(c);
        cfg.dns_options.retain(|o| {
            !extra
                .iter()
                .any(|e| e.split(':').next() == o.split(':').next())
        });
        cfg.dns_options.extend(extra);
    }
}

/// The resolv.conf a sandbox's settings say, if they say anything.
pub fn resolv_conf(cfg: &SandboxConfig) -> Option<String> {
    if cfg.dns.is_empty() && cfg.dns_search.is_empty() && cfg.dns_options.is_empty() {
        return None;
    }
    let mut out = String::new();
    for n in &cfg.dns {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !cfg.dns_search.is_empty() {
        out.push_str(&format!("search {}\n", cfg.dns_search.join(" ")));
    }
    if !cfg.dns_options.is_empty() {
        out.push_str(&format!("options {}\n", cfg.dns_options.join(" ")));
    }
    Some(out)
}

fn decode_secret(v: &Value) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// What a container's environment may refer to besides other objects.
pub struct PodFields<'a> {
    pub pod: &'a Pod,
    pub node: &'a str,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
}

pub fn field_value(f: &PodFields<'_>, path: &str) -> Result<String, SpecError> {
    let m = &f.pod.metadata;
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => name(f.pod).into(),
        "metadata.namespace" => namespace(f.pod).into(),
        "metadata.uid" => uid(f.pod).into(),
        "spec.nodeName" => f.node.into(),
        "spec.serviceAccountName" => f
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => f.pod_ip.into(),
        "status.podIPs" => f.pod_ip.into(),
        "status.hostIP" | "status.hostIPs" => f.host_ip.into(),
        p if p.starts_with("metadata.labels['") => m
            .labels
            .as_ref()
            .and_then(|l| l.get(&map_key("metadata.labels['")?).cloned())
            .unwrap_or_default(),
        p if p.starts_with("metadata.annotations['") => m
            .annotations
            .as_ref()
            .and_then(|l| l.get(&map_key("metadata.annotations['")?).cloned())
            .unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        other => {
            return Err(SpecError::Invalid(format!(
                "unsupported fieldRef {other:?}"
            )))
        }
    })
}

/// `k="v"` lines, as the downward API writes label and annotation maps.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

pub fn resource_value(
    pod: &Pod,
    default_container: Option<&str>,
    r: &ResourceFieldSelector,
    node_cpus: u64,
    node_memory: u64,
) -> Result<String, SpecError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let cname = r
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or(default_container)
        .unwrap_or("");
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == cname)
        .ok_or_else(|| {
            SpecError::Invalid(format!("no container {cname:?} for resourceFieldRef"))
        })?;
    let (which, res) = r
        .resource
        .split_once('.')
        .ok_or_else(|| SpecError::Invalid(format!("bad resource {:?}", r.resource)))?;
    let res_map = c.resources.as_ref().and_then(|rr| match which {
        "limits" => rr.limits.as_ref(),
        "requests" => rr.requests.as_ref(),
        _ => None,
    });
    let q = res_map
        .and_then(|m| m.get(res))
        .map(|q| Quantity::parse(&q.0))
        .transpose()
        .map_err(|e| SpecError::Invalid(e.to_string()))?;
    let divisor = r
        .divisor
        .as_ref()
        .map(|d| Quantity::parse(&d.0))
        .transpose()
        .map_err(|e| SpecError::Invalid(e.to_string()))?;
    let (value_millis, default_div_millis) = match res {
        "cpu" => (
            q.map(|q| q.millis()).unwrap_or(node_cpus as i128 * 1000),
            1000,
        ),
        "memory" | "ephemeral-storage" => (
            q.map(|q| q.millis()).unwrap_or(node_memory as i128 * 1000),
            1000,
        ),
        other => {
            return Err(SpecError::Invalid(format!(
                "unsupported resource {other:?}"
            )))
        }
    };
    let div = divisor
        .map(|d| d.millis())
        .filter(|d| *d > 0)
        .unwrap_or(default_div_millis);
    // Rounded up, as the kubelet rounds it.
    Ok(((value_millis + div - 1) / div).to_string())
}

/// `$(VAR)` expanded from the variables defined so far; `$$(` stays literal.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A key of a ConfigMap (data or binaryData) or Secret (decoded).
fn object_key(
    lookup: &dyn Lookup,
    kind: &'static str,
    ns: &str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, SpecError> {
    let Some(o) = lookup.object(kind, ns, name) else {
        return if optional {
            Ok(None)
        } else {
            Err(SpecError::Missing {
                kind: if kind == "Secret" {
                    "secret"
                } else {
                    "configmap"
                },
                name: name.to_string(),
            })
        };
    };
    let v = if kind == "Secret" {
        o["data"].get(key).and_then(decode_secret)
    } else {
        o["data"]
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match v {
        Some(v) => Ok(Some(v)),
        None if optional => Ok(None),
        None => Err(SpecError::MissingKey {
            kind,
            ns: ns.to_string(),
            name: name.to_string(),
            key: key.to_string(),
        }),
    }
}

/// The container's environment, in order, with references resolved.
pub fn environment(
    c: &Container,
    fields: &PodFields<'_>,
    lookup: &dyn Lookup,
    node_cpus: u64,
    node_memory: u64,
) -> Result<Vec<(String, String)>, SpecError> {
    let ns = namespace(fields.pod);
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut defined: HashMap<String, String> = HashMap::new();
    let set = |vars: &mut Vec<(String, String)>,
               defined: &mut HashMap<String, String>,
               k: String,
               v: String| {
        defined.insert(k.clone(), v.clone());
        if let Some(e) = vars.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            vars.push((k, v));
        }
    };
    // The Services' variables come last, unless the container sets them,
    // and `$(VAR)` may name them (as the kubelet).
    let services = service_environment(fields.pod, lookup);
    defined.extend(services.iter().cloned());
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => ("ConfigMap", r.name.clone(), r.optional.unwrap_or(false)),
            (None, Some(r)) => ("Secret", r.name.clone(), r.optional.unwrap_or(false)),
            _ => continue,
        };
        let Some(o) = lookup.object(kind, ns, &name) else {
            if optional {
                continue;
            }
            return Err(SpecError::Missing {
                kind: if kind == "Secret" {
                    "secret"
                } else {
                    "configmap"
                },
                name,
            });
        };
        for (k, v) in o["data"].as_object().into_iter().flatten() {
            let v = if kind == "Secret" {
                decode_secret(v)
            } else {
                v.as_str().map(str::to_string)
            };
            if let Some(v) = v {
                set(&mut vars, &mut defined, format!("{prefix}{k}"), v);
            }
        }
    }
    for EnvVar {
        name,
        value,
        value_from,
    } in c.env.iter().flatten()
    {
        let v = match (value, value_from) {
            (Some(v), _) => Some(expand(v, &defined)),
            (None, Some(from)) => {
                if let Some(r) = &from.config_map_key_ref {
                    object_key(
                        lookup,
                        "ConfigMap",
                        ns,
                        &r.name,
                        &r.key,
                        r.optional.unwrap_or(false),
                    )?
                } else if let Some(r) = &from.secret_key_ref {
                    object_key(
                        lookup,
                        "Secret",
                        ns,
                        &r.name,
                        &r.key,
                        r.optional.unwrap_or(false),
                    )?
                } else if let Some(r) = &from.field_ref {
                    Some(field_value(fields, &r.field_path)?)
                } else if let Some(r) = &from.resource_field_ref {
                    Some(resource_value(
                        fields.pod,
                        Some(&c.name),
                        r,
                        node_cpus,
                        node_memory,
                    )?)
                } else {
                    None
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(v) = v {
            set(&mut vars, &mut defined, name.clone(), v);
        }
    }
    for (k, v) in services {
        if !vars.iter().any(|(n, _)| *n == k) {
            vars.push((k, v));
        }
    }
    Ok(vars)
}

/// Docker's limits for a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes.
    pub memory: Option<i64>,
    /// Billionths of a CPU, from the CPU limit.
    pub nano_cpus: Option<i64>,
    /// CPU shares, from the CPU request (as the kubelet sets them).
    pub cpu_shares: Option<i64>,
}

/// Docker's limits from the container's resources.
pub fn limits(c: &Container) -> Result<Limits, SpecError> {
    let get = |m: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               k: &str| {
        m.and_then(|m| m.get(k))
            .map(|q| {
                Quantity::parse(&q.0).map_err(|e| SpecError::Invalid(format!("{k} {:?}: {e}", q.0)))
            })
            .transpose()
    };
    let r = c.resources.clone().unwrap_or_default();
    let mem = get(r.limits.as_ref(), "memory")?.map(|q| q.value() as i64);
    let cpu = get(r.limits.as_ref(), "cpu")?.map(|q| (q.millis() * 1_000_000) as i64);
    let shares = get(r.requests.as_ref(), "cpu")?
        .or(get(r.limits.as_ref(), "cpu")?)
        .map(|q| ((q.millis() * 1024) / 1000).max(2) as i64);
    Ok(Limits {
        memory: mem,
        nano_cpus: cpu,
        cpu_shares: shares,
    })
}

/// Everything the runtime needs to create `c`.
#[allow(clippy::too_many_arguments)]
pub fn container_config(
    pod: &Pod,
    c: &Container,
    node: &str,
    sandbox_id: &str,
    attempt: u32,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
) -> Result<ContainerConfig, SpecError> {
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let Limits {
        memory: memory_limit,
        nano_cpus,
        cpu_shares,
    } = limits(c)?;
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let uid = sc.run_as_user.or(psc.run_as_user);
    let gid = sc.run_as_group.or(psc.run_as_group);
    let user = match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => Some(format!("0:{g}")),
        (None, None) => None,
    };
    let caps = sc.capabilities.clone().unwrap_or_default();
    let mut labels = labels(pod, node, &c.name);
    labels.insert(LABEL_SPEC_HASH.into(), spec_hash(c));
    labels.insert(LABEL_ATTEMPT.into(), attempt.to_string());
    let expand_all = |v: &Option<Vec<String>>| {
        v.as_ref()
            .map(|v| v.iter().map(|s| expand(s, &vars)).collect())
    };
    Ok(ContainerConfig {
        name: container_name(pod, &c.name, attempt),
        image: c.image.clone().unwrap_or_default(),
        sandbox_id: sandbox_id.to_string(),
        entrypoint: expand_all(&c.command),
        cmd: expand_all(&c.args).or_else(|| c.command.as_ref().map(|_| Vec::new())),
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        working_dir: c.working_dir.clone(),
        labels,
        mounts,
        memory_limit,
        nano_cpus,
        cpu_shares,
        user,
        read_only_root: sc.read_only_root_filesystem.unwrap_or(false),
        privileged: sc.privileged.unwrap_or(false),
        cap_add: caps.add.unwrap_or_default(),
        cap_drop: caps.drop.unwrap_or_default(),
        tty: c.tty.unwrap_or(false),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    struct Objects(Vec<(String, String, Value)>);

    impl Lookup for Objects {
        fn object(&self, kind: &str, _ns: &str, name: &str) -> Option<Arc<Value>> {
            self.0
                .iter()
                .find(|(k, n, _)| k == kind && n == name)
                .map(|(_, _, v)| Arc::new(v.clone()))
        }

        fn list_in(&self, kind: &str, _ns: &str) -> Vec<Arc<Value>> {
            self.0
                .iter()
                .filter(|(k, _, _)| k == kind)
                .map(|(_, _, v)| Arc::new(v.clone()))
                .collect()
        }
    }

    #[test]
    fn services_are_seen_as_the_kubelet_names_them() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "env": [
                {"name": "API", "value": "$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
                {"name": "MY_DB_SERVICE_HOST", "value": "mine"},
            ]}]},
        }))
        .unwrap();
        let objects = Objects(vec![
            (
                "Service".into(),
                "kubernetes".into(),
                json!({
                    "metadata": {"name": "kubernetes", "namespace": "default"},
                    "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]},
                }),
            ),
            (
                "Service".into(),
                "my-db".into(),
                json!({
                    "metadata": {"name": "my-db", "namespace": "ns"},
                    "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 5432}, {"name": "metrics", "port": 9187, "protocol": "TCP"}]},
                }),
            ),
            (
                "Service".into(),
                "headless".into(),
                json!({
                    "metadata": {"name": "headless", "namespace": "ns"},
                    "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
                }),
            ),
        ]);
        let fields = PodFields {
            pod: &pod,
            node: "n1",
            pod_ip: "10.0.0.5",
            host_ip: "127.0.0.1",
        };
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let env = environment(c, &fields, &objects, 4, 1 << 30).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.96.0.1"));
        assert_eq!(get("API"), Some("10.96.0.1:443"));
        assert_eq!(
            get("MY_DB_SERVICE_HOST"),
            Some("mine"),
            "the container's own value wins"
        );
        assert_eq!(get("MY_DB_SERVICE_PORT"), Some("5432"));
        assert_eq!(get("MY_DB_SERVICE_PORT_METRICS"), Some("9187"));
        assert_eq!(get("MY_DB_PORT_9187_TCP_PORT"), Some("9187"));
        assert!(get("HEADLESS_SERVICE_HOST").is_none());

        let mut unlinked = pod.clone();
        unlinked.spec.as_mut().unwrap().enable_service_links = Some(false);
        let vars = service_environment(&unlinked, &objects);
        assert!(vars.iter().any(|(k, _)| k == "KUBERNETES_SERVICE_HOST"));
        assert!(!vars.iter().any(|(k, _)| k.starts_with("MY_DB")));
    }

    #[test]
    fn environment_resolves_references_in_order() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "c",
                "resources": {"limits": {"cpu": "2.007", "memory": "64Mi"}},
                "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                "env": [
                    {"name": "A", "value": "a"},
                    {"name": "B", "value": "$(A)-b-$$(A)-$(NOPE)"},
                    {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                ],
            }]},
        }))
        .unwrap();
        let objects = Objects(vec![
            ("ConfigMap".into(), "cm".into(), json!({"data": {"x": "1"}})),
            (
                "Secret".into(),
                "sec".into(),
                json!({"data": {"pw": "aHVudGVyMg=="}}),
            ),
        ]);
        let fields = PodFields {
            pod: &pod,
            node: "n1",
            pod_ip: "10.0.0.5",
            host_ip: "127.0.0.1",
        };
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let env = environment(c, &fields, &objects, 4, 1 << 30).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CM_x"), Some("1"));
        assert_eq!(get("B"), Some("a-b-$(A)-$(NOPE)"));
        assert_eq!(get("S"), Some("hunter2"));
        assert_eq!(get("POD"), Some("p"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("IP"), Some("10.0.0.5"));
        assert_eq!(get("CPU"), Some("2007"));
        assert_eq!(get("MEM"), Some("64"));
        assert_eq!(
            limits(c).unwrap(),
            Limits {
                memory: Some(64 << 20),
                nano_cpus: Some(2_007_000_000),
                cpu_shares: Some(2055)
            }
        );

        let missing = Objects(vec![]);
        assert_eq!(
            environment(c, &fields, &missing, 4, 1 << 30).unwrap_err(),
            SpecError::Missing {
                kind: "configmap",
                name: "cm".into()
            }
        );
    }
}
