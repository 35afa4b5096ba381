//! The `kubernetes` Service in `default`, as kube-apiserver keeps it: the
//! first address of the service range on port 443 (`https`), and as its
//! Endpoints and EndpointSlice the address of every running master, from
//! the leases they keep ([`crate::masters::api_endpoint`]), looked at
//! again every few seconds. Pods reach the API through it
//! (KUBERNETES_SERVICE_HOST, `kubernetes.default.svc`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::runtime::{key_of, Action, Change, WorkQueue};
use super::{Ctx, Error, Result};
use crate::masters::api_endpoint;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The Service's cluster IP (the first of the range).
    pub cluster_ip: Ipv4Addr,
    /// The port the API listens on: the target port while no master is
    /// listed.
    pub api_port: u16,
}

const NAME: &str = "kubernetes";
const NAMESPACE: &str = "default";
const KEY: &str = "default/kubernetes";
const PORT_NAME: &str = "https";
/// How often the masters' leases are read again.
const RECHECK: Duration = Duration::from_secs(5);

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("kubernetes_service");
    let q = queue.clone();
    ctx.services.on_change(move |c: &Change<'_, Service>| {
        if key_of(&c.object().metadata) == KEY {
            q.add(KEY);
        }
    });
    let q = queue.clone();
    ctx.endpoints.on_change(move |c: &Change<'_, Endpoints>| {
        if key_of(&c.object().metadata) == KEY {
            q.add(KEY);
        }
    });
    let q = queue.clone();
    ctx.endpoint_slices
        .on_change(move |c: &Change<'_, EndpointSlice>| {
            if key_of(&c.object().metadata) == KEY {
                q.add(KEY);
            }
        });
    queue.add(KEY);
    queue
}

fn meta(labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(NAME.into()),
        namespace: Some(NAMESPACE.into()),
        labels: Some(labels),
        ..Default::default()
    }
}

pub async fn reconcile(ctx: Arc<Ctx>, _key: String) -> Result<Action> {
    let Some(settings) = ctx.settings.kubernetes_service.clone() else {
        return Ok(Action::Done);
    };
    let masters = api_endpoint::list(ctx.client.api().registry())
        .await
        .map_err(|e| Error::Invalid(format!("reading the masters' API addresses: {e}")))?;
    // Masters listen on one port; a lone odd one out is not listed.
    let mut ports: BTreeMap<u16, usize> = BTreeMap::new();
    for a in masters.values() {
        *ports.entry(a.port()).or_default() += 1;
    }
    let port = ports
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(p, _)| *p)
        .unwrap_or(settings.api_port);
    let mut ips: Vec<String> = masters
        .values()
        .filter(|a| a.port() == port)
        .filter_map(|a| match a.ip() {
            IpAddr::V4(ip) => Some(ip.to_string()),
            IpAddr::V6(_) => None,
        })
        .collect();
    ips.sort();
    ips.dedup();
    let port = i32::from(port);

    let service_ports = vec![ServicePort {
        name: Some(PORT_NAME.into()),
        port: 443,
        protocol: Some("TCP".into()),
        target_port: Some(IntOrString::Int(port)),
        ..Default::default()
    }];
    match ctx.services.get(KEY) {
        None => {
            let ip = settings.cluster_ip.to_string();
            let svc = Service {
                metadata: meta(
                    [
                        ("component".to_string(), "apiserver".to_string()),
                        ("provider".to_string(), "kubernetes".to_string()),
                    ]
                    .into(),
                ),
                spec: Some(ServiceSpec {
                    type_: Some("ClusterIP".into()),
                    cluster_ip: Some(ip.clone()),
                    cluster_ips: Some(vec![ip]),
                    ports: Some(service_ports),
                    session_affinity: Some("None".into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match ctx.client.create(&svc).await {
                Ok(_) => tracing::info!("kubernetes Service created"),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Some(have) if have.spec.as_ref().and_then(|s| s.ports.as_ref()) != Some(&service_ports) => {
            let mut next = (*have).clone();
            next.spec.get_or_insert_with(Default::default).ports = Some(service_ports);
            ctx.client.replace(&next).await?;
        }
        Some(_) => {}
    }

    if ips.is_empty() {
        // No master is reachable from pods (or none is listed yet, the
        // store having just changed leader): the endpoints stay as they are.
        return Ok(Action::After(RECHECK));
    }
    let subsets = vec![EndpointSubset {
        addresses: Some(
            ips.iter()
                .map(|ip| EndpointAddress {
                    ip: ip.clone(),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            name: Some(PORT_NAME.into()),
            port,
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
        ..Default::default()
    }];
    match ctx.endpoints.get(KEY) {
        None => {
            let want = Endpoints {
                metadata: meta(BTreeMap::new()),
                subsets: Some(subsets),
            };
            match ctx.client.create(&want).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Some(have) if have.subsets.as_ref() != Some(&subsets) => {
            let mut next = (*have).clone();
            next.subsets = Some(subsets);
            ctx.client.replace(&next).await?;
            tracing::info!(masters = ?ips, "kubernetes endpoints changed");
        }
        Some(_) => {}
    }

    let endpoints: Vec<Endpoint> = ips
        .iter()
        .map(|ip| Endpoint {
            addresses: vec![ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        })
        .collect();
    let slice_ports = vec![SlicePort {
        name: Some(PORT_NAME.into()),
        port: Some(port),
        protocol: Some("TCP".into()),
        app_protocol: None,
    }];
    match ctx.endpoint_slices.get(KEY) {
        None => {
            let slice = EndpointSlice {
                metadata: meta(
                    [("kubernetes.io/service-name".to_string(), NAME.to_string())].into(),
                ),
                address_type: "IPv4".into(),
                endpoints,
                ports: Some(slice_ports),
            };
            match ctx.client.create(&slice).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Some(have) if have.endpoints != endpoints || have.ports.as_ref() != Some(&slice_ports) => {
            let mut next = (*have).clone();
            next.endpoints = endpoints;
            next.ports = Some(slice_ports);
            ctx.client.replace(&next).await?;
        }
        Some(_) => {}
    }
    Ok(Action::After(RECHECK))
}
