//! The API server's request series, named and labelled as kube-apiserver's
//! (`apiserver_request_total`, `apiserver_request_duration_seconds`,
//! `apiserver_current_inflight_requests`), so the ecosystem's dashboards
//! and SLO rules (`verb=~"LIST|GET"`, `code=~"5.."`) read them unchanged.

use std::time::Duration;

use axum::http::{HeaderMap, Method};
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

use super::handlers::Query;
use super::path::Target;

/// kube-apiserver's buckets for `apiserver_request_duration_seconds`.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// What one request is, in kube-apiserver's label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLabels {
    /// GET, LIST, WATCH, POST, PUT, PATCH, APPLY, DELETE, DELETECOLLECTION,
    /// CONNECT (exec, attach, port-forward, logs are GETs).
    pub verb: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    /// "resource" (one object), "namespace", "cluster", or "" when the
    /// path names no resource (discovery, /version, /openapi).
    pub scope: &'static str,
}

impl RequestLabels {
    pub fn of(method: &Method, headers: &HeaderMap, target: &Target<'_>, q: &Query) -> Self {
        let Target::Object(o) = target else {
            return RequestLabels {
                verb: "GET",
                group: "",
                version: "",
                resource: "",
                subresource: "",
                scope: "",
            };
        };
        // Only the subresources the resource has: the label stays bounded
        // whatever the path says.
        let subresource = o
            .sub
            .and_then(|s| o.resource.subresources.iter().find(|x| **x == s))
            .copied()
            .unwrap_or("");
        let connect = matches!(subresource, "exec" | "attach" | "portforward" | "proxy");
        let verb = match (method.as_str(), o.name.is_some()) {
            _ if connect => "CONNECT",
            ("GET", false) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => "WATCH",
            ("GET", false) => "LIST",
            ("GET", true) => "GET",
            ("POST", _) => "POST",
            ("PUT", _) => "PUT",
            ("PATCH", _) if is_apply(headers) => "APPLY",
            ("PATCH", _) => "PATCH",
            ("DELETE", false) => "DELETECOLLECTION",
            ("DELETE", true) => "DELETE",
            _ => "OTHER",
        };
        let scope = match (o.name, o.namespace) {
            (Some(_), _) => "resource",
            (None, Some(_)) => "namespace",
            (None, None) => "cluster",
        };
        RequestLabels {
            verb,
            group: o.resource.group,
            version: o.resource.version,
            resource: o.resource.plural,
            subresource,
            scope,
        }
    }

    /// Count one answered request, and time it unless it is long-running
    /// (watches and connections last as long as the client wants).
    pub fn record(&self, code: u16, took: Duration) {
        metrics::counter!("apiserver_request_total",
            "verb" => self.verb, "group" => self.group, "version" => self.version,
            "resource" => self.resource, "subresource" => self.subresource,
            "scope" => self.scope, "component" => "apiserver", "code" => code.to_string())
        .increment(1);
        if !matches!(self.verb, "WATCH" | "CONNECT") {
            metrics::histogram!("apiserver_request_duration_seconds",
                "verb" => self.verb, "group" => self.group, "version" => self.version,
                "resource" => self.resource, "subresource" => self.subresource,
                "scope" => self.scope, "component" => "apiserver")
            .record(took.as_secs_f64());
        }
    }
}

fn is_apply(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/apply-patch"))
}

/// Help text and units of the API server's series.
pub fn describe() {
    describe_counter!(
        "apiserver_request_total",
        Unit::Count,
        "Counter of apiserver requests broken out for each verb, group, version, resource, subresource, scope, component, and HTTP response code."
    );
    describe_histogram!(
        "apiserver_request_duration_seconds",
        Unit::Seconds,
        "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component (watches and connections excluded)."
    );
    describe_gauge!(
        "apiserver_current_inflight_requests",
        Unit::Count,
        "Requests being served by this master."
    );
    describe_gauge!(
        "apiserver_registered_watchers",
        Unit::Count,
        "Watch streams open on this master."
    );
    describe_counter!(
        "apiserver_watch_events_total",
        Unit::Count,
        "Events sent to watch streams, per resource."
    );
    describe_histogram!(
        "apiserver_watch_event_lag_seconds",
        Unit::Seconds,
        "Time from an object's change being applied to its event being sent to a watcher."
    );
    describe_counter!(
        "skiff_pod_evictions_total",
        Unit::Count,
        "Pod evictions asked through pods/eviction, by result (evicted, refused)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: &str, path: &str, query: &str, content_type: &str) -> RequestLabels {
        let target = super::super::path::parse(path).expect("a served path");
        let q: Query = serde_urlencoded::from_str(query).unwrap_or_default();
        let mut headers = HeaderMap::new();
        if !content_type.is_empty() {
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                content_type.parse().expect("a header value"),
            );
        }
        RequestLabels::of(&method.parse().expect("a method"), &headers, &target, &q)
    }

    #[test]
    fn verbs_and_scopes_are_kube_apiservers() {
        let l = labels("GET", "/api/v1/namespaces/default/pods", "", "");
        assert_eq!((l.verb, l.scope, l.resource), ("LIST", "namespace", "pods"));
        let l = labels("GET", "/api/v1/pods", "watch=true", "");
        assert_eq!((l.verb, l.scope), ("WATCH", "cluster"));
        let l = labels("GET", "/api/v1/namespaces/default/pods/p", "", "");
        assert_eq!((l.verb, l.scope), ("GET", "resource"));
        let l = labels(
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/d",
            "",
            "application/apply-patch+yaml",
        );
        assert_eq!((l.verb, l.group, l.version), ("APPLY", "apps", "v1"));
        let l = labels("PUT", "/api/v1/namespaces/default/pods/p/status", "", "");
        assert_eq!((l.verb, l.subresource), ("PUT", "status"));
        let l = labels("POST", "/api/v1/namespaces/default/pods/p/exec", "", "");
        assert_eq!((l.verb, l.subresource), ("CONNECT", "exec"));
        let l = labels("GET", "/version", "", "");
        assert_eq!((l.verb, l.resource, l.scope), ("GET", "", ""));
        let l = labels("DELETE", "/api/v1/namespaces/default/pods", "", "");
        assert_eq!(l.verb, "DELETECOLLECTION");
    }
}
