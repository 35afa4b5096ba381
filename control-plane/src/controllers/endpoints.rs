//! Endpoints and EndpointSlices: for each Service with a selector, the
//! addresses of the pods it selects, ready ones apart from not-ready ones.
//! Both objects are written only when their content changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ownership::{controller_ref, is_ready};
use super::runtime::{key_of, split_key, Action, Change, WorkQueue};
use super::{Ctx, Result};

const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "endpointslice-controller.k8s.io";

fn selects(svc: &Service, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    !sel.is_empty() && labels.is_some_and(|l| sel.iter().all(|(k, v)| l.get(k) == Some(v)))
}

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("endpoints");
    let q = queue.clone();
    ctx.services
        .on_change(move |c: &Change<'_, Service>| q.add(key_of(&c.object().metadata)));
    let (q, services) = (queue.clone(), ctx.services.clone());
    ctx.pods.on_change(move |c: &Change<'_, Pod>| {
        let (old, new) = match c {
            Change::Applied { old, new } => (*old, Some(*new)),
            Change::Deleted(o) => (Some(*o), None),
        };
        let ns = c.object().metadata.namespace.as_deref().unwrap_or("");
        for svc in services.list_in(ns) {
            let hit =
                |p: Option<&Pod>| p.is_some_and(|p| selects(&svc, p.metadata.labels.as_ref()));
            if hit(old) || hit(new) {
                q.add(key_of(&svc.metadata));
            }
        }
    });
    queue
}

/// The pod port a service port targets (a number, or a container port's name).
fn target_port(pod: &Pod, port: &k8s_openapi::api::core::v1::ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port),
    }
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let (ns, name) = split_key(&key);
    let ns = ns.unwrap_or("default");
    let Some(svc) = ctx.services.get(&key) else {
        // The Endpoints go with their Service (slices by owner reference).
        if ctx.endpoints.get(&key).is_some() {
            ctx.client
                .delete::<Endpoints>(Some(ns), name, None, None)
                .await?;
        }
        return Ok(Action::Done);
    };
    let has_selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    if !has_selector {
        return Ok(Action::Done);
    }
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut pods: Vec<Arc<Pod>> = ctx
        .pods
        .list_in(ns)
        .into_iter()
        .filter(|p| selects(&svc, p.metadata.labels.as_ref()))
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .is_some_and(|ip| !ip.is_empty())
        })
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    // Endpoints: one subset per distinct port mapping (usually one).
    let mut subsets: BTreeMap<Vec<(Option<String>, i32, String)>, EndpointSubset> = BTreeMap::new();
    for pod in &pods {
        let mapped: Vec<(Option<String>, i32, String)> = ports
            .iter()
            .filter_map(|sp| {
                target_port(pod, sp).map(|p| {
                    (
                        sp.name.clone(),
                        p,
                        sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
            })
            .collect();
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let address = EndpointAddress {
            ip,
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_ref(pod)),
            hostname: None,
        };
        let subset = subsets
            .entry(mapped.clone())
            .or_insert_with(|| EndpointSubset {
                ports: Some(
                    mapped
                        .iter()
                        .map(|(n, p, proto)| EndpointPort {
                            name: n.clone(),
                            port: *p,
                            protocol: Some(proto.clone()),
                            app_protocol: None,
                        })
                        .collect(),
                ),
                ..Default::default()
            });
        let list = if is_ready(pod) {
            subset.addresses.get_or_insert_with(Vec::new)
        } else {
            subset.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(address);
    }
    let subsets: Vec<EndpointSubset> = subsets.into_values().collect();
    let labels = svc.metadata.labels.clone();
    let want = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: labels.clone(),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    match ctx.endpoints.get(&key) {
        None => {
            ctx.client.create(&want).await?;
        }
        Some(have) if have.subsets != want.subsets => {
            let mut next = (*have).clone();
            next.subsets = want.subsets.clone();
            ctx.client.replace(&next).await?;
        }
        Some(_) => {}
    }

    // One EndpointSlice per Service, named for it.
    let slice_ports: Vec<SlicePort> = ports
        .iter()
        .map(|sp| SlicePort {
            name: sp.name.clone(),
            port: pods
                .first()
                .and_then(|p| target_port(p, sp))
                .or(Some(sp.port)),
            protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: None,
        })
        .collect();
    let endpoints: Vec<Endpoint> = pods
        .iter()
        .map(|pod| Endpoint {
            addresses: vec![pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default()],
            conditions: Some(EndpointConditions {
                ready: Some(is_ready(pod)),
                serving: Some(is_ready(pod)),
                terminating: Some(pod.metadata.deletion_timestamp.is_some()),
            }),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            // A pod naming this Service as its subdomain is known by its
            // hostname in DNS (<hostname>.<service>.<ns>.svc).
            hostname: pod
                .spec
                .as_ref()
                .filter(|s| s.subdomain.as_deref() == Some(name))
                .and_then(|s| s.hostname.clone()),
            target_ref: Some(pod_ref(pod)),
            ..Default::default()
        })
        .collect();
    let mut slice_labels = labels.unwrap_or_default();
    slice_labels.insert(SERVICE_NAME.into(), name.to_string());
    slice_labels.insert(MANAGED_BY.into(), MANAGER.into());
    let slice_key = format!("{ns}/{name}");
    match ctx.endpoint_slices.get(&slice_key) {
        None => {
            let slice = EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(ns.to_string()),
                    labels: Some(slice_labels),
                    owner_references: Some(vec![controller_ref(&*svc)]),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints,
                ports: Some(slice_ports),
            };
            ctx.client.create(&slice).await?;
        }
        Some(have) if have.endpoints != endpoints || have.ports.as_ref() != Some(&slice_ports) => {
            let mut next = (*have).clone();
            next.endpoints = endpoints;
            next.ports = Some(slice_ports);
            ctx.client.replace(&next).await?;
        }
        Some(_) => {}
    }
    Ok(Action::Done)
}
