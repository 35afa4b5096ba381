//! The ClusterRoles and ClusterRoleBindings a cluster starts with, as
//! Kubernetes bootstraps them (labelled `kubernetes.io/bootstrapping:
//! rbac-defaults`, annotated to be kept up to date). `admin`, `edit` and
//! `view` are aggregated from the `system:aggregate-to-*` roles; they are
//! written with their aggregated rules already in place, and the
//! aggregation controller keeps them so as roles are added.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

pub const GROUP: &str = "rbac.authorization.k8s.io";
/// Every authenticated user is in this group.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Processes that scrape metrics and discover targets (Prometheus).
pub const MONITORING: &str = "system:monitoring";
pub const SCHEDULER_USER: &str = "system:kube-scheduler";
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
pub const PROXY_USER: &str = "system:kube-proxy";
const AGGREGATE_TO: &str = "rbac.authorization.k8s.io/aggregate-to-";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
/// The verbs of a stored resource, in Kubernetes' order.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

fn urls(paths: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        non_resource_urls: Some(strings(paths)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    let mut l: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(l),
        annotations: Some(BTreeMap::from([(
            "rbac.authorization.kubernetes.io/autoupdate".to_string(),
            "true".to_string(),
        )])),
        ..Default::default()
    }
}

fn role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: meta(name, &[]),
        rules: Some(rules),
        ..Default::default()
    }
}

fn aggregate_label(to: &str) -> (String, &'static str) {
    (format!("{AGGREGATE_TO}{to}"), "true")
}

/// A role whose rules are those of the roles labelled aggregate-to-`to`.
fn aggregated(
    name: &str,
    to: &str,
    labels: &[(&str, &str)],
    rules: Vec<PolicyRule>,
) -> ClusterRole {
    let (k, v) = aggregate_label(to);
    ClusterRole {
        metadata: meta(name, labels),
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some(BTreeMap::from([(k, v.to_string())])),
                ..Default::default()
            }]),
        }),
        rules: Some(rules),
    }
}

fn view_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            "",
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ],
            READ,
        ),
        rule(
            "",
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
            READ,
        ),
        rule("", &["namespaces"], READ),
        rule("discovery.k8s.io", &["endpointslices"], READ),
        rule(
            "apps",
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
            READ,
        ),
        rule(
            "autoscaling",
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
            READ,
        ),
        rule(
            "batch",
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
            READ,
        ),
        rule(
            "policy",
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
            READ,
        ),
        rule(
            "networking.k8s.io",
            &["ingresses", "ingresses/status", "networkpolicies"],
            READ,
        ),
        rule("metrics.k8s.io", &["pods", "nodes"], READ),
    ]
}

fn edit_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            "",
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
            READ,
        ),
        rule("", &["serviceaccounts"], &["impersonate"]),
        rule(
            "",
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
            ],
            WRITE,
        ),
        rule("", &["pods/eviction"], &["create"]),
        rule(
            "",
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            WRITE,
        ),
        rule("", &["serviceaccounts/token"], &["create"]),
        rule(
            "apps",
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
            WRITE,
        ),
        rule("autoscaling", &["horizontalpodautoscalers"], WRITE),
        rule("batch", &["cronjobs", "jobs"], WRITE),
        rule(
            "networking.k8s.io",
            &["ingresses", "networkpolicies"],
            WRITE,
        ),
        rule("policy", &["poddisruptionbudgets"], WRITE),
        rule("discovery.k8s.io", &["endpointslices"], WRITE),
    ]
}

fn admin_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            "authorization.k8s.io",
            &["localsubjectaccessreviews"],
            &["create"],
        ),
        rule(GROUP, &["rolebindings", "roles"], ALL_VERBS),
    ]
}

fn controller_manager_rules() -> Vec<PolicyRule> {
    // Skiff's controllers run inside the master as one process, not as one
    // service account each: this role holds what all of them write.
    vec![
        rule(
            "",
            &["pods", "pods/status", "pods/binding", "pods/eviction"],
            ALL_VERBS,
        ),
        rule(
            "",
            &[
                "endpoints",
                "events",
                "namespaces",
                "namespaces/finalize",
                "namespaces/status",
                "nodes",
                "nodes/status",
                "serviceaccounts",
                "services",
                "services/status",
            ],
            ALL_VERBS,
        ),
        rule(
            "",
            &["configmaps", "secrets", "persistentvolumeclaims"],
            READ,
        ),
        rule("*", &["*"], &["list", "watch", "get", "delete"]),
        rule(
            "apps",
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/status",
                "replicasets",
                "replicasets/status",
                "statefulsets",
                "statefulsets/status",
            ],
            ALL_VERBS,
        ),
        rule(
            "autoscaling",
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
            ALL_VERBS,
        ),
        rule(
            "batch",
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
            ALL_VERBS,
        ),
        rule("discovery.k8s.io", &["endpointslices"], ALL_VERBS),
        rule("coordination.k8s.io", &["leases"], ALL_VERBS),
        rule(GROUP, &["clusterroles"], &["escalate", "update", "patch"]),
        rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
        rule(
            "authorization.k8s.io",
            &["subjectaccessreviews"],
            &["create"],
        ),
    ]
}

fn scheduler_rules() -> Vec<PolicyRule> {
    vec![
        rule("", &["events"], &["create", "patch", "update"]),
        rule("events.k8s.io", &["events"], &["create", "patch", "update"]),
        rule(
            "coordination.k8s.io",
            &["leases"],
            &["create", "get", "update"],
        ),
        rule("", &["nodes", "namespaces"], READ),
        rule("", &["pods"], &["delete", "get", "list", "watch"]),
        rule("", &["bindings", "pods/binding"], &["create"]),
        rule("", &["pods/status"], &["patch", "update"]),
        rule(
            "",
            &[
                "replicationcontrollers",
                "services",
                "persistentvolumeclaims",
                "persistentvolumes",
            ],
            READ,
        ),
        rule("apps", &["replicasets", "statefulsets"], READ),
        rule("policy", &["poddisruptionbudgets"], READ),
        rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
        rule(
            "authorization.k8s.io",
            &["subjectaccessreviews"],
            &["create"],
        ),
    ]
}

/// The rules the `system:node` role holds (Kubernetes binds it to no one:
/// nodes are authorized by the node authorizer).
fn node_rules() -> Vec<PolicyRule> {
    vec![
        rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
        rule(
            "authorization.k8s.io",
            &["localsubjectaccessreviews", "subjectaccessreviews"],
            &["create"],
        ),
        rule("", &["services", "nodes", "pods"], READ),
        rule("", &["nodes"], &["create", "delete", "patch", "update"]),
        rule("", &["nodes/status"], &["patch", "update"]),
        rule("", &["events"], &["create", "patch", "update"]),
        rule("", &["pods"], &["create", "delete"]),
        rule("", &["pods/status"], &["patch", "update"]),
        rule("", &["pods/eviction"], &["create"]),
        rule("", &["configmaps", "secrets"], &["get"]),
        rule(
            "",
            &["persistentvolumeclaims", "persistentvolumes"],
            &["get"],
        ),
        rule("", &["endpoints"], &["get"]),
        rule("", &["serviceaccounts/token"], &["create"]),
        rule(
            "coordination.k8s.io",
            &["leases"],
            &["create", "delete", "get", "patch", "update"],
        ),
    ]
}

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<ClusterRole> {
    let view = view_rules();
    let edit_own = edit_rules();
    let edit: Vec<PolicyRule> = edit_own.iter().chain(&view).cloned().collect();
    // In the order aggregation gathers them: by the source roles' names.
    let admin: Vec<PolicyRule> = edit.iter().cloned().chain(admin_rules()).collect();
    let labelled = |name: &str, to: &str, rules: Vec<PolicyRule>| {
        let (k, v) = aggregate_label(to);
        ClusterRole {
            metadata: meta(name, &[(&k, v)]),
            rules: Some(rules),
            ..Default::default()
        }
    };
    let (to_admin, _) = aggregate_label("admin");
    let (to_edit, _) = aggregate_label("edit");
    vec![
        role(
            "cluster-admin",
            vec![rule("*", &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        aggregated("admin", "admin", &[], admin),
        aggregated("edit", "edit", &[(&to_admin, "true")], edit),
        aggregated("view", "view", &[(&to_edit, "true")], view.clone()),
        labelled("system:aggregate-to-admin", "admin", admin_rules()),
        labelled("system:aggregate-to-edit", "edit", edit_own),
        labelled("system:aggregate-to-view", "view", view),
        role(
            "system:discovery",
            vec![urls(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        role(
            "system:public-info-viewer",
            vec![urls(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
        ),
        role(
            "system:basic-user",
            vec![
                rule(
                    "authorization.k8s.io",
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(
                    "authentication.k8s.io",
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
        ),
        role(
            "system:monitoring",
            vec![urls(
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
                &["get"],
            )],
        ),
        role(
            "skiff:service-discovery",
            vec![
                urls(&["/skiff/v1/http-sd"], &["get"]),
                rule("", &["nodes", "pods", "services", "endpoints"], READ),
                rule("discovery.k8s.io", &["endpointslices"], READ),
            ],
        ),
        role(
            "system:auth-delegator",
            vec![
                rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
                rule(
                    "authorization.k8s.io",
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
        role(
            "system:node-proxier",
            vec![
                rule("", &["endpoints", "services"], &["list", "watch"]),
                rule("", &["nodes"], READ),
                rule("", &["events"], &["create", "patch", "update"]),
                rule("events.k8s.io", &["events"], &["create", "patch", "update"]),
                rule("discovery.k8s.io", &["endpointslices"], &["list", "watch"]),
            ],
        ),
        role(
            "system:service-account-issuer-discovery",
            vec![urls(
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
                &["get"],
            )],
        ),
        role("system:node", node_rules()),
        role("system:kube-scheduler", scheduler_rules()),
        role("system:kube-controller-manager", controller_manager_rules()),
        role(
            "system:kube-dns",
            vec![
                rule("", &["endpoints", "services"], &["list", "watch"]),
                rule("discovery.k8s.io", &["endpointslices"], &["list", "watch"]),
            ],
        ),
    ]
}

fn binding(name: &str, role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, &[]),
        role_ref: RoleRef {
            api_group: GROUP.into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(subjects),
    }
}

fn subject(kind: &str, name: &str) -> Subject {
    Subject {
        kind: kind.into(),
        name: name.into(),
        api_group: Some(GROUP.into()),
        namespace: None,
    }
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    let group = |n: &str| subject("Group", n);
    let user = |n: &str| subject("User", n);
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            vec![group(crate::pki::MASTERS_GROUP)],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            vec![group(AUTHENTICATED)],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            vec![group(AUTHENTICATED)],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec![group(AUTHENTICATED), group("system:unauthenticated")],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            vec![group(MONITORING)],
        ),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            vec![group("system:serviceaccounts")],
        ),
        binding(
            "skiff:service-discovery",
            "skiff:service-discovery",
            vec![group(MONITORING)],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            vec![user(PROXY_USER)],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            vec![user(SCHEDULER_USER)],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            vec![user(CONTROLLER_MANAGER_USER)],
        ),
        binding(
            "system:kube-dns",
            "system:kube-dns",
            vec![Subject {
                kind: "ServiceAccount".into(),
                name: "kube-dns".into(),
                namespace: Some("kube-system".into()),
                api_group: None,
            }],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_binding_names_a_bootstrap_role_and_names_are_unique() {
        let roles = cluster_roles();
        let names: std::collections::BTreeSet<_> = roles
            .iter()
            .filter_map(|r| r.metadata.name.clone())
            .collect();
        assert_eq!(names.len(), roles.len());
        for b in cluster_role_bindings() {
            assert!(names.contains(&b.role_ref.name), "{}", b.role_ref.name);
        }
    }

    #[test]
    fn admin_holds_edit_and_edit_holds_view() {
        let roles = cluster_roles();
        let rules = |n: &str| {
            roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(n))
                .and_then(|r| r.rules.clone())
                .unwrap()
        };
        for r in rules("view") {
            assert!(super::super::rules::covers(&rules("edit"), &r));
        }
        for r in rules("edit") {
            assert!(super::super::rules::covers(&rules("admin"), &r));
        }
        assert!(!super::super::rules::covers(
            &rules("view"),
            &rule("", &["secrets"], &["get"])
        ));
    }
}
