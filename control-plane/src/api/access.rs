//! Who a request comes from and whether they may make it, decided before
//! its body is read: authentication (the client certificate, else a bearer
//! token), a node certificate's membership, impersonation, then the
//! authorization chain ([`crate::auth`]) on the request's attributes.

use axum::http::{HeaderMap, Method};

use super::path::Target;
use super::status::ApiError;
use super::{usage, Api, Peer};
use crate::auth::impersonation::Wanted;
use crate::auth::rbac::bootstrap::AUTHENTICATED;
use crate::auth::{Attributes, ResourceRef};
use crate::pki::Identity;

/// The caller the request runs as, or why it may not run.
pub async fn admit(
    api: &Api,
    peer: &Peer,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    target: Option<&Target<'_>>,
    verb: &str,
) -> Result<Identity, ApiError> {
    let who = authenticate(api, peer, headers).await?;
    // A node's certificate works while its Node exists, with the uid it
    // was issued for (as on the agent port: `agents::membership`).
    if let Some(node) = who.node_name() {
        if let Some(e) = super::node_certificate_void(api, node, peer.node_uid.as_deref()).await {
            return Err(e);
        }
    }
    let who = impersonate(api, who, headers).await?;
    check(api, &attributes(&who, method, path, target, verb)).await?;
    Ok(who)
}

/// Who the credentials speak for, with `system:authenticated` added:
/// the client certificate, else a bearer token (a service account's JWT,
/// or one from the static token file).
async fn authenticate(api: &Api, peer: &Peer, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let mut who = match &peer.who {
        Some(who) => who.clone(),
        None => {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(ApiError::unauthorized)?;
            api.authenticate_bearer(token).await?
        }
    };
    if !who.groups.iter().any(|g| g == AUTHENTICATED) {
        who.groups.push(AUTHENTICATED.into());
    }
    Ok(who)
}

async fn check(api: &Api, attrs: &Attributes) -> Result<(), ApiError> {
    match api.auth().check(attrs).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(ApiError::refused(message, &attrs.on)),
        Err(e) => Err(ApiError::unavailable(format!(
            "cannot authorize the request now: {e}"
        ))),
    }
}

/// The identity `Impersonate-*` headers ask for, once the caller may.
async fn impersonate(api: &Api, who: Identity, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let pairs = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
    let wanted = match Wanted::from_headers(pairs) {
        Ok(Some(w)) => w,
        Ok(None) => return Ok(who),
        Err(why) => return Err(ApiError::bad_request(why)),
    };
    for attrs in wanted.checks(&who) {
        check(api, &attrs).await?;
    }
    let as_whom = wanted.identity();
    tracing::debug!(user = %who.user, as_user = %as_whom.user, "impersonating");
    Ok(as_whom)
}

/// The request as authorization sees it.
fn attributes(
    who: &Identity,
    method: &Method,
    path: &str,
    target: Option<&Target<'_>>,
    verb: &str,
) -> Attributes {
    match target {
        Some(Target::Object(o)) => {
            let r = o.resource;
            let mut on = ResourceRef::new(r.group, r.plural)
                .in_namespace(o.namespace)
                .named(o.name)
                .subresource(o.sub);
            // A namespace is in itself: a RoleBinding there may grant
            // reading it.
            if r.plural == "namespaces" {
                on = on.in_namespace(o.name);
            }
            // Streams into a pod are created, whatever the method
            // (a WebSocket upgrade is a GET).
            let verb = match o.sub {
                Some("exec" | "attach" | "portforward") => "create",
                _ => verb,
            };
            Attributes::resource(who, verb, on)
        }
        Some(Target::Usage(u)) => {
            let plural = match u.kind {
                usage::Kind::Nodes => "nodes",
                usage::Kind::Pods => "pods",
            };
            let verb = if u.name.is_some() { "get" } else { "list" };
            let on = ResourceRef::new(usage::GROUP, plural)
                .in_namespace(u.namespace)
                .named(u.name);
            Attributes::resource(who, verb, on)
        }
        Some(Target::Review(p)) => Attributes::resource(who, "create", p.resource()),
        _ => Attributes::path(who, &method.as_str().to_ascii_lowercase(), path),
    }
}
