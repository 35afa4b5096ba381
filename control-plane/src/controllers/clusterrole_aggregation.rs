//! ClusterRole aggregation: a ClusterRole with an `aggregationRule` holds
//! the rules of every ClusterRole its selectors match (`admin`, `edit` and
//! `view` gather the `aggregate-to-*` roles, so a role labelled
//! `rbac.authorization.k8s.io/aggregate-to-view: "true"` extends `view`).

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};

use super::ownership::selects;
use super::runtime::{key_of, Action, Change, WorkQueue};
use super::{Ctx, Result};

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("clusterrole-aggregation");
    let q = queue.clone();
    let roles = ctx.cluster_roles.clone();
    // Any role's change may change what an aggregated role gathers.
    ctx.cluster_roles
        .on_change(move |_: &Change<'_, ClusterRole>| {
            for r in roles.list() {
                if r.aggregation_rule.is_some() {
                    q.add(key_of(&r.metadata));
                }
            }
        });
    queue
}

/// The rules the roles `role`'s selectors match hold, each once, in the
/// order of the roles' names.
fn gathered(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Vec<PolicyRule> {
    let selectors = role
        .aggregation_rule
        .as_ref()
        .and_then(|a| a.cluster_role_selectors.as_deref())
        .unwrap_or(&[]);
    let mut sources: Vec<&Arc<ClusterRole>> = all
        .iter()
        .filter(|r| r.metadata.name != role.metadata.name)
        .filter(|r| {
            selectors
                .iter()
                .any(|s| selects(s, r.metadata.labels.as_ref()))
        })
        .collect();
    sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for rule in sources.iter().flat_map(|r| r.rules.iter().flatten()) {
        if !rules.contains(rule) {
            rules.push(rule.clone());
        }
    }
    rules
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let Some(role) = ctx.cluster_roles.get(&key) else {
        return Ok(Action::Done);
    };
    if role.aggregation_rule.is_none() {
        return Ok(Action::Done);
    }
    let rules = gathered(&role, &ctx.cluster_roles.list());
    if role.rules.as_ref() == Some(&rules) {
        return Ok(Action::Done);
    }
    let mut next = (*role).clone();
    next.rules = Some(rules);
    ctx.client.replace(&next).await?;
    tracing::info!(clusterrole = key, "aggregated rules updated");
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rbac::bootstrap;

    #[test]
    fn the_bootstrap_roles_are_written_already_aggregated() {
        let all: Vec<Arc<ClusterRole>> = bootstrap::cluster_roles()
            .into_iter()
            .map(Arc::new)
            .collect();
        for name in ["admin", "edit", "view"] {
            let role = all
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(name))
                .unwrap();
            assert_eq!(Some(gathered(role, &all)), role.rules, "{name}");
        }
    }
}
