//! Server-side printing: `meta.k8s.io/v1` Tables with the columns kubectl
//! users know, for clients that ask with `Accept: ...;as=Table;...`.
//! Columns of priority 1 appear only with `kubectl get -o wide`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::resources::Resource;

/// Whether the Accept header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    })
}

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn from_query(value: Option<&str>) -> Self {
        match value {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

struct Column {
    name: &'static str,
    kind: &'static str,
    wide: bool,
    cell: Cell,
}

/// How a cell is found: most are one field of the object.
#[derive(Clone, Copy)]
enum Cell {
    /// An integer field; the given default when absent.
    Int(&'static str, i64),
    /// A string field, as it is.
    Text(&'static str),
    /// A string field, `<none>` when absent or empty.
    TextOrNone(&'static str),
    Computed(fn(&Value, Now) -> Value),
}

impl Cell {
    fn of(self, o: &Value, now: Now) -> Value {
        match self {
            Cell::Int(p, default) => json!(o.pointer(p).and_then(Value::as_i64).unwrap_or(default)),
            Cell::Text(p) => json!(s(o, p)),
            Cell::TextOrNone(p) => or_none(s(o, p).to_string()),
            Cell::Computed(f) => f(o, now),
        }
    }
}

#[derive(Clone, Copy)]
pub struct Now(pub DateTime<Utc>);

const fn col(name: &'static str, cell: fn(&Value, Now) -> Value) -> Column {
    Column {
        name,
        kind: "string",
        wide: false,
        cell: Cell::Computed(cell),
    }
}

const fn text(name: &'static str, cell: Cell) -> Column {
    Column {
        name,
        kind: "string",
        wide: false,
        cell,
    }
}

/// An integer column read from `pointer` (0 when absent).
const fn int(name: &'static str, pointer: &'static str) -> Column {
    Column {
        name,
        kind: "integer",
        wide: false,
        cell: Cell::Int(pointer, 0),
    }
}

/// An integer column read from `pointer`, `default` when absent.
const fn int_or(name: &'static str, pointer: &'static str, default: i64) -> Column {
    Column {
        name,
        kind: "integer",
        wide: false,
        cell: Cell::Int(pointer, default),
    }
}

/// An integer column computed from the object.
const fn count(name: &'static str, cell: fn(&Value, Now) -> Value) -> Column {
    Column {
        name,
        kind: "integer",
        wide: false,
        cell: Cell::Computed(cell),
    }
}

const fn wide(name: &'static str, cell: Cell) -> Column {
    Column {
        name,
        kind: "string",
        wide: true,
        cell,
    }
}

fn s<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The elements of the array at `pointer` (none when absent).
fn items<'a>(o: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    o.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The string map at `pointer` as `k=v,...`, or `<none>`.
fn pairs(o: &Value, pointer: &str) -> Value {
    let parts: Vec<String> = o
        .pointer(pointer)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    or_none(parts.join(","))
}

fn n(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(v: String) -> Value {
    json!(if v.is_empty() {
        "<none>".to_string()
    } else {
        v
    })
}

fn age(o: &Value, now: Now) -> Value {
    json!(since(s(o, "/metadata/creationTimestamp"), now))
}

/// Time since an RFC 3339 timestamp, in kubectl's short form ("5m", "3d4h").
fn since(stamp: &str, now: Now) -> String {
    match DateTime::parse_from_rfc3339(stamp) {
        Ok(t) => human_duration(now.0.signed_duration_since(t.with_timezone(&Utc))),
        Err(_) => "<unknown>".into(),
    }
}

/// A duration rounded the way people read ages: more precision when short.
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86400);
    let with = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    if secs < 120 {
        format!("{secs}s")
    } else if mins < 10 {
        with(mins, "m", secs % 60, "s")
    } else if hours < 3 {
        format!("{mins}m")
    } else if hours < 8 {
        with(hours, "h", mins % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if days < 8 {
        with(days, "d", hours % 24, "h")
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        with(days / 365, "y", days % 365, "d")
    } else {
        format!("{}y", days / 365)
    }
}

fn containers_of(pod_spec: Option<&Value>) -> impl Iterator<Item = &Value> {
    pod_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn template_containers(o: &Value, _: Now) -> Value {
    let names: Vec<&str> = containers_of(o.pointer("/spec/template/spec"))
        .map(|c| s(c, "/name"))
        .collect();
    or_none(names.join(","))
}

fn template_images(o: &Value, _: Now) -> Value {
    let images: Vec<&str> = containers_of(o.pointer("/spec/template/spec"))
        .map(|c| s(c, "/image"))
        .collect();
    or_none(images.join(","))
}

fn label_selector(o: &Value, _: Now) -> Value {
    let Some(sel) = o.pointer("/spec/selector") else {
        return json!("<none>");
    };
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let key = s(e, "/key");
        parts.push(match s(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op}"),
        });
    }
    or_none(parts.join(","))
}

fn map_selector(o: &Value, _: Now) -> Value {
    pairs(o, "/spec/selector")
}

// Pods.

fn pod_ready(o: &Value, _: Now) -> Value {
    let total = containers_of(o.get("spec")).count();
    let ready = items(o, "/status/containerStatuses")
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    json!(format!("{ready}/{total}"))
}

fn pod_status(o: &Value, _: Now) -> Value {
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        return json!("Terminating");
    }
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    // A container's waiting or terminated reason says more than the phase.
    for c in statuses.into_iter().flatten() {
        for state in ["waiting", "terminated"] {
            let reason = s(c, &format!("/state/{state}/reason"));
            if !reason.is_empty() && reason != "Completed" {
                return json!(reason);
            }
        }
    }
    let reason = s(o, "/status/reason");
    if !reason.is_empty() {
        return json!(reason);
    }
    let phase = s(o, "/status/phase");
    json!(match phase {
        "" => "Pending",
        "Succeeded" => "Completed",
        "Failed" => "Error",
        p => p,
    })
}

fn pod_restarts(o: &Value, _: Now) -> Value {
    let total: i64 = items(o, "/status/containerStatuses")
        .map(|c| n(c, "/restartCount"))
        .sum();
    json!(total)
}

fn pod_gates(o: &Value, _: Now) -> Value {
    let gates = o
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if gates == 0 {
        json!("<none>")
    } else {
        json!(format!("0/{gates}"))
    }
}

// Workloads.

fn ready_of_replicas(o: &Value, _: Now) -> Value {
    json!(format!(
        "{}/{}",
        n(o, "/status/readyReplicas"),
        o.pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
    ))
}

fn ds_node_selector(o: &Value, _: Now) -> Value {
    pairs(o, "/spec/template/spec/nodeSelector")
}

fn job_status(o: &Value, _: Now) -> Value {
    let conditions = o.pointer("/status/conditions").and_then(Value::as_array);
    let has = |t: &str| {
        conditions.into_iter().flatten().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(t)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    json!(if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    })
}

fn job_completions(o: &Value, _: Now) -> Value {
    let done = n(o, "/status/succeeded");
    match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => json!(format!("{done}/{c}")),
        None => json!(format!("{done}/1 of {}", n(o, "/spec/parallelism").max(1))),
    }
}

fn job_duration(o: &Value, now: Now) -> Value {
    let start = s(o, "/status/startTime");
    if start.is_empty() {
        return json!("");
    }
    let end = s(o, "/status/completionTime");
    let until = DateTime::parse_from_rfc3339(end)
        .map(|t| Now(t.with_timezone(&Utc)))
        .unwrap_or(now);
    json!(since(start, until))
}

fn cron_suspend(o: &Value, _: Now) -> Value {
    json!(
        if o.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
            "True"
        } else {
            "False"
        }
    )
}

fn cron_active(o: &Value, _: Now) -> Value {
    json!(o
        .pointer("/status/active")
        .and_then(Value::as_array)
        .map_or(0, Vec::len))
}

fn cron_last(o: &Value, now: Now) -> Value {
    let t = s(o, "/status/lastScheduleTime");
    json!(if t.is_empty() {
        "<none>".into()
    } else {
        since(t, now)
    })
}

// Services.

fn svc_type(o: &Value, _: Now) -> Value {
    json!(match s(o, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    })
}

fn svc_external_ip(o: &Value, _: Now) -> Value {
    let mut ips: Vec<String> = items(o, "/spec/externalIPs")
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    for ingress in items(o, "/status/loadBalancer/ingress") {
        let ip = s(ingress, "/ip");
        ips.push(
            if ip.is_empty() {
                s(ingress, "/hostname")
            } else {
                ip
            }
            .to_string(),
        );
    }
    if ips.is_empty() {
        return json!(match s(o, "/spec/type") {
            "LoadBalancer" => "<pending>",
            "ExternalName" => s(o, "/spec/externalName"),
            _ => "<none>",
        });
    }
    json!(ips.join(","))
}

fn svc_ports(o: &Value, _: Now) -> Value {
    let ports: Vec<String> = items(o, "/spec/ports")
        .map(|p| {
            let proto = match s(p, "/protocol") {
                "" => "TCP",
                x => x,
            };
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", n(p, "/port")),
                None => format!("{}/{proto}", n(p, "/port")),
            }
        })
        .collect();
    or_none(ports.join(","))
}

// Nodes.

fn node_status(o: &Value, _: Now) -> Value {
    let ready = items(o, "/status/conditions")
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let mut status = match ready {
        Some("True") => "Ready",
        None | Some("Unknown") => "Unknown",
        _ => "NotReady",
    }
    .to_string();
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    json!(status)
}

fn node_roles(o: &Value, _: Now) -> Value {
    let roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .collect();
    or_none(roles.join(","))
}

fn node_address(o: &Value, kind: &str) -> Value {
    let found = items(o, "/status/addresses")
        .find(|a| a.get("type").and_then(Value::as_str) == Some(kind))
        .map(|a| s(a, "/address").to_string())
        .unwrap_or_default();
    or_none(found)
}

fn node_internal_ip(o: &Value, _: Now) -> Value {
    node_address(o, "InternalIP")
}

fn node_external_ip(o: &Value, _: Now) -> Value {
    node_address(o, "ExternalIP")
}

// Everything else.

fn ns_status(o: &Value, _: Now) -> Value {
    json!(match s(o, "/status/phase") {
        "" => "Active",
        p => p,
    })
}

fn data_count(o: &Value, _: Now) -> Value {
    let count = |k: &str| o.get(k).and_then(Value::as_object).map_or(0, |m| m.len());
    json!(count("data") + count("binaryData") + count("stringData"))
}

fn secret_type(o: &Value, _: Now) -> Value {
    json!(match s(o, "/type") {
        "" => "Opaque",
        t => t,
    })
}

fn sa_secrets(o: &Value, _: Now) -> Value {
    json!(o
        .get("secrets")
        .and_then(Value::as_array)
        .map_or(0, Vec::len))
}

fn endpoints_list(o: &Value, _: Now) -> Value {
    let mut out = Vec::new();
    for subset in o
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| n(p, "/port"))
            .collect();
        for a in subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = s(a, "/ip");
            if ports.is_empty() {
                out.push(ip.to_string());
            }
            out.extend(ports.iter().map(|p| format!("{ip}:{p}")));
        }
    }
    let shown = out.len().min(3);
    let mut text = out[..shown].join(",");
    if out.len() > shown {
        text.push_str(&format!(" + {} more...", out.len() - shown));
    }
    or_none(text)
}

fn event_last_seen(o: &Value, now: Now) -> Value {
    let t = [
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .map(|p| s(o, p))
    .find(|t| !t.is_empty())
    .unwrap_or("");
    json!(since(t, now))
}

fn event_object(o: &Value, _: Now) -> Value {
    json!(format!(
        "{}/{}",
        s(o, "/involvedObject/kind").to_lowercase(),
        s(o, "/involvedObject/name")
    ))
}

fn event_message(o: &Value, _: Now) -> Value {
    json!(s(o, "/message").trim())
}

fn hpa_reference(o: &Value, _: Now) -> Value {
    json!(format!(
        "{}/{}",
        s(o, "/spec/scaleTargetRef/kind"),
        s(o, "/spec/scaleTargetRef/name")
    ))
}

fn hpa_targets(o: &Value, _: Now) -> Value {
    let mut out = Vec::new();
    let currents = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array);
    for (i, m) in items(o, "/spec/metrics").enumerate() {
        if s(m, "/type") != "Resource" {
            out.push("<unknown>/<unknown>".to_string());
            continue;
        }
        let target = m
            .pointer("/resource/target/averageUtilization")
            .and_then(Value::as_i64);
        let current = currents
            .and_then(|c| c.get(i))
            .and_then(|c| c.pointer("/resource/current/averageUtilization"))
            .and_then(Value::as_i64);
        let current = current.map_or("<unknown>".to_string(), |c| format!("{c}%"));
        let target = target.map_or("<unknown>".to_string(), |t| format!("{t}%"));
        out.push(format!("{}: {current}/{target}", s(m, "/resource/name")));
    }
    or_none(out.join(", "))
}

fn slice_ports(o: &Value, _: Now) -> Value {
    let ports: Vec<String> = o
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| n(p, "/port").to_string())
        .collect();
    or_none(ports.join(","))
}

fn slice_endpoints(o: &Value, _: Now) -> Value {
    let addrs: Vec<&str> = o
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|e| {
            e.get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(Value::as_str)
        .collect();
    let mut text = addrs[..addrs.len().min(3)].join(",");
    if addrs.len() > 3 {
        text.push_str(&format!(" + {} more...", addrs.len() - 3));
    }
    or_none(text)
}

fn revision_controller(o: &Value, _: Now) -> Value {
    let owner = items(o, "/metadata/ownerReferences")
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
    or_none(owner.map_or(String::new(), |r| {
        format!("{}/{}", s(r, "/kind").to_lowercase(), s(r, "/name"))
    }))
}

fn columns(r: &Resource) -> Vec<Column> {
    let named = |rest: Vec<Column>| {
        let mut all = vec![text("Name", Cell::Text("/metadata/name"))];
        all.extend(rest);
        all
    };
    match r.plural {
        "pods" => named(vec![
            col("Ready", pod_ready),
            col("Status", pod_status),
            count("Restarts", pod_restarts),
            col("Age", age),
            wide("IP", Cell::TextOrNone("/status/podIP")),
            wide("Node", Cell::TextOrNone("/spec/nodeName")),
            wide(
                "Nominated Node",
                Cell::TextOrNone("/status/nominatedNodeName"),
            ),
            wide("Readiness Gates", Cell::Computed(pod_gates)),
        ]),
        "deployments" => named(vec![
            col("Ready", ready_of_replicas),
            int("Up-to-date", "/status/updatedReplicas"),
            int("Available", "/status/availableReplicas"),
            col("Age", age),
            wide("Containers", Cell::Computed(template_containers)),
            wide("Images", Cell::Computed(template_images)),
            wide("Selector", Cell::Computed(label_selector)),
        ]),
        "replicasets" => named(vec![
            int_or("Desired", "/spec/replicas", 1),
            int("Current", "/status/replicas"),
            int("Ready", "/status/readyReplicas"),
            col("Age", age),
            wide("Containers", Cell::Computed(template_containers)),
            wide("Images", Cell::Computed(template_images)),
            wide("Selector", Cell::Computed(label_selector)),
        ]),
        "statefulsets" => named(vec![
            col("Ready", ready_of_replicas),
            col("Age", age),
            wide("Containers", Cell::Computed(template_containers)),
            wide("Images", Cell::Computed(template_images)),
        ]),
        "daemonsets" => named(vec![
            int("Desired", "/status/desiredNumberScheduled"),
            int("Current", "/status/currentNumberScheduled"),
            int("Ready", "/status/numberReady"),
            int("Up-to-date", "/status/updatedNumberScheduled"),
            int("Available", "/status/numberAvailable"),
            col("Node Selector", ds_node_selector),
            col("Age", age),
            wide("Containers", Cell::Computed(template_containers)),
            wide("Images", Cell::Computed(template_images)),
            wide("Selector", Cell::Computed(label_selector)),
        ]),
        "jobs" => named(vec![
            col("Status", job_status),
            col("Completions", job_completions),
            col("Duration", job_duration),
            col("Age", age),
            wide("Containers", Cell::Computed(template_containers)),
            wide("Images", Cell::Computed(template_images)),
            wide("Selector", Cell::Computed(label_selector)),
        ]),
        "cronjobs" => named(vec![
            text("Schedule", Cell::Text("/spec/schedule")),
            text("Timezone", Cell::TextOrNone("/spec/timeZone")),
            col("Suspend", cron_suspend),
            count("Active", cron_active),
            col("Last Schedule", cron_last),
            col("Age", age),
        ]),
        "services" => named(vec![
            col("Type", svc_type),
            text("Cluster-IP", Cell::TextOrNone("/spec/clusterIP")),
            col("External-IP", svc_external_ip),
            col("Port(s)", svc_ports),
            col("Age", age),
            wide("Selector", Cell::Computed(map_selector)),
        ]),
        "nodes" => named(vec![
            col("Status", node_status),
            col("Roles", node_roles),
            col("Age", age),
            text("Version", Cell::Text("/status/nodeInfo/kubeletVersion")),
            wide("Internal-IP", Cell::Computed(node_internal_ip)),
            wide("External-IP", Cell::Computed(node_external_ip)),
            wide("OS-Image", Cell::Text("/status/nodeInfo/osImage")),
            wide(
                "Kernel-Version",
                Cell::Text("/status/nodeInfo/kernelVersion"),
            ),
            wide(
                "Container-Runtime",
                Cell::Text("/status/nodeInfo/containerRuntimeVersion"),
            ),
        ]),
        "namespaces" => named(vec![col("Status", ns_status), col("Age", age)]),
        "configmaps" => named(vec![count("Data", data_count), col("Age", age)]),
        "secrets" => named(vec![
            col("Type", secret_type),
            count("Data", data_count),
            col("Age", age),
        ]),
        "serviceaccounts" => named(vec![count("Secrets", sa_secrets), col("Age", age)]),
        "endpoints" => named(vec![col("Endpoints", endpoints_list), col("Age", age)]),
        "events" => vec![
            col("Last Seen", event_last_seen),
            text("Type", Cell::Text("/type")),
            text("Reason", Cell::Text("/reason")),
            col("Object", event_object),
            col("Message", event_message),
        ],
        "leases" => named(vec![
            text("Holder", Cell::Text("/spec/holderIdentity")),
            col("Age", age),
        ]),
        "horizontalpodautoscalers" => named(vec![
            col("Reference", hpa_reference),
            col("Targets", hpa_targets),
            int_or("MinPods", "/spec/minReplicas", 1),
            int("MaxPods", "/spec/maxReplicas"),
            int("Replicas", "/status/currentReplicas"),
            col("Age", age),
        ]),
        "endpointslices" => named(vec![
            text("AddressType", Cell::Text("/addressType")),
            col("Ports", slice_ports),
            col("Endpoints", slice_endpoints),
            col("Age", age),
        ]),
        "controllerrevisions" => named(vec![
            col("Controller", revision_controller),
            int("Revision", "/revision"),
            col("Age", age),
        ]),
        _ => named(vec![col("Age", age)]),
    }
}

fn definitions(columns: &[Column]) -> Vec<Value> {
    columns
        .iter()
        .map(|c| {
            let mut d = json!({
                "name": c.name,
                "type": c.kind,
                "format": if c.name == "Name" { "name" } else { "" },
                "description": "",
                "priority": if c.wide { 1 } else { 0 },
            });
            if c.name == "Name" {
                d["description"] = json!("Name must be unique within a namespace.");
            }
            d
        })
        .collect()
}

fn row(columns: &[Column], object: &Value, include: Include, now: Now) -> Value {
    let cells: Vec<Value> = columns.iter().map(|c| c.cell.of(object, now)).collect();
    let mut row = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Object => row["object"] = object.clone(),
        Include::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or(Value::Null),
            })
        }
    }
    row
}

/// A list (as [`super::Api::list`] returns it), or one object, as a Table.
pub fn render(
    r: &Resource,
    objects: &[Value],
    list_meta: Value,
    include: Include,
    headers: bool,
    now: Now,
) -> Value {
    let columns = columns(r);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| row(&columns, o, include, now))
        .collect();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": rows,
    });
    if headers {
        table["columnDefinitions"] = json!(definitions(&columns));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;

    fn at(stamp: &str) -> Now {
        Now(DateTime::parse_from_rfc3339(stamp)
            .expect("time")
            .with_timezone(&Utc))
    }

    #[test]
    fn ages_read_like_kubectl() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(119)), "119s");
        assert_eq!(human_duration(d(150)), "2m30s");
        assert_eq!(human_duration(d(600)), "10m");
        assert_eq!(human_duration(d(4 * 3600 + 120)), "4h2m");
        assert_eq!(human_duration(d(30 * 3600)), "30h");
        assert_eq!(human_duration(d(3 * 86400 + 3600)), "3d1h");
        assert_eq!(human_duration(d(40 * 86400)), "40d");
    }

    #[test]
    fn accept_header_for_tables() {
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
    }

    #[test]
    fn pod_rows_have_kubectl_columns() {
        let pods = find("", "v1", "pods").expect("pods");
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.1.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2},
                {"name": "b", "ready": false, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        let t = render(
            pods,
            &[pod],
            json!({}),
            Include::Metadata,
            true,
            at("2026-01-01T00:05:00Z"),
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web-1",
                "1/2",
                "CrashLoopBackOff",
                3,
                "5m",
                "10.1.0.5",
                "n1",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "web-1");
    }

    #[test]
    fn service_ports_show_node_ports() {
        let svc = find("", "v1", "services").expect("services");
        let o = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}
        });
        let t = render(
            svc,
            &[o],
            json!({}),
            Include::None,
            true,
            at("2026-01-01T00:00:10Z"),
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "NodePort",
                "10.96.0.10",
                "<none>",
                "80:30080/TCP",
                "10s",
                "<none>"
            ])
        );
    }
}
