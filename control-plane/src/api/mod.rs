//! The Kubernetes API over HTTPS, served by every master from its embedded
//! store.
//!
//! - [`resources`]: what is served; [`path`]: URLs to resources and objects.
//! - [`discovery`]: `/version`, `/api`, `/apis`, resource lists.
//! - [`handlers`]: get, list, create, update, patch, delete and subresources;
//!   [`watch`]: watch streams; [`objects`]: server-set fields and defaults;
//!   [`job_selector`]: the selector and labels a Job's pods carry;
//!   [`services`]: cluster IPs and node ports;
//!   [`patch`]: merge, JSON and strategic merge patches; [`selector`]:
//!   label and field selectors; [`status`]: errors as `Status` objects.
//! - [`conversion`]: versions served over another version's objects.
//! - [`openapi`]: the OpenAPI v3 documents; [`fields`]: unknown fields
//!   (`fieldValidation`); [`protobuf`]: protobuf request bodies;
//!   [`warnings`]: `Warning` headers; [`table`]:
//!   server-side printing for `kubectl get`.
//! - [`usage`]: `metrics.k8s.io`, the nodes' and pods' CPU and memory use.
//! - [`pod_streams`]: logs, exec and attach; [`port_forward`] (over
//!   [`spdy`]): port forwarding; [`eviction`]: `pods/<name>/eviction`.
//! - [`debug_flags`]: `/debug/flags/v`, the log filter, for cluster admins.
//! - [`http_sd`]: `/skiff/v1/http-sd`, what Prometheus should scrape.
//!
//! Every request must carry a client certificate signed by the cluster CA or
//! a known bearer token; anything else gets 401. [`access`] then asks the
//! authorization chain ([`crate::auth`]), before the body is read: 403 if
//! it refuses. [`admission`] checks RBAC writes against their author;
//! [`pod_service_account`] gives a new pod its service account and token;
//! [`reviews`] answers `kubectl auth can-i` and `whoami`.

mod access;
mod admission;
mod conversion;
mod debug_flags;
mod discovery;
mod eviction;
mod fields;
mod handlers;
mod http_sd;
mod job_selector;
mod objects;
mod openapi;
mod patch;
mod path;
mod pod_service_account;
mod pod_streams;
mod port_forward;
mod protobuf;
mod request_metrics;
mod resources;
mod reviews;
mod selector;
mod service_accounts;
mod services;
mod spdy;
mod status;
mod table;
mod usage;
mod warnings;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde_json::{json, Value};
use tokio_rustls::TlsAcceptor;

use crate::pki::{self, Identity};
use crate::registry::Registry;
use handlers::{json_response, Query};
use path::{ObjectPath, Target};
use request_metrics::RequestLabels;
pub use request_metrics::DURATION_BUCKETS as REQUEST_DURATION_BUCKETS;
use status::ApiResult;

/// Request bodies above this are refused with 413.
pub const MAX_BODY: usize = 3 << 20;

pub use handlers::Filter;
pub use handlers::Query as ApiQuery;
pub use patch::PatchType;
pub use pod_service_account::ROOT_CA_CONFIGMAP;
pub use resources::{find as find_resource, find_kind, Resource, RESOURCES};
pub use services::Ranges as ServiceRanges;
pub use status::ApiError;
pub use watch::{Change, EventType, WatchEvent, WatchScope};

#[derive(Clone)]
pub struct Api {
    registry: Registry,
    /// Where Services' cluster IPs and node ports come from.
    ranges: ServiceRanges,
    /// Bearer tokens (from `<pki>/tokens.csv`: token,user,uid,"group,...").
    tokens: Arc<HashMap<String, Identity>>,
    /// Nodes' connections to this master, for logs, exec and attach.
    nodes: Arc<crate::agents::streams::NodeConnections>,
    /// Who may do what.
    auth: Arc<crate::auth::Chain>,
    /// The key service account tokens are signed with, once read.
    signer: service_accounts::SignerCell,
}

/// The caller, as the TLS handshake established it: who the client
/// certificate names, and for a node's, the Node uid it was issued for.
#[derive(Clone)]
struct Peer {
    who: Option<Identity>,
    node_uid: Option<String>,
}

impl Api {
    pub fn new(
        registry: Registry,
        tokens: HashMap<String, Identity>,
        ranges: ServiceRanges,
        auth: Arc<crate::auth::Chain>,
    ) -> Self {
        Api {
            registry,
            ranges,
            tokens: Arc::new(tokens),
            nodes: Arc::default(),
            auth,
            signer: Arc::default(),
        }
    }

    /// The authorization chain requests pass.
    pub fn auth(&self) -> &crate::auth::Chain {
        &self.auth
    }

    /// The nodes' connections to this master, shared with the agent gateway.
    pub fn node_connections(&self) -> Arc<crate::agents::streams::NodeConnections> {
        self.nodes.clone()
    }
}

impl Api {
    /// This API with every write fenced to one Raft leadership: what the
    /// leader-only loops write through.
    pub fn fenced(&self, fence: crate::registry::Fence) -> Api {
        Api {
            registry: self.registry.fenced(fence),
            ranges: self.ranges.clone(),
            tokens: self.tokens.clone(),
            nodes: self.nodes.clone(),
            auth: self.auth.clone(),
            signer: self.signer.clone(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The store prefix under which every object of `r` lives.
pub fn prefix_of(r: &Resource) -> String {
    handlers::prefix(r, None)
}

/// The store key of one object of `r`.
pub fn key_of(r: &Resource, namespace: Option<&str>, name: &str) -> String {
    handlers::key(r, namespace, name)
}

/// Read a Kubernetes static token file, if there is one.
pub fn load_tokens(path: &std::path::Path) -> anyhow::Result<HashMap<String, Identity>> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(out);
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.splitn(4, ',').collect();
        if fields.len() < 2 {
            anyhow::bail!(
                "{}:{}: expected token,user[,uid[,\"groups\"]]",
                path.display(),
                i + 1
            );
        }
        let groups = fields
            .get(3)
            .map(|g| {
                g.trim_matches('"')
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            fields[0].to_string(),
            Identity {
                user: fields[1].to_string(),
                groups,
            },
        );
    }
    Ok(out)
}

/// Serve HTTPS on `listener` until `shutdown` resolves.
pub async fn serve(
    api: Api,
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let app = Router::new().fallback(dispatch).with_state(api.clone());
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => { tracing::warn!("api accept: {e}"); continue }
            },
            _ = &mut shutdown => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!("api TLS handshake: {e}");
                    return;
                }
            };
            let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let peer = Peer {
                who: cert.and_then(|c| pki::identity_of(c)),
                node_uid: cert.and_then(|c| pki::node_cert::node_uid_of(c)),
            };
            let service = hyper_util::service::TowerToHyperService::new(app.layer(Extension(peer)));
            let io = hyper_util::rt::TokioIo::new(tls);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
                tracing::debug!("api connection: {e}");
            }
        });
    }
}

fn verb_of(method: &Method, target: &Target<'_>, q: &Query) -> &'static str {
    let Target::Object(o) = target else {
        return "get";
    };
    match (method.as_str(), o.name.is_some()) {
        ("GET", false) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => "other",
    }
}

async fn dispatch(
    State(api): State<Api>,
    Extension(peer): Extension<Peer>,
    method: Method,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let started = Instant::now();
    let uri = request.uri().clone();
    let q: Query = uri
        .query()
        .map(|s| serde_urlencoded::from_str(s).unwrap_or_default())
        .unwrap_or_default();
    let target = path::parse(uri.path());
    let verb = match &target {
        Ok(t @ Target::Object(_)) => verb_of(&method, t, &q),
        _ => "get",
    };
    let labels = match &target {
        Ok(t) => RequestLabels::of(&method, &headers, t, &q),
        Err(_) => RequestLabels::of(&method, &headers, &Target::Version, &q),
    };
    metrics::gauge!("apiserver_current_inflight_requests").increment(1.0);
    // Who asks and whether they may, before a byte of the body is read.
    let who = match access::admit(
        &api,
        &peer,
        &headers,
        &method,
        uri.path(),
        target.as_ref().ok(),
        verb,
    )
    .await
    {
        Ok(who) => who,
        Err(refused) => return finish(refused.into_response(), labels, started),
    };
    if let Ok(Target::Object(o)) = &target {
        let streams =
            o.resource.plural == "pods" && matches!(o.sub, Some("exec" | "attach" | "portforward"));
        if streams && pod_streams::is_websocket(&headers) {
            let (ns, name, sub) = (
                o.namespace.unwrap_or("default").to_string(),
                o.name.unwrap_or("").to_string(),
                o.sub.unwrap_or("").to_string(),
            );
            let raw = uri.query().unwrap_or("").to_string();
            let answer = if sub == "portforward" {
                port_forward::serve(&api, &ns, &name, request).await
            } else {
                pod_streams::exec(&api, &ns, &name, sub == "attach", &raw, request).await
            };
            let response = answer.unwrap_or_else(IntoResponse::into_response);
            return finish(response, labels, started);
        }
    }
    let response = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Err(_) => ApiError::too_large().into_response(),
        Ok(body) => match target {
            Err(path::Unknown) => ApiError::not_found_path(uri.path()).into_response(),
            Ok(t) => {
                let serve = async {
                    route(&api, &who, &method, &headers, t, &q, &body)
                        .await
                        .unwrap_or_else(IntoResponse::into_response)
                };
                admission::as_caller(who.clone(), warnings::scope(serve)).await
            }
        },
    };
    finish(response, labels, started)
}

fn finish(response: Response, labels: RequestLabels, started: Instant) -> Response {
    metrics::gauge!("apiserver_current_inflight_requests").decrement(1.0);
    labels.record(response.status().as_u16(), started.elapsed());
    response
}

/// Help text and units of the API's series.
pub fn describe_metrics() {
    request_metrics::describe();
}

/// Why a node's certificate does not work (any more), if it does not: 401
/// for a Node deleted or made again, 503 if that cannot be read now.
async fn node_certificate_void(api: &Api, node: &str, cert_uid: Option<&str>) -> Option<ApiError> {
    use crate::agents::membership::{check_in_store, Verdict};
    match check_in_store(api, node, cert_uid).await {
        Verdict::Member(_) => None,
        Verdict::NotMember(why) => Some(ApiError::unauthorized_because(why)),
        Verdict::CannotCheck(why) => Some(ApiError::unavailable(format!(
            "cannot check the node's membership now: {why}"
        ))),
    }
}

/// Decode a create/update body: JSON, or YAML when sent as YAML.
fn decode_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    match ct.split(';').next().unwrap_or("").trim() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}"))),
        "application/yaml" | "application/x-yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}"))),
        protobuf::CONTENT_TYPE => protobuf::decode(body).map_err(|e| {
            ApiError::bad_request(format!("the protobuf body could not be decoded: {e}"))
        }),
        other => Err(ApiError::unsupported_media(other)),
    }
}

/// Decode a delete's body, if it has one, as a DeleteOptions: JSON, YAML or
/// protobuf (client-go's typed clients send protobuf: `kubectl drain
/// --disable-eviction`), by the Content-Type as for any body.
fn decode_delete_options(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let opts = decode_body(headers, body)?;
    match opts.get("kind").and_then(Value::as_str) {
        None | Some("DeleteOptions") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "a delete's body must be a DeleteOptions, not a {other}"
            )))
        }
    }
    check_delete_options(&opts)?;
    Ok(opts)
}

/// Whether `opts` decodes as a DeleteOptions (400 otherwise).
fn check_delete_options(opts: &Value) -> ApiResult<()> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions;
    <DeleteOptions as serde::Deserialize>::deserialize(opts)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))
}

async fn route(
    api: &Api,
    who: &Identity,
    method: &Method,
    headers: &HeaderMap,
    target: Target<'_>,
    q: &Query,
    body: &[u8],
) -> ApiResult<Response> {
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match target {
        Target::Root if method == Method::GET => ok(discovery::root()),
        Target::Root => Err(ApiError::method_not_allowed(method.as_str())),
        Target::Version => ok(discovery::version()),
        Target::CoreVersions => ok(discovery::core_versions()),
        Target::Groups => ok(discovery::groups()),
        Target::GroupVersion { group, version } => match discovery::resource_list(group, version) {
            Some(v) => ok(v),
            None => Err(ApiError::not_found_path(&format!(
                "/apis/{group}/{version}"
            ))),
        },
        Target::OpenApiV3(None) => ok(openapi::documents().index().clone()),
        Target::OpenApiV3(Some(gv)) => match openapi::documents().get(gv) {
            Some(doc) => Ok((
                [
                    ("content-type", "application/json"),
                    ("etag", doc.etag.as_str()),
                    ("cache-control", "public, immutable"),
                ],
                doc.body.clone(),
            )
                .into_response()),
            None => Err(ApiError::not_found_path(&format!("/openapi/v3/{gv}"))),
        },
        Target::OpenApiV2 => Err(ApiError::not_found_path("/openapi/v2")),
        Target::Usage(p) if method == Method::GET => ok(usage::serve(api, p, q).await?),
        Target::Usage(_) => Err(ApiError::method_not_allowed(method.as_str())),
        Target::HttpSd if method == Method::GET => ok(http_sd::serve(api, q).await?),
        Target::HttpSd => Err(ApiError::method_not_allowed(method.as_str())),
        Target::Review(p) if method == Method::POST => {
            let v = reviews::serve(api, who, &p, decode_body(headers, body)?).await?;
            Ok(json_response(StatusCode::CREATED, &v))
        }
        Target::Review(_) => Err(ApiError::method_not_allowed(method.as_str())),
        Target::OpenIdConfiguration if method == Method::GET => {
            ok(crate::auth::service_account::openid_configuration())
        }
        Target::Jwks if method == Method::GET => ok(api.jwks().await?),
        Target::OpenIdConfiguration | Target::Jwks => {
            Err(ApiError::method_not_allowed(method.as_str()))
        }
        Target::Object(o) => object(api, method, headers, o, q, body).await,
        Target::DebugFlagsV => debug_flags::serve(method, body),
    }
}

/// The patch a PATCH request's content type names (415 for any other).
fn patch_type(headers: &HeaderMap) -> ApiResult<PatchType> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media(ct))
}

/// Whether the client asked for a Table, and with what of each object.
fn table_wanted(headers: &HeaderMap, q: &Query) -> Option<table::Include> {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(table::wanted)
        .then(|| table::Include::from_query(q.get("includeObject").map(String::as_str)))
}

async fn object(
    api: &Api,
    method: &Method,
    headers: &HeaderMap,
    o: ObjectPath<'_>,
    q: &Query,
    body: &[u8],
) -> ApiResult<Response> {
    let r = o.resource;
    if let Some(view) = r.view {
        return conversion::serve(api, method, headers, o, q, body, view).await;
    }
    let ns = if r.namespaced { o.namespace } else { None };
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    let patch_type = || patch_type(headers);
    let as_table = table_wanted(headers, q);
    let now = || table::Now(chrono::Utc::now());
    match (method.as_str(), o.name, o.sub) {
        ("GET", None, None) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                api.watch(r, ns, q, as_table).await
            } else {
                let mut list = api.list(r, ns, q).await?;
                match as_table {
                    None => ok(list),
                    Some(include) => {
                        let items = list["items"].take();
                        let items = items.as_array().map(Vec::as_slice).unwrap_or(&[]);
                        let meta = list["metadata"].take();
                        ok(table::render(r, items, meta, include, true, now()))
                    }
                }
            }
        }
        ("GET", Some(name), None | Some("status")) => {
            let object = api.get(r, ns, name).await?.object;
            match as_table {
                None => ok(object),
                Some(include) => {
                    let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                    ok(table::render(r, &[object], meta, include, true, now()))
                }
            }
        }
        ("GET", Some(name), Some("scale")) => ok(api.scale_of(&api.get(r, ns, name).await?.object)),
        ("GET", Some(name), Some("log")) if r.plural == "pods" => {
            pod_streams::logs(api, ns.unwrap_or("default"), name, q).await
        }
        (_, Some(name), Some("exec" | "attach")) if r.plural == "pods" => {
            let container = q.get("container").map(String::as_str);
            Err(pod_streams::refuse_spdy(api, ns.unwrap_or("default"), name, container).await)
        }
        (_, Some(_), Some("portforward")) if r.plural == "pods" => {
            Err(ApiError::bad_request(format!(
                "port forwarding needs a WebSocket upgrade ({})",
                port_forward::PROTOCOL
            )))
        }
        ("POST", None, None) => {
            let created = api
                .create(
                    r,
                    ns.or(Some("default")).filter(|_| r.namespaced),
                    decode_body(headers, body)?,
                    q,
                )
                .await?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        ("POST", Some(name), Some("token")) if r.plural == "serviceaccounts" => {
            let ns = ns.unwrap_or("default");
            let request = decode_body(headers, body)?;
            let node = admission::caller().and_then(|c| c.node_name().map(String::from));
            if let Some(node) = node {
                let bound = &request["spec"]["boundObjectRef"];
                let pod = match bound["kind"].as_str() {
                    Some("Pod") => bound["name"].as_str().unwrap_or(""),
                    _ => "",
                };
                let uid = bound["uid"].as_str().unwrap_or("");
                api.check_node_token(&node, ns, name, pod, uid).await?;
            }
            let v = api.request_token(ns, name, request).await?;
            Ok(json_response(StatusCode::CREATED, &v))
        }
        ("POST", Some(name), Some("binding")) => {
            let v = api.bind(r, ns, name, decode_body(headers, body)?).await?;
            Ok(json_response(StatusCode::CREATED, &v))
        }
        ("PUT", Some(name), None | Some("status")) => ok(api
            .update(r, ns, name, o.sub, decode_body(headers, body)?, q)
            .await?),
        ("PUT", Some(name), Some("scale")) => {
            ok(api.write_scale(r, ns, name, None, body, q).await?)
        }
        ("PATCH", Some(name), None | Some("status")) => ok(api
            .patch(r, ns, name, o.sub, patch_type()?, body, q)
            .await?),
        ("PATCH", Some(name), Some("scale")) => ok(api
            .write_scale(r, ns, name, Some(patch_type()?), body, q)
            .await?),
        ("POST", Some(name), Some("eviction")) if r.plural == "pods" => {
            let eviction = decode_body(headers, body)?;
            let v = eviction::evict(api, ns.unwrap_or("default"), name, eviction, q).await?;
            Ok(json_response(StatusCode::CREATED, &v))
        }
        ("DELETE", Some(name), None) => {
            let opts = decode_delete_options(headers, body)?;
            ok(api.delete(r, ns, name, &opts, q).await?)
        }
        ("DELETE", None, None) if r.plural != "namespaces" => {
            let opts = decode_delete_options(headers, body)?;
            ok(api.delete_collection(r, ns, q, &opts).await?)
        }
        (m, _, _) => Err(ApiError::method_not_allowed(m)),
    }
}

/// Create the built-in namespaces and the bootstrap RBAC roles once a
/// leader can take the writes, and build the OpenAPI documents.
pub fn spawn_bootstrap(api: Api) {
    // Build the OpenAPI documents (and the schemas field checks use) before
    // the first request needs them.
    tokio::task::spawn_blocking(|| {
        openapi::documents();
    });
    tokio::spawn(async move {
        let mut namespaces = false;
        for _ in 0..240 {
            if api.registry.store().current_leader().is_some() {
                if !namespaces {
                    api.ensure_namespaces().await;
                    namespaces = true;
                }
                if api.ensure_rbac_defaults().await {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        tracing::warn!("the bootstrap RBAC roles could not all be created in 2 minutes");
    });
}
