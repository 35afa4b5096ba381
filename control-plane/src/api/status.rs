//! Errors as Kubernetes `Status` objects, with the codes and reasons
//! clients match on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::resources::Resource;
use crate::registry::RegistryError;

#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// The object changed between the request's read and its write: the
    /// same request may succeed against the object as it is now (a patch or
    /// an unconditional delete is retried on it).
    pub stale: bool,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            stale: false,
        }
    }

    fn with_details(mut self, r: &Resource, name: &str) -> Self {
        let mut d = json!({"name": name, "kind": r.plural});
        if !r.group.is_empty() {
            d["group"] = json!(r.group);
        }
        self.details = Some(d);
        self
    }

    /// `Job.batch`, `Pod`: how Kubernetes names a kind in its messages.
    fn qualified_kind(r: &Resource) -> String {
        if r.group.is_empty() {
            r.kind.to_string()
        } else {
            format!("{}.{}", r.kind, r.group)
        }
    }

    fn what(r: &Resource) -> String {
        if r.group.is_empty() {
            r.plural.to_string()
        } else {
            format!("{}.{}", r.plural, r.group)
        }
    }

    pub fn not_found(r: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{name}\" not found", Self::what(r)),
        )
        .with_details(r, name)
    }

    /// Not found, for what is not a stored resource (`what` as
    /// `<plural>.<group>`).
    pub fn not_found_named(what: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{what} \"{name}\" not found"),
        )
    }

    pub fn already_exists(r: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", Self::what(r)),
        )
        .with_details(r, name)
    }

    pub fn conflict(r: &Resource, name: &str) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                Self::what(r)
            ),
        )
        .with_details(r, name);
        e.stale = true;
        e
    }

    /// A write that names another object than the one stored under its
    /// name (`metadata.uid` differs): the object it meant is gone. Not
    /// stale: retrying cannot make it the same object again.
    pub fn uid_precondition(r: &Resource, name: &str, wanted: &str, stored: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {wanted}, UID in object meta: {stored}",
                Self::what(r)
            ),
        )
        .with_details(r, name)
    }

    /// 422 with one cause per invalid field: (field, message).
    pub fn invalid(r: &Resource, name: &str, causes: &[(String, String)]) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|(f, m)| format!("{f}: Invalid value: {m}"))
            .collect();
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {}",
                Self::qualified_kind(r),
                summary.join(", ")
            ),
        );
        let mut d = json!({
            "name": name,
            "kind": r.kind,
            "causes": causes.iter().map(|(f, m)| json!({
                "reason": "FieldValueInvalid",
                "message": format!("Invalid value: {m}"),
                "field": f,
            })).collect::<Vec<_>>(),
        });
        if !r.group.is_empty() {
            d["group"] = json!(r.group);
        }
        e.details = Some(d);
        e
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// 401 with the reason the credentials do not work.
    pub fn unauthorized_because(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// 403 for a request authorization refused, with the resource and name
    /// in the details as Kubernetes sends them.
    pub fn refused(message: String, on: &crate::auth::On) -> Self {
        let mut e = Self::forbidden(message);
        if let crate::auth::On::Resource(r) = on {
            let mut d = json!({"kind": r.resource});
            if let Some(name) = &r.name {
                d["name"] = json!(name);
            }
            if !r.group.is_empty() {
                d["group"] = json!(r.group);
            }
            e.details = Some(d);
        }
        e
    }

    pub fn not_found_path(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    pub fn unsupported_media(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json (got {content_type:?})"),
        )
    }

    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "the request entity is too large (limit 3 MiB)",
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// A registry failure on object `name` of resource `r`.
    pub fn from_registry(e: RegistryError, r: &Resource, name: &str) -> Self {
        match e {
            RegistryError::NotFound => Self::not_found(r, name),
            RegistryError::AlreadyExists => Self::already_exists(r, name),
            RegistryError::Conflict => Self::conflict(r, name),
            RegistryError::Claimed(claim) => Self::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("{claim} is held by another object; try again"),
            ),
            RegistryError::Gone(rev) => Self::gone(format!(
                "The resourceVersion {rev} is too old: it has been compacted"
            )),
            RegistryError::Fenced => Self::unavailable("leadership changed; try again"),
            RegistryError::Corrupt { .. } | RegistryError::Sealing(_) => {
                tracing::error!("{e}");
                Self::internal(e.to_string())
            }
            RegistryError::Store(raft_store::StoreError::NoSpace) => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InternalError",
                "the master's disk is full",
            ),
            RegistryError::Store(s) => {
                tracing::debug!("store: {s}");
                Self::unavailable(format!("the store could not serve the request: {s}"))
            }
        }
    }

    pub fn body(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.body())).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
