//! What a node may do through the Kubernetes API, as Kubernetes' node
//! authorizer and NodeRestriction decide together: read the Secrets,
//! ConfigMaps, ServiceAccounts and claims a pod bound to it refers to, and
//! ask for tokens of those ServiceAccounts; read nodes, pods, services and
//! endpoints; change only its own Node, its own Lease, and the status of
//! (and the deletion of) pods bound to it; post events. Anything else on a resource is refused outright; a path outside
//! the resource tree is left to RBAC (discovery).

use futures::future::BoxFuture;

use super::attributes::{Attributes, On, ResourceRef};
use super::{Decision, Error};

/// The relationships the decisions need, read from the store.
pub trait Graph: Send + Sync {
    /// Whether a pod bound to `node` refers to the object `r` names (a
    /// Secret, ConfigMap, ServiceAccount or PersistentVolumeClaim).
    fn refers<'a>(
        &'a self,
        node: &'a str,
        r: &'a ResourceRef,
    ) -> BoxFuture<'a, Result<bool, Error>>;
    /// The node the pod is bound to, if the pod exists and is bound.
    fn pod_node<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, Error>>;
}

const READS: [&str; 3] = ["get", "list", "watch"];
const LEASES: &str = "kube-node-lease";

/// Whether `r` names one pod that is bound to `node`.
async fn bound_here(graph: &dyn Graph, node: &str, r: &ResourceRef) -> Result<bool, Error> {
    let (Some(ns), Some(name)) = (&r.namespace, &r.name) else {
        return Ok(false);
    };
    Ok(graph.pod_node(ns, name).await?.as_deref() == Some(node))
}

/// Allow or refuse what node `node` asks.
pub async fn authorize(
    graph: &dyn Graph,
    node: &str,
    attrs: &Attributes,
) -> Result<Decision, Error> {
    let On::Resource(r) = &attrs.on else {
        return Ok(Decision::NoOpinion(String::new()));
    };
    let verb = attrs.verb.as_str();
    let read = READS.contains(&verb);
    let writes = matches!(verb, "create" | "update" | "patch");
    let sub = r.subresource.as_deref();
    let allowed = match (r.group.as_str(), r.resource.as_str(), sub) {
        ("", "secrets" | "configmaps" | "serviceaccounts" | "persistentvolumeclaims", None) => {
            verb == "get" && graph.refers(node, r).await?
        }
        // The kubelet's TokenRequest for a pod's projected token (bound
        // to the pod by the gateway, which checks it is bound here).
        ("", "serviceaccounts", Some("token")) => verb == "create" && graph.refers(node, r).await?,
        ("", "nodes", None | Some("status")) => {
            read || verb == "create" && sub.is_none()
                || matches!(verb, "update" | "patch") && r.name.as_deref() == Some(node)
        }
        ("", "pods", None) => read || verb == "delete" && bound_here(graph, node, r).await?,
        ("", "pods", Some("status")) => {
            read || matches!(verb, "update" | "patch") && bound_here(graph, node, r).await?
        }
        ("", "pods", Some("eviction")) => verb == "create" && bound_here(graph, node, r).await?,
        ("", "services" | "endpoints", None) | ("discovery.k8s.io", "endpointslices", None) => read,
        ("coordination.k8s.io", "leases", None) => {
            r.namespace.as_deref() == Some(LEASES)
                && (read
                    || r.name.as_deref().is_none_or(|n| n == node) && verb != "deletecollection")
        }
        ("" | "events.k8s.io", "events", None) => writes,
        ("authentication.k8s.io", "tokenreviews" | "selfsubjectreviews", None)
        | (
            "authorization.k8s.io",
            "subjectaccessreviews"
            | "localsubjectaccessreviews"
            | "selfsubjectaccessreviews"
            | "selfsubjectrulesreviews",
            None,
        ) => verb == "create",
        _ => false,
    };
    Ok(if allowed {
        Decision::Allow
    } else {
        Decision::Deny(format!(
            "no relationship found between node '{node}' and this object"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Identity;

    /// Pod `p1` in `default` is on n1 and uses Secret `s1`.
    struct OnePod;

    impl Graph for OnePod {
        fn refers<'a>(
            &'a self,
            node: &'a str,
            r: &'a ResourceRef,
        ) -> BoxFuture<'a, Result<bool, Error>> {
            let yes = node == "n1" && r.resource == "secrets" && r.name.as_deref() == Some("s1");
            Box::pin(async move { Ok(yes) })
        }
        fn pod_node<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Option<String>, Error>> {
            let on = (ns == "default" && name == "p1").then(|| "n1".to_string());
            Box::pin(async move { Ok(on) })
        }
    }

    async fn may(node: &str, verb: &str, r: ResourceRef) -> bool {
        let a = Attributes::resource(&Identity::node(node), verb, r);
        authorize(&OnePod, node, &a).await.unwrap() == Decision::Allow
    }

    fn pod(sub: Option<&str>) -> ResourceRef {
        ResourceRef::new("", "pods")
            .in_namespace(Some("default"))
            .named(Some("p1"))
            .subresource(sub)
    }

    #[tokio::test]
    async fn subresources_are_checked() {
        assert!(may("n1", "get", pod(None)).await);
        assert!(
            !may("n1", "get", pod(Some("log"))).await,
            "no pod logs for nodes"
        );
        assert!(!may("n1", "create", pod(Some("exec"))).await);
        assert!(may("n1", "patch", pod(Some("status"))).await);
        assert!(
            !may("n2", "patch", pod(Some("status"))).await,
            "not its pod"
        );
        assert!(!may("n1", "patch", pod(None)).await, "only the status");
        assert!(may("n1", "delete", pod(None)).await);
        assert!(!may("n2", "delete", pod(None)).await);
    }

    #[tokio::test]
    async fn reads_are_limited_to_what_a_node_needs() {
        let secret = |n: &str| {
            ResourceRef::new("", "secrets")
                .in_namespace(Some("default"))
                .named(Some(n))
        };
        assert!(may("n1", "get", secret("s1")).await);
        assert!(!may("n2", "get", secret("s1")).await);
        assert!(!may("n1", "list", ResourceRef::new("", "secrets")).await);
        assert!(!may("n1", "list", ResourceRef::new("apps", "deployments")).await);
        assert!(
            !may(
                "n1",
                "list",
                ResourceRef::new("rbac.authorization.k8s.io", "roles")
            )
            .await
        );
        assert!(may("n1", "watch", ResourceRef::new("", "services")).await);
    }

    #[tokio::test]
    async fn only_its_own_node_and_lease() {
        let node = |n: &str, sub| {
            ResourceRef::new("", "nodes")
                .named(Some(n))
                .subresource(sub)
        };
        assert!(may("n1", "patch", node("n1", Some("status"))).await);
        assert!(!may("n1", "patch", node("n2", Some("status"))).await);
        assert!(!may("n1", "delete", node("n1", None)).await);
        let lease = |n: &str| {
            ResourceRef::new("coordination.k8s.io", "leases")
                .in_namespace(Some(LEASES))
                .named(Some(n))
        };
        assert!(may("n1", "update", lease("n1")).await);
        assert!(!may("n1", "update", lease("n2")).await);
    }
}
