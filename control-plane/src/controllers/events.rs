//! v1 Events, what `kubectl describe` shows under "Events:". Recording is
//! best effort: an event that cannot be written is dropped, never retried
//! at the expense of the work it describes.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::{Metadata, Resource};

use super::client::Client;

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    clock: super::SharedClock,
}

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// A reference to `o`, as events and bindings carry it.
pub fn reference<K: Resource + Metadata<Ty = ObjectMeta>>(o: &K) -> ObjectReference {
    let m = o.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.to_string()),
        kind: Some(K::KIND.to_string()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

impl Recorder {
    pub fn new(client: Client, clock: super::SharedClock) -> Self {
        Recorder { client, clock }
    }

    /// Record that `component` did `reason` to `object`.
    pub fn record(
        &self,
        component: &'static str,
        object: ObjectReference,
        kind: Kind,
        reason: &str,
        message: String,
    ) {
        let now = self.clock.now();
        let ns = object
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            object.name.as_deref().unwrap_or("object"),
            now.timestamp_nanos_opt().unwrap_or(0)
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns),
                ..Default::default()
            },
            involved_object: object,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(format!("{kind:?}")),
            source: Some(EventSource {
                component: Some(component.to_string()),
                host: None,
            }),
            reporting_component: Some(component.to_string()),
            reporting_instance: Some(component.to_string()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(reason.to_string()),
            count: Some(1),
            ..Default::default()
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.create(&event).await {
                tracing::debug!("event not recorded: {e}");
            }
        });
    }
}
