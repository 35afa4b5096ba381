//! The narrow request type authorization decides on: who asks, with what
//! verb, for which resource or path. The REST API, the agent gateway and the
//! review endpoints each build one; nothing else crosses into [`super`].

use crate::pki::Identity;

/// What a request asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub user: Identity,
    /// Kubernetes' verbs: get, list, watch, create, update, patch, delete,
    /// deletecollection; impersonate, bind, escalate; for paths, the
    /// lowercased HTTP method (get, put, post, ...).
    pub verb: String,
    pub on: On,
}

/// A resource (possibly one object of it, possibly a subresource) or a
/// path outside the resource tree (`/version`, `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum On {
    Resource(ResourceRef),
    Path(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceRef {
    /// "" for the core group.
    pub group: String,
    /// The plural name, `pods`.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl ResourceRef {
    pub fn new(group: &str, resource: &str) -> Self {
        ResourceRef {
            group: group.into(),
            resource: resource.into(),
            ..Default::default()
        }
    }

    pub fn in_namespace(mut self, namespace: Option<&str>) -> Self {
        self.namespace = namespace.filter(|n| !n.is_empty()).map(String::from);
        self
    }

    pub fn named(mut self, name: Option<&str>) -> Self {
        self.name = name.filter(|n| !n.is_empty()).map(String::from);
        self
    }

    pub fn subresource(mut self, subresource: Option<&str>) -> Self {
        self.subresource = subresource.filter(|s| !s.is_empty()).map(String::from);
        self
    }

    /// `pods` or `pods/log`, as RBAC rules name it.
    pub fn combined(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// `deployments.apps`, `pods`: how Kubernetes names a resource in errors.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

impl Attributes {
    pub fn resource(user: &Identity, verb: &str, r: ResourceRef) -> Self {
        Attributes {
            user: user.clone(),
            verb: verb.into(),
            on: On::Resource(r),
        }
    }

    pub fn path(user: &Identity, verb: &str, path: &str) -> Self {
        Attributes {
            user: user.clone(),
            verb: verb.into(),
            on: On::Path(path.into()),
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        match &self.on {
            On::Resource(r) => r.namespace.as_deref(),
            On::Path(_) => None,
        }
    }

    /// Kubernetes' words for a refusal: `pods "web" is forbidden: User
    /// "bob" cannot get resource "pods" in API group "" in the namespace
    /// "default"`, with `reason` after a colon when there is one.
    pub fn forbidden_message(&self, reason: &str) -> String {
        let user = &self.user.user;
        let mut msg = match &self.on {
            On::Path(path) => format!(
                "forbidden: User \"{user}\" cannot {} path \"{path}\"",
                self.verb
            ),
            On::Resource(r) => {
                let subject = match &r.name {
                    Some(name) => format!("{} \"{name}\" is forbidden", r.qualified()),
                    None => format!("{} is forbidden", r.qualified()),
                };
                let scope = match &r.namespace {
                    Some(ns) => format!("in the namespace \"{ns}\""),
                    None => "at the cluster scope".to_string(),
                };
                format!(
                    "{subject}: User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
                    self.verb,
                    r.combined(),
                    r.group
                )
            }
        };
        if !reason.is_empty() {
            msg.push_str(": ");
            msg.push_str(reason);
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> Identity {
        Identity {
            user: "bob".into(),
            groups: vec![],
        }
    }

    #[test]
    fn messages_read_as_kubernetes_writes_them() {
        let a = Attributes::resource(
            &bob(),
            "list",
            ResourceRef::new("", "pods").in_namespace(Some("default")),
        );
        assert_eq!(
            a.forbidden_message(""),
            "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let a = Attributes::resource(
            &bob(),
            "get",
            ResourceRef::new("apps", "deployments")
                .named(Some("web"))
                .subresource(Some("scale"))
                .in_namespace(Some("a")),
        );
        assert_eq!(
            a.forbidden_message(""),
            "deployments.apps \"web\" is forbidden: User \"bob\" cannot get resource \"deployments/scale\" in API group \"apps\" in the namespace \"a\""
        );
        let a = Attributes::resource(&bob(), "create", ResourceRef::new("", "namespaces"));
        assert!(a.forbidden_message("").ends_with("at the cluster scope"));
        let a = Attributes::path(&bob(), "get", "/metrics");
        assert_eq!(
            a.forbidden_message(""),
            "forbidden: User \"bob\" cannot get path \"/metrics\""
        );
    }
}
