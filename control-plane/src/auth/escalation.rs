//! No one grants what they do not hold, as Kubernetes' RBAC storage checks:
//! a Role or ClusterRole may be written only by someone who holds every
//! rule in it (or may `escalate`), and a binding only by someone who holds
//! every rule of the role it binds (or may `bind` that role).

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};

use super::attributes::{Attributes, ResourceRef};
use super::rbac::bootstrap::GROUP;
use super::rbac::rules::uncovered;
use super::{Chain, Decision, Error};
use crate::pki::Identity;

fn refusal(who: &Identity, what: &str, name: &str, missing: &str) -> String {
    format!(
        "{what}.{GROUP} \"{name}\" is forbidden: user \"{}\" (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{missing}",
        who.user, who.groups
    )
}

fn first_uncovered(held: &[PolicyRule], wanted: &[PolicyRule]) -> Option<String> {
    wanted.iter().find_map(|r| uncovered(held, r))
}

/// Whether `who` may write role `name` (`resource` is `roles` or
/// `clusterroles`) holding `rules`.
pub async fn check_role(
    chain: &Chain,
    who: &Identity,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
    rules: &[PolicyRule],
) -> Result<Result<(), String>, Error> {
    let escalate = Attributes::resource(
        who,
        "escalate",
        ResourceRef::new(GROUP, resource)
            .in_namespace(namespace)
            .named(Some(name)),
    );
    if chain.authorize(&escalate).await? == Decision::Allow {
        return Ok(Ok(()));
    }
    let held = chain.rbac().rules_for(who, namespace);
    Ok(match first_uncovered(&held, rules) {
        None => Ok(()),
        Some(missing) => Err(refusal(who, resource, name, &missing)),
    })
}

/// Whether `who` may write binding `name` (`resource` is `rolebindings`
/// or `clusterrolebindings`) of `role_ref`.
pub async fn check_binding(
    chain: &Chain,
    who: &Identity,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
    role_ref: &RoleRef,
) -> Result<Result<(), String>, Error> {
    let role_resource = if role_ref.kind == "Role" {
        "roles"
    } else {
        "clusterroles"
    };
    let bind = Attributes::resource(
        who,
        "bind",
        ResourceRef::new(GROUP, role_resource)
            .in_namespace(namespace)
            .named(Some(&role_ref.name)),
    );
    if chain.authorize(&bind).await? == Decision::Allow {
        return Ok(Ok(()));
    }
    let granted = chain.rbac().rules_of(role_ref, namespace.unwrap_or(""));
    let held = chain.rbac().rules_for(who, namespace);
    Ok(match first_uncovered(&held, &granted) {
        None => Ok(()),
        Some(missing) => Err(refusal(who, resource, name, &missing)),
    })
}
