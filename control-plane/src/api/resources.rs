//! The resources this API serves: names, scope, subresources, and how a
//! body is checked against its `k8s-openapi` type.

use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, discovery, rbac};
use k8s_openapi::schemars::gen::SchemaGenerator;
use k8s_openapi::schemars::schema::Schema;
use k8s_openapi::schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::conversion::{View, HPA_V1};

/// How an object's name must look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 label: at most 63 of [a-z0-9-], alphanumeric at both ends.
    Label,
    /// DNS-1123 subdomain: labels joined by dots, at most 253 characters.
    Subdomain,
    /// Anything that can be a path segment (RBAC roles: `system:node`).
    Path,
}

pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Subresources served or announced: "status", "scale", "binding",
    /// "eviction", "log", "exec", "attach", "portforward", "token".
    pub subresources: &'static [&'static str],
    pub names: NameRule,
    /// Decode the body into the typed object; the error is what the client sees.
    pub check: fn(&Value) -> Result<(), String>,
    /// Register the type's OpenAPI schema (and those it uses) with a generator.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// The schema's name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub schema_name: fn() -> String,
    /// Set for a version served over another version's stored objects.
    pub view: Option<View>,
}

// Resources are statics: one is equal only to itself.
impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Resource {}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.plural)
    }
}

fn typed<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    T::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group as it appears in storage keys.
    pub fn storage_group(&self) -> &'static str {
        if self.group.is_empty() {
            "core"
        } else {
            self.group
        }
    }

    /// Whether objects are stored in this version (not a view of another).
    pub fn is_stored(&self) -> bool {
        self.view.is_none()
    }

    pub fn has(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

macro_rules! resource {
    ($group:literal, $version:literal, $ty:ty, $kind:literal, $plural:literal, $singular:literal,
     namespaced: $ns:literal, short: [$($short:literal),*], sub: [$($sub:literal),*], names: $names:ident) => {
        resource!($group, $version, $ty, $kind, $plural, $singular, namespaced: $ns,
            short: [$($short),*], sub: [$($sub),*], names: $names, view: None)
    };
    ($group:literal, $version:literal, $ty:ty, $kind:literal, $plural:literal, $singular:literal,
     namespaced: $ns:literal, short: [$($short:literal),*], sub: [$($sub:literal),*], names: $names:ident,
     view: $view:expr) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: &[$($short),*],
            subresources: &[$($sub),*],
            names: NameRule::$names,
            check: typed::<$ty>,
            schema: |g| g.subschema_for::<$ty>(),
            schema_name: <$ty as JsonSchema>::schema_name,
            view: $view,
        }
    };
}

pub static RESOURCES: &[Resource] = &[
    resource!("", "v1", core::v1::Namespace, "Namespace", "namespaces", "namespace",
        namespaced: false, short: ["ns"], sub: ["status"], names: Label),
    resource!("", "v1", core::v1::Node, "Node", "nodes", "node",
        namespaced: false, short: ["no"], sub: ["status"], names: Subdomain),
    resource!("", "v1", core::v1::Pod, "Pod", "pods", "pod",
        namespaced: true, short: ["po"], sub: ["status", "binding", "eviction", "log", "exec", "attach", "portforward"], names: Subdomain),
    resource!("", "v1", core::v1::Service, "Service", "services", "service",
        namespaced: true, short: ["svc"], sub: ["status"], names: Label),
    resource!("", "v1", core::v1::Endpoints, "Endpoints", "endpoints", "endpoints",
        namespaced: true, short: ["ep"], sub: [], names: Subdomain),
    resource!("", "v1", core::v1::ConfigMap, "ConfigMap", "configmaps", "configmap",
        namespaced: true, short: ["cm"], sub: [], names: Subdomain),
    resource!("", "v1", core::v1::Secret, "Secret", "secrets", "secret",
        namespaced: true, short: [], sub: [], names: Subdomain),
    resource!("", "v1", core::v1::Event, "Event", "events", "event",
        namespaced: true, short: ["ev"], sub: [], names: Subdomain),
    resource!("", "v1", core::v1::ServiceAccount, "ServiceAccount", "serviceaccounts", "serviceaccount",
        namespaced: true, short: ["sa"], sub: ["token"], names: Subdomain),
    resource!("apps", "v1", apps::v1::Deployment, "Deployment", "deployments", "deployment",
        namespaced: true, short: ["deploy"], sub: ["status", "scale"], names: Subdomain),
    resource!("apps", "v1", apps::v1::ReplicaSet, "ReplicaSet", "replicasets", "replicaset",
        namespaced: true, short: ["rs"], sub: ["status", "scale"], names: Subdomain),
    resource!("apps", "v1", apps::v1::StatefulSet, "StatefulSet", "statefulsets", "statefulset",
        namespaced: true, short: ["sts"], sub: ["status", "scale"], names: Subdomain),
    resource!("apps", "v1", apps::v1::DaemonSet, "DaemonSet", "daemonsets", "daemonset",
        namespaced: true, short: ["ds"], sub: ["status"], names: Subdomain),
    resource!("apps", "v1", apps::v1::ControllerRevision, "ControllerRevision", "controllerrevisions", "controllerrevision",
        namespaced: true, short: [], sub: [], names: Subdomain),
    resource!("batch", "v1", batch::v1::Job, "Job", "jobs", "job",
        namespaced: true, short: [], sub: ["status"], names: Subdomain),
    resource!("batch", "v1", batch::v1::CronJob, "CronJob", "cronjobs", "cronjob",
        namespaced: true, short: ["cj"], sub: ["status"], names: Subdomain),
    resource!("autoscaling", "v2", autoscaling::v2::HorizontalPodAutoscaler, "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler",
        namespaced: true, short: ["hpa"], sub: ["status"], names: Subdomain),
    // After v2, which is therefore the preferred version.
    resource!("autoscaling", "v1", autoscaling::v1::HorizontalPodAutoscaler, "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler",
        namespaced: true, short: ["hpa"], sub: ["status"], names: Subdomain, view: Some(HPA_V1)),
    resource!("coordination.k8s.io", "v1", coordination::v1::Lease, "Lease", "leases", "lease",
        namespaced: true, short: [], sub: [], names: Subdomain),
    resource!("discovery.k8s.io", "v1", discovery::v1::EndpointSlice, "EndpointSlice", "endpointslices", "endpointslice",
        namespaced: true, short: [], sub: [], names: Subdomain),
    resource!("rbac.authorization.k8s.io", "v1", rbac::v1::ClusterRole, "ClusterRole", "clusterroles", "clusterrole",
        namespaced: false, short: [], sub: [], names: Path),
    resource!("rbac.authorization.k8s.io", "v1", rbac::v1::ClusterRoleBinding, "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding",
        namespaced: false, short: [], sub: [], names: Path),
    resource!("rbac.authorization.k8s.io", "v1", rbac::v1::Role, "Role", "roles", "role",
        namespaced: true, short: [], sub: [], names: Path),
    resource!("rbac.authorization.k8s.io", "v1", rbac::v1::RoleBinding, "RoleBinding", "rolebindings", "rolebinding",
        namespaced: true, short: [], sub: [], names: Path),
];

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Every (group, version) served, core first, in a stable order.
/// The resource serving `kind` in `group`/`version`.
pub fn find_kind(group: &str, version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Check a name against its rule; the message says what is wrong.
pub fn check_name(rule: NameRule, name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && l.as_bytes()[0].is_ascii_alphanumeric()
            && l.as_bytes()[l.len() - 1].is_ascii_alphanumeric()
    };
    let ok = match rule {
        NameRule::Label => label_ok(name),
        NameRule::Subdomain => name.len() <= 253 && name.split('.').all(label_ok),
        NameRule::Path => !matches!(name, "" | "." | "..") && !name.contains(['/', '%']),
    };
    if ok {
        return Ok(());
    }
    Err(match rule {
        NameRule::Label => format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?'), got {name:?}"
        ),
        NameRule::Path => format!(
            "may not be '.' or '..' and may not contain '/' or '%', got {name:?}"
        ),
        NameRule::Subdomain => format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'), got {name:?}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name(NameRule::Label, "web-1").is_ok());
        assert!(check_name(NameRule::Label, "a.b").is_err());
        assert!(check_name(NameRule::Subdomain, "a.b").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"x".repeat(64)] {
            assert!(check_name(NameRule::Label, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn typed_check_rejects_wrong_shapes() {
        let cm = find("", "v1", "configmaps").unwrap();
        assert!(
            (cm.check)(&serde_json::json!({"metadata": {"name": "a"}, "data": {"k": "v"}})).is_ok()
        );
        assert!(
            (cm.check)(&serde_json::json!({"metadata": {"name": "a"}, "data": {"k": 1}})).is_err()
        );
    }
}
