//! The review APIs: nothing is stored, each POST is answered in place.
//!
//! - `authorization.k8s.io/v1`: SelfSubjectAccessReview (`kubectl auth
//!   can-i`), SelfSubjectRulesReview (`can-i --list`), SubjectAccessReview
//!   and LocalSubjectAccessReview (another user's access).
//! - `authentication.k8s.io/v1`: SelfSubjectReview (`kubectl auth
//!   whoami`) and TokenReview (whom a bearer token speaks for).

use k8s_openapi::api::authorization::v1::{
    LocalSubjectAccessReview, NonResourceAttributes, ResourceAttributes, SelfSubjectAccessReview,
    SelfSubjectRulesReview, SubjectAccessReview,
};
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::status::{ApiError, ApiResult};
use super::Api;
use crate::auth::{Attributes, Decision, ResourceRef};
use crate::pki::Identity;

pub const AUTHORIZATION: &str = "authorization.k8s.io";
pub const AUTHENTICATION: &str = "authentication.k8s.io";
pub const VERSION: &str = "v1";

/// Which review a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    SelfSubjectAccess,
    SelfSubjectRules,
    SubjectAccess,
    LocalSubjectAccess,
    SelfSubject,
    Token,
}

/// `(group, plural, kind, namespaced)` of each review.
const SERVED: [(Review, &str, &str, &str, bool); 6] = [
    (
        Review::SelfSubjectAccess,
        AUTHORIZATION,
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    (
        Review::SelfSubjectRules,
        AUTHORIZATION,
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
    ),
    (
        Review::SubjectAccess,
        AUTHORIZATION,
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
    (
        Review::LocalSubjectAccess,
        AUTHORIZATION,
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
    (
        Review::SelfSubject,
        AUTHENTICATION,
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
    ),
    (
        Review::Token,
        AUTHENTICATION,
        "tokenreviews",
        "TokenReview",
        false,
    ),
];

/// A review's path: `/apis/<group>/v1/[namespaces/<ns>/]<plural>`.
#[derive(Debug, PartialEq, Eq)]
pub struct ReviewPath<'a> {
    pub review: Review,
    pub namespace: Option<&'a str>,
}

impl ReviewPath<'_> {
    fn entry(&self) -> (Review, &'static str, &'static str, &'static str, bool) {
        *SERVED
            .iter()
            .find(|e| e.0 == self.review)
            .expect("every review is served")
    }

    /// What creating this review asks of authorization.
    pub fn resource(&self) -> ResourceRef {
        let (_, group, plural, _, _) = self.entry();
        ResourceRef::new(group, plural).in_namespace(self.namespace)
    }
}

pub fn is_review_group(group: &str) -> bool {
    group == AUTHORIZATION || group == AUTHENTICATION
}

/// The path below `/apis/<group>/v1/`, if it names a review.
pub fn parse<'a>(group: &str, rest: &[&'a str]) -> Option<ReviewPath<'a>> {
    let (namespace, plural) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural),
        [plural] => (None, *plural),
        _ => return None,
    };
    let (review, .., namespaced) = SERVED
        .iter()
        .find(|(_, g, p, _, _)| *g == group && *p == plural)?;
    (namespace.is_some() == *namespaced).then_some(ReviewPath {
        review: *review,
        namespace,
    })
}

/// The discovery list of one of the review groups.
pub fn resource_list(group: &str) -> Value {
    let resources: Vec<Value> = SERVED
        .iter()
        .filter(|e| e.1 == group)
        .map(|(_, _, plural, kind, namespaced)| {
            json!({"name": plural, "singularName": "", "namespaced": namespaced,
                "kind": kind, "verbs": ["create"]})
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{group}/{VERSION}"),
        "resources": resources,
    })
}

fn decode<T: DeserializeOwned>(body: &Value, kind: &str) -> ApiResult<T> {
    serde_json::from_value(body.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid {kind}: {e}")))
}

/// The attributes a review's spec asks about, for `who`.
fn asked(
    who: &Identity,
    resource: Option<&ResourceAttributes>,
    path: Option<&NonResourceAttributes>,
) -> ApiResult<Attributes> {
    match (resource, path) {
        (Some(r), None) => Ok(Attributes::resource(
            who,
            r.verb.as_deref().unwrap_or(""),
            ResourceRef::new(
                r.group.as_deref().unwrap_or(""),
                r.resource.as_deref().unwrap_or(""),
            )
            .in_namespace(r.namespace.as_deref())
            .named(r.name.as_deref())
            .subresource(r.subresource.as_deref()),
        )),
        (None, Some(p)) => Ok(Attributes::path(
            who,
            p.verb.as_deref().unwrap_or(""),
            p.path.as_deref().unwrap_or(""),
        )),
        _ => Err(ApiError::bad_request(
            "exactly one of spec.resourceAttributes and spec.nonResourceAttributes must be set",
        )),
    }
}

async fn access_status(api: &Api, attrs: &Attributes) -> ApiResult<Value> {
    let decision = api
        .auth()
        .authorize(attrs)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(match decision {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(why) | Decision::NoOpinion(why) => {
            let mut s = json!({"allowed": false});
            if !why.is_empty() {
                s["reason"] = json!(why);
            }
            s
        }
    })
}

fn answer(mut body: Value, status: Value) -> Value {
    body["status"] = status;
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("creationTimestamp".into(), Value::Null);
    }
    body
}

fn rules_status(rules: Vec<PolicyRule>, incomplete: bool) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        if r.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty()) {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
        if r.resources.as_ref().is_some_and(|u| !u.is_empty()) {
            let mut e =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if let Some(names) = r.resource_names.filter(|n| !n.is_empty()) {
                e["resourceNames"] = json!(names);
            }
            resource_rules.push(e);
        }
    }
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": incomplete,
    })
}

/// Answer a review created by `who`.
pub async fn serve(
    api: &Api,
    who: &Identity,
    path: &ReviewPath<'_>,
    body: Value,
) -> ApiResult<Value> {
    let (_, group, _, kind, _) = path.entry();
    let mut body = body;
    body["apiVersion"] = json!(format!("{group}/{VERSION}"));
    body["kind"] = json!(kind);
    match path.review {
        Review::SelfSubjectAccess => {
            let r: SelfSubjectAccessReview = decode(&body, kind)?;
            let attrs = asked(
                who,
                r.spec.resource_attributes.as_ref(),
                r.spec.non_resource_attributes.as_ref(),
            )?;
            Ok(answer(body, access_status(api, &attrs).await?))
        }
        Review::SubjectAccess | Review::LocalSubjectAccess => {
            let spec = if path.review == Review::SubjectAccess {
                decode::<SubjectAccessReview>(&body, kind)?.spec
            } else {
                decode::<LocalSubjectAccessReview>(&body, kind)?.spec
            };
            if path.namespace.is_some()
                && spec
                    .resource_attributes
                    .as_ref()
                    .and_then(|r| r.namespace.as_deref())
                    != path.namespace
            {
                return Err(ApiError::bad_request(
                    "spec.resourceAttributes.namespace must match the namespace of the request",
                ));
            }
            let user = spec.user.clone().unwrap_or_default();
            let groups = spec.groups.clone().unwrap_or_default();
            if user.is_empty() && groups.is_empty() {
                return Err(ApiError::bad_request(
                    "at least one of spec.user and spec.groups must be set",
                ));
            }
            let subject = Identity { user, groups };
            let attrs = asked(
                &subject,
                spec.resource_attributes.as_ref(),
                spec.non_resource_attributes.as_ref(),
            )?;
            Ok(answer(body, access_status(api, &attrs).await?))
        }
        Review::SelfSubjectRules => {
            let r: SelfSubjectRulesReview = decode(&body, kind)?;
            let ns = r.spec.namespace.as_deref().filter(|n| !n.is_empty());
            let rules = api.auth().rbac().rules_for(who, ns);
            // A node's access is decided by relationships, not rules.
            let incomplete = who.node_name().is_some();
            Ok(answer(body, rules_status(rules, incomplete)))
        }
        Review::SelfSubject => Ok(answer(
            body,
            json!({"userInfo": {"username": who.user, "groups": who.groups}}),
        )),
        Review::Token => {
            let token = body
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let status = match api.authenticate_bearer(&token).await {
                Ok(mut id) => {
                    id.groups
                        .push(crate::auth::rbac::bootstrap::AUTHENTICATED.into());
                    json!({"authenticated": true,
                        "user": {"username": id.user, "groups": id.groups}})
                }
                Err(e) => json!({"authenticated": false, "error": e.message}),
            };
            Ok(answer(body, status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_reviews() {
        assert_eq!(
            parse(AUTHORIZATION, &["selfsubjectaccessreviews"]).map(|p| p.review),
            Some(Review::SelfSubjectAccess)
        );
        assert_eq!(
            parse(
                AUTHORIZATION,
                &["namespaces", "a", "localsubjectaccessreviews"]
            )
            .map(|p| p.namespace),
            Some(Some("a"))
        );
        assert!(parse(AUTHORIZATION, &["localsubjectaccessreviews"]).is_none());
        assert!(parse(AUTHORIZATION, &["namespaces", "a", "subjectaccessreviews"]).is_none());
        assert!(parse(AUTHENTICATION, &["selfsubjectaccessreviews"]).is_none());
        assert_eq!(
            parse(AUTHENTICATION, &["selfsubjectreviews"]).map(|p| p.review),
            Some(Review::SelfSubject)
        );
    }
}
