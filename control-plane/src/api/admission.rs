//! Checks on a write's final object that depend on who makes it: no one
//! writes an RBAC role or binding that grants more than they hold
//! ([`crate::auth::escalation`]), and a binding's `roleRef` never changes.
//!
//! The caller is known for requests that came through the API port
//! ([`as_caller`]); the master's own loops write as the control plane and
//! are not checked here.

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use serde_json::Value;

use super::resources::Resource;
use super::status::{ApiError, ApiResult};
use super::Api;
use crate::auth::escalation;
use crate::auth::rbac::bootstrap::GROUP;
use crate::pki::Identity;

tokio::task_local! {
    static CALLER: Identity;
}

/// Serve `f` on behalf of `who`.
pub async fn as_caller<F: std::future::Future>(who: Identity, f: F) -> F::Output {
    CALLER.scope(who, f).await
}

pub(super) fn caller() -> Option<Identity> {
    CALLER.try_with(Identity::clone).ok()
}

fn invalid(r: &Resource, name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(r, name, &[(field.to_string(), message)])
}

/// Admit (or refuse) `new`, replacing `old` if it is an update.
pub async fn admit(
    api: &Api,
    r: &Resource,
    ns: Option<&str>,
    old: Option<&Value>,
    new: &Value,
) -> ApiResult<()> {
    if r.group != GROUP {
        return Ok(());
    }
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let role_ref = || -> ApiResult<RoleRef> {
        serde_json::from_value(new["roleRef"].clone())
            .map_err(|e| invalid(r, name, "roleRef", e.to_string()))
    };
    if matches!(r.plural, "rolebindings" | "clusterrolebindings") {
        let wanted = role_ref()?;
        if !matches!(wanted.kind.as_str(), "Role" | "ClusterRole") || wanted.api_group != GROUP {
            return Err(invalid(
                r,
                name,
                "roleRef",
                format!(
                    "{:?}: roleRef must name a Role or ClusterRole of {GROUP}",
                    wanted.kind
                ),
            ));
        }
        if wanted.kind == "Role" && r.plural == "clusterrolebindings" {
            return Err(invalid(
                r,
                name,
                "roleRef.kind",
                "\"Role\": a ClusterRoleBinding may only refer to a ClusterRole".into(),
            ));
        }
        if let Some(old) = old {
            if old["roleRef"] != new["roleRef"] {
                return Err(invalid(r, name, "roleRef", "cannot change roleRef".into()));
            }
        }
    }
    let Some(who) = caller() else {
        return Ok(());
    };
    let verdict = match r.plural {
        "roles" | "clusterroles" => {
            let mut rules: Vec<PolicyRule> =
                serde_json::from_value(new["rules"].clone()).unwrap_or_default();
            if new.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                // An aggregated role can gather any rule: only one who holds
                // every rule may write one.
                rules.push(PolicyRule {
                    api_groups: Some(vec!["*".into()]),
                    resources: Some(vec!["*".into()]),
                    verbs: vec!["*".into()],
                    ..Default::default()
                });
            }
            escalation::check_role(api.auth(), &who, r.plural, ns, name, &rules).await
        }
        "rolebindings" | "clusterrolebindings" => {
            escalation::check_binding(api.auth(), &who, r.plural, ns, name, &role_ref()?).await
        }
        _ => return Ok(()),
    };
    match verdict.map_err(|e| ApiError::unavailable(e.to_string()))? {
        Ok(()) => Ok(()),
        Err(message) => Err(ApiError::forbidden(message)),
    }
}
