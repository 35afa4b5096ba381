//! The RBAC objects every master keeps in memory, so that authorizing a
//! request reads no store: informers over Roles, ClusterRoles and their
//! bindings, kept current by watches on this master's store, for the
//! master's whole life (not only while it leads).

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use tokio_util::sync::CancellationToken;

use crate::auth::rbac::Policy;
use crate::controllers::runtime::Informer;
use crate::registry::Registry;

#[derive(Clone)]
pub struct RbacCache {
    cluster_roles: Informer<ClusterRole>,
    roles: Informer<Role>,
    cluster_role_bindings: Informer<ClusterRoleBinding>,
    role_bindings: Informer<RoleBinding>,
}

impl RbacCache {
    /// Start filling the cache; it follows the store until `stop`.
    pub fn start(registry: &Registry, stop: CancellationToken) -> Arc<Self> {
        let cache = RbacCache {
            cluster_roles: Informer::new(),
            roles: Informer::new(),
            cluster_role_bindings: Informer::new(),
            role_bindings: Informer::new(),
        };
        tokio::spawn(
            cache
                .cluster_roles
                .clone()
                .run(registry.clone(), stop.clone()),
        );
        tokio::spawn(cache.roles.clone().run(registry.clone(), stop.clone()));
        tokio::spawn(
            cache
                .cluster_role_bindings
                .clone()
                .run(registry.clone(), stop.clone()),
        );
        tokio::spawn(cache.role_bindings.clone().run(registry.clone(), stop));
        Arc::new(cache)
    }
}

impl Policy for RbacCache {
    fn cluster_role(&self, name: &str) -> Option<Arc<ClusterRole>> {
        self.cluster_roles.get(name)
    }

    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Role>> {
        self.roles.get_in(Some(namespace), name)
    }

    fn cluster_role_bindings(&self) -> Vec<Arc<ClusterRoleBinding>> {
        self.cluster_role_bindings.list()
    }

    fn role_bindings(&self, namespace: &str) -> Vec<Arc<RoleBinding>> {
        self.role_bindings.list_in(namespace)
    }
}
