//! The relationships the node authorizer asks about ([`crate::auth::node`]),
//! read from the store: which pods are bound to a node, and what they refer
//! to (the same references that decide what the gateway streams to it).

use futures::future::BoxFuture;
use serde_json::Value;

use super::desired::{references, Kind};
use crate::api::{find_resource, key_of, prefix_of, Resource};
use crate::auth::node::Graph;
use crate::auth::{Error, ResourceRef};
use crate::registry::{Registry, RegistryError};

pub struct StoreGraph {
    registry: Registry,
}

impl StoreGraph {
    pub fn new(registry: Registry) -> Self {
        StoreGraph { registry }
    }
}

fn pods() -> &'static Resource {
    find_resource("", "v1", "pods").expect("pods are served")
}

fn unavailable(e: RegistryError) -> Error {
    Error::Unavailable(format!("reading pods: {e}"))
}

impl StoreGraph {
    async fn pods_on(&self, node: &str) -> Result<Vec<Value>, Error> {
        let page = self
            .registry
            .list(&prefix_of(pods()), None, 0, 0)
            .await
            .map_err(unavailable)?;
        Ok(page
            .items
            .into_iter()
            .map(|s| s.object)
            .filter(|p| p["spec"]["nodeName"].as_str() == Some(node))
            .collect())
    }
}

impl Graph for StoreGraph {
    fn refers<'a>(
        &'a self,
        node: &'a str,
        r: &'a ResourceRef,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let kind = match r.resource.as_str() {
                "secrets" => Kind::Secret,
                "configmaps" => Kind::ConfigMap,
                "serviceaccounts" => Kind::ServiceAccount,
                _ => return Ok(false),
            };
            let (Some(ns), Some(name)) = (&r.namespace, &r.name) else {
                return Ok(false);
            };
            let key = (kind, ns.clone(), name.clone());
            Ok(self
                .pods_on(node)
                .await?
                .iter()
                .any(|p| references(p).contains(&key)))
        })
    }

    fn pod_node<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(async move {
            match self
                .registry
                .get(&key_of(pods(), Some(namespace), name))
                .await
            {
                Ok(s) => Ok(s.object["spec"]["nodeName"].as_str().map(String::from)),
                Err(RegistryError::NotFound) => Ok(None),
                Err(e) => Err(unavailable(e)),
            }
        })
    }
}
