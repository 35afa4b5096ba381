//! `/debug/flags/v`, as kube-apiserver serves it: GET answers the log
//! filter the master runs with, PUT replaces it (the body is a tracing
//! filter directive, "debug" or "info,raft_store=debug"). Only those RBAC
//! lets `get` or `put` the path (cluster-admin) may read or change it: the
//! log can be made to show what other users send.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::status::{ApiError, ApiResult};

pub fn serve(method: &Method, body: &[u8]) -> ApiResult<Response> {
    let text = |s: String| {
        (
            StatusCode::OK,
            [("content-type", "text/plain; charset=utf-8")],
            s,
        )
            .into_response()
    };
    if method == Method::GET {
        return Ok(text(format!("{}\n", crate::logging::current())));
    }
    if method != Method::PUT {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    let directive = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the log filter must be UTF-8 text"))?
        .trim();
    crate::logging::set(directive).map_err(|e| ApiError::bad_request(e.to_string()))?;
    tracing::info!(filter = directive, "log filter changed");
    Ok(text(format!("log filter set to {directive:?}\n")))
}
