//! How the leader-only loops write: typed calls into the same API code a
//! kubectl request runs (validation, defaults, server-set fields), in
//! process, through a registry fenced to this master's leadership.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::{json, Value};

use super::runtime::Object;
use super::Error;
use crate::api::{Api, ApiQuery, PatchType, Resource};

#[derive(Clone)]
pub struct Client {
    api: Api,
}

/// The served resource of a k8s-openapi type.
pub fn resource_of<K: Object>() -> &'static Resource {
    crate::api::find_resource(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT)
        .unwrap_or_else(|| panic!("{} is not a served resource", K::KIND))
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn decode<K: Object>(v: Value) -> Result<K, Error> {
    serde_json::from_value(v).map_err(|e| Error::Invalid(format!("{}: {e}", K::KIND)))
}

fn encode<K: Object + Serialize>(o: &K) -> Result<Value, Error> {
    let mut v = serde_json::to_value(o).map_err(|e| Error::Invalid(e.to_string()))?;
    v["apiVersion"] = json!(K::API_VERSION);
    v["kind"] = json!(K::KIND);
    Ok(v)
}

impl Client {
    pub fn new(api: Api) -> Self {
        Client { api }
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    pub async fn create<K: Object + Serialize>(&self, o: &K) -> Result<K, Error> {
        let r = resource_of::<K>();
        let ns = o.metadata().namespace.as_deref();
        let out = self.api.create(r, ns, encode(o)?, &ApiQuery::new()).await?;
        decode(out)
    }

    /// Replace `o`, if it is still at its `resourceVersion`.
    pub async fn replace<K: Object + Serialize>(&self, o: &K) -> Result<K, Error> {
        self.put(o, None).await
    }

    /// Replace `o`'s status, if it is still at its `resourceVersion`.
    pub async fn replace_status<K: Object + Serialize>(&self, o: &K) -> Result<K, Error> {
        self.put(o, Some("status")).await
    }

    async fn put<K: Object + Serialize>(&self, o: &K, sub: Option<&str>) -> Result<K, Error> {
        let r = resource_of::<K>();
        let meta = o.metadata();
        let out = self
            .api
            .update(
                r,
                meta.namespace.as_deref(),
                name_of(meta),
                sub,
                encode(o)?,
                &ApiQuery::new(),
            )
            .await?;
        decode(out)
    }

    /// A JSON merge patch (RFC 7386) of the object or of its status.
    pub async fn patch<K: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        sub: Option<&str>,
        patch: &Value,
    ) -> Result<K, Error> {
        decode(
            self.patch_in(resource_of::<K>(), namespace, name, sub, patch)
                .await?,
        )
    }

    /// A JSON merge patch of an object of resource `r`, of any kind.
    pub async fn patch_in(
        &self,
        r: &'static Resource,
        namespace: Option<&str>,
        name: &str,
        sub: Option<&str>,
        patch: &Value,
    ) -> Result<Value, Error> {
        let body = serde_json::to_vec(patch).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(self
            .api
            .patch(
                r,
                namespace,
                name,
                sub,
                PatchType::Merge,
                &body,
                &ApiQuery::new(),
            )
            .await?)
    }

    /// Delete an object, if it is still the one with `uid` (when given).
    /// An object already gone is not an error. Returns the revision of the
    /// write (0 when it was already gone).
    pub async fn delete<K: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        uid: Option<&str>,
        propagation: Option<&str>,
    ) -> Result<i64, Error> {
        self.delete_in(resource_of::<K>(), namespace, name, uid, propagation)
            .await
    }

    /// [`Client::delete`] for an object of resource `r`, of any kind.
    pub async fn delete_in(
        &self,
        r: &'static Resource,
        namespace: Option<&str>,
        name: &str,
        uid: Option<&str>,
        propagation: Option<&str>,
    ) -> Result<i64, Error> {
        let mut opts = json!({});
        if let Some(uid) = uid {
            opts["preconditions"] = json!({"uid": uid});
        }
        if let Some(p) = propagation {
            opts["propagationPolicy"] = json!(p);
        }
        match self
            .api
            .delete(r, namespace, name, &opts, &ApiQuery::new())
            .await
        {
            // A deleted object comes back with the revision of its
            // deletion; one kept for finalizers, with that of its update.
            Ok(v) => Ok(v
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0)),
            Err(e) if e.reason == "NotFound" => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Put a pending pod on a node (the `pods/binding` subresource).
    pub async fn bind(&self, namespace: &str, name: &str, node: &str) -> Result<(), Error> {
        let r = crate::api::find_resource("", "v1", "pods").expect("pods are served");
        let body = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        self.api.bind(r, Some(namespace), name, body).await?;
        Ok(())
    }
}
