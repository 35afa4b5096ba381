//! Role-based access control (`rbac.authorization.k8s.io/v1`): a request is
//! allowed when a rule of a role bound to its user or one of their groups
//! allows it. ClusterRoleBindings grant everywhere; RoleBindings only in
//! their namespace. Nothing is denied outright: a request no rule allows
//! gets no opinion, and the chain refuses it.
//!
//! - [`rules`]: matching one rule, and whether rules cover others.
//! - [`bootstrap`]: the roles and bindings a cluster starts with.

pub mod bootstrap;
pub mod rules;

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::attributes::Attributes;
use super::Decision;
use crate::pki::Identity;

/// Where RBAC reads its objects: a cache every master keeps current.
pub trait Policy: Send + Sync {
    fn cluster_role(&self, name: &str) -> Option<Arc<ClusterRole>>;
    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Role>>;
    fn cluster_role_bindings(&self) -> Vec<Arc<ClusterRoleBinding>>;
    fn role_bindings(&self, namespace: &str) -> Vec<Arc<RoleBinding>>;
}

/// The user a service account's token speaks for.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Whether `subject` (of a binding in `namespace`, "" for a
/// ClusterRoleBinding) names `who`.
fn applies_to(subject: &Subject, who: &Identity, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == who.user,
        "Group" => who.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            !ns.is_empty() && who.user == service_account_user(ns, &subject.name)
        }
        _ => false,
    }
}

fn bound(subjects: &Option<Vec<Subject>>, who: &Identity, namespace: &str) -> bool {
    subjects
        .iter()
        .flatten()
        .any(|s| applies_to(s, who, namespace))
}

/// RBAC over a [`Policy`].
pub struct Rbac {
    policy: Arc<dyn Policy>,
}

impl Rbac {
    pub fn new(policy: Arc<dyn Policy>) -> Self {
        Rbac { policy }
    }

    /// The rules of the role `role_ref` names, for a binding in `namespace`
    /// ("" for a ClusterRoleBinding).
    pub fn rules_of(&self, role_ref: &RoleRef, namespace: &str) -> Vec<PolicyRule> {
        match role_ref.kind.as_str() {
            "ClusterRole" => self
                .policy
                .cluster_role(&role_ref.name)
                .and_then(|r| r.rules.clone())
                .unwrap_or_default(),
            "Role" if !namespace.is_empty() => self
                .policy
                .role(namespace, &role_ref.name)
                .and_then(|r| r.rules.clone())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Call `visit` with every rule `who` holds in `namespace` (cluster-wide
    /// rules first); stop when it returns true.
    fn visit(
        &self,
        who: &Identity,
        namespace: Option<&str>,
        mut visit: impl FnMut(&PolicyRule) -> bool,
    ) -> bool {
        for b in self.policy.cluster_role_bindings() {
            if bound(&b.subjects, who, "") && self.rules_of(&b.role_ref, "").iter().any(&mut visit)
            {
                return true;
            }
        }
        let Some(ns) = namespace.filter(|n| !n.is_empty()) else {
            return false;
        };
        for b in self.policy.role_bindings(ns) {
            if bound(&b.subjects, who, ns) && self.rules_of(&b.role_ref, ns).iter().any(&mut visit)
            {
                return true;
            }
        }
        false
    }

    pub fn authorize(&self, attrs: &Attributes) -> Decision {
        if self.visit(&attrs.user, attrs.namespace(), |r| rules::allows(r, attrs)) {
            Decision::Allow
        } else {
            Decision::NoOpinion(String::new())
        }
    }

    /// Every rule `who` holds in `namespace` (and cluster-wide).
    pub fn rules_for(&self, who: &Identity, namespace: Option<&str>) -> Vec<PolicyRule> {
        let mut out = Vec::new();
        self.visit(who, namespace, |r| {
            out.push(r.clone());
            false
        });
        out
    }
}

/// A [`Policy`] held in memory, for tests.
#[cfg(test)]
#[derive(Default, Clone)]
pub struct StaticPolicy {
    pub cluster_roles: Vec<ClusterRole>,
    pub roles: Vec<Role>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub role_bindings: Vec<RoleBinding>,
}

#[cfg(test)]
impl Policy for StaticPolicy {
    fn cluster_role(&self, name: &str) -> Option<Arc<ClusterRole>> {
        self.cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .cloned()
            .map(Arc::new)
    }

    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Role>> {
        self.roles
            .iter()
            .find(|r| {
                r.metadata.name.as_deref() == Some(name)
                    && r.metadata.namespace.as_deref() == Some(namespace)
            })
            .cloned()
            .map(Arc::new)
    }

    fn cluster_role_bindings(&self) -> Vec<Arc<ClusterRoleBinding>> {
        self.cluster_role_bindings
            .iter()
            .cloned()
            .map(Arc::new)
            .collect()
    }

    fn role_bindings(&self, namespace: &str) -> Vec<Arc<RoleBinding>> {
        self.role_bindings
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(namespace))
            .cloned()
            .map(Arc::new)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::attributes::ResourceRef;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(String::from),
            ..Default::default()
        }
    }

    fn subject(kind: &str, name: &str, ns: Option<&str>) -> Subject {
        Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(String::from),
            ..Default::default()
        }
    }

    fn policy() -> StaticPolicy {
        let view = ClusterRole {
            metadata: meta(None, "view"),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec!["".into()]),
                resources: Some(vec!["pods".into()]),
                verbs: vec!["get".into(), "list".into()],
                ..Default::default()
            }]),
            ..Default::default()
        };
        let role_ref = |kind: &str, name: &str| RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: kind.into(),
            name: name.into(),
        };
        StaticPolicy {
            cluster_roles: vec![view],
            role_bindings: vec![
                RoleBinding {
                    metadata: meta(Some("a"), "bob-views"),
                    role_ref: role_ref("ClusterRole", "view"),
                    subjects: Some(vec![subject("User", "bob", None)]),
                },
                RoleBinding {
                    metadata: meta(Some("b"), "robots"),
                    role_ref: role_ref("ClusterRole", "view"),
                    subjects: Some(vec![subject("ServiceAccount", "ci", None)]),
                },
            ],
            ..Default::default()
        }
    }

    fn ask(user: &str, groups: &[&str], verb: &str, ns: &str) -> Decision {
        let who = Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let r = ResourceRef::new("", "pods").in_namespace(Some(ns));
        Rbac::new(Arc::new(policy())).authorize(&Attributes::resource(&who, verb, r))
    }

    #[test]
    fn a_role_binding_grants_in_its_namespace_only() {
        assert_eq!(ask("bob", &[], "list", "a"), Decision::Allow);
        assert_ne!(ask("bob", &[], "list", "b"), Decision::Allow);
        assert_ne!(ask("bob", &[], "delete", "a"), Decision::Allow);
        assert_ne!(ask("alice", &[], "list", "a"), Decision::Allow);
    }

    #[test]
    fn a_service_account_subject_defaults_to_the_bindings_namespace() {
        let sa = service_account_user("b", "ci");
        assert_eq!(ask(&sa, &[], "get", "b"), Decision::Allow);
        assert_ne!(
            ask(&service_account_user("a", "ci"), &[], "get", "b"),
            Decision::Allow
        );
    }
}
