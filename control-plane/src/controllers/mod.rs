//! The controllers the Raft leader runs. Each file holds one controller:
//! its `register` wires informer changes to its work queue, and its one
//! `reconcile` function compares desired with actual state for a key and
//! acts on the difference (level-triggered: a missed change is repaired on
//! the next pass). The shared machinery is in [`runtime`].
//!
//! [`start`] builds the caches and runs every controller (and the scheduler)
//! for one leadership; cancelling its token stops them all. Writes go
//! through [`client::Client`], fenced to that leadership.

pub mod client;
pub mod clusterrole_aggregation;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod garbage_collector;
pub mod hpa;
pub mod job;
pub mod kubernetes_service;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod ownership;
pub mod pods;
pub mod replicaset;
pub mod root_ca;
pub mod runtime;
pub mod serviceaccounts;
pub mod statefulset;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::ClusterRole;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiError, Resource, RESOURCES};
use crate::registry::Fence;
use client::Client;
use events::Recorder;
use runtime::{AnyInformer, Informer, PartialObjectMetadata, WorkQueue};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} ({})", .0.message, .0.reason)]
    Api(ApiError),
    #[error("{0}")]
    Invalid(String),
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(e)
    }
}

impl Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api(e) if e.reason == "NotFound")
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Api(e) if e.reason == "Conflict" || e.reason == "AlreadyExists")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where controllers read the time: the wall clock, or a test's.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub type SharedClock = Arc<dyn Clock>;

/// The wall clock, shifted by a fixed offset (0 in production; tests move
/// a master's controllers forward in time to fire a CronJob).
pub struct SystemClock {
    pub offset: chrono::Duration,
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

/// Tunables of the leader-only loops.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A node whose heartbeat is older than this goes Ready=Unknown.
    pub node_monitor_grace: Duration,
    /// Tolerated for this long by pods with no toleration of their own for
    /// the not-ready and unreachable taints.
    pub default_eviction_timeout: Duration,
    /// How often each HorizontalPodAutoscaler looks at its pods.
    pub hpa_sync_period: Duration,
    /// Added to the wall clock, for tests.
    pub clock_offset: chrono::Duration,
    /// The blocks of the cluster CIDR nodes get as their podCIDR (None:
    /// podCIDRs are not allocated).
    pub node_cidrs: Option<node_ipam::NodeCidrs>,
    /// The cluster CA certificate (PEM) published in every namespace
    /// (None: there is no CA, a cluster without TLS).
    pub root_ca: Option<String>,
    /// The `kubernetes` Service: its cluster IP and the port the API
    /// listens on (None: it is not kept).
    pub kubernetes_service: Option<kubernetes_service::Settings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_monitor_grace: Duration::from_secs(40),
            default_eviction_timeout: Duration::from_secs(300),
            hpa_sync_period: Duration::from_secs(15),
            clock_offset: chrono::Duration::zero(),
            node_cidrs: None,
            root_ca: None,
            kubernetes_service: None,
        }
    }
}

/// What every controller reads and writes through.
pub struct Ctx {
    pub client: Client,
    pub recorder: Recorder,
    pub clock: SharedClock,
    pub settings: Settings,
    pub pods: Informer<Pod>,
    pub nodes: Informer<Node>,
    pub namespaces: Informer<Namespace>,
    pub replicasets: Informer<ReplicaSet>,
    pub deployments: Informer<Deployment>,
    pub leases: Informer<Lease>,
    pub daemonsets: Informer<DaemonSet>,
    pub statefulsets: Informer<StatefulSet>,
    pub jobs: Informer<Job>,
    pub cronjobs: Informer<CronJob>,
    pub hpas: Informer<HorizontalPodAutoscaler>,
    /// The autoscalers' recent recommendations.
    pub recommendations: hpa::Recommendations,
    pub services: Informer<Service>,
    pub endpoints: Informer<Endpoints>,
    pub endpoint_slices: Informer<EndpointSlice>,
    pub cluster_roles: Informer<ClusterRole>,
    /// The metadata of every served kind that has no typed informer above
    /// (ConfigMaps, Secrets, ...): the garbage collector sees every kind.
    pub metadata: Vec<Informer<PartialObjectMetadata>>,
    /// When the leader last heard from each node.
    pub heartbeats: Arc<node_lifecycle::Heartbeats>,
    /// PodCIDRs written but not yet seen in the cache.
    pub node_ipam: node_ipam::Pending,
    /// The garbage collector's indexes (set when it registers).
    pub collector: std::sync::OnceLock<Arc<garbage_collector::Collector>>,
}

impl Ctx {
    fn new(api: Api, settings: Settings) -> Self {
        let client = Client::new(api);
        let clock: SharedClock = Arc::new(SystemClock {
            offset: settings.clock_offset,
        });
        let mut ctx = Ctx {
            recorder: Recorder::new(client.clone(), clock.clone()),
            client,
            clock,
            settings,
            pods: Informer::new(),
            nodes: Informer::new(),
            namespaces: Informer::new(),
            replicasets: Informer::new(),
            deployments: Informer::new(),
            leases: Informer::new(),
            daemonsets: Informer::new(),
            statefulsets: Informer::new(),
            jobs: Informer::new(),
            cronjobs: Informer::new(),
            hpas: Informer::new(),
            recommendations: Default::default(),
            services: Informer::new(),
            endpoints: Informer::new(),
            endpoint_slices: Informer::new(),
            cluster_roles: Informer::new(),
            metadata: Vec::new(),
            heartbeats: Arc::default(),
            node_ipam: Default::default(),
            collector: std::sync::OnceLock::new(),
        };
        let typed: Vec<&Resource> = ctx.informers().iter().map(|i| i.resource()).collect();
        ctx.metadata = RESOURCES
            .iter()
            .filter(|r| r.is_stored() && !typed.contains(r))
            .map(Informer::of)
            .collect();
        ctx
    }

    /// The metadata informer of a served kind with no typed informer.
    pub fn metadata_of(&self, plural: &str) -> Option<&Informer<PartialObjectMetadata>> {
        self.metadata.iter().find(|i| i.resource().plural == plural)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Every informer: the typed ones, then those of metadata only.
    pub fn informers(&self) -> Vec<Box<dyn AnyInformer>> {
        let mut all: Vec<Box<dyn AnyInformer>> = vec![
            Box::new(self.pods.clone()),
            Box::new(self.nodes.clone()),
            Box::new(self.namespaces.clone()),
            Box::new(self.replicasets.clone()),
            Box::new(self.deployments.clone()),
            Box::new(self.leases.clone()),
            Box::new(self.daemonsets.clone()),
            Box::new(self.statefulsets.clone()),
            Box::new(self.jobs.clone()),
            Box::new(self.cronjobs.clone()),
            Box::new(self.hpas.clone()),
            Box::new(self.services.clone()),
            Box::new(self.endpoints.clone()),
            Box::new(self.endpoint_slices.clone()),
            Box::new(self.cluster_roles.clone()),
        ];
        all.extend(
            self.metadata
                .iter()
                .map(|i| Box::new(i.clone()) as Box<dyn AnyInformer>),
        );
        all
    }

    fn spawn_informers(&self, cancel: &CancellationToken) {
        let registry = self.client.api().registry();
        for i in self.informers() {
            i.start(registry.clone(), cancel.clone());
        }
    }

    async fn synced(&self) {
        for i in self.informers() {
            i.synced().await;
        }
    }
}

/// Run every controller and the scheduler for the leadership `fence` until
/// `cancel` fires.
pub async fn start(api: Api, fence: Fence, settings: Settings, cancel: CancellationToken) {
    let ctx = Arc::new(Ctx::new(api.fenced(fence), settings));
    let queues: Vec<(Arc<WorkQueue>, Spawn)> = vec![
        (
            replicaset::register(&ctx),
            spawner(replicaset::reconcile, 4),
        ),
        (
            deployment::register(&ctx),
            spawner(deployment::reconcile, 2),
        ),
        (job::register(&ctx), spawner(job::reconcile, 4)),
        (cronjob::register(&ctx), spawner(cronjob::reconcile, 2)),
        (daemonset::register(&ctx), spawner(daemonset::reconcile, 2)),
        (
            statefulset::register(&ctx),
            spawner(statefulset::reconcile, 2),
        ),
        (
            garbage_collector::register(&ctx),
            spawner(garbage_collector::reconcile, 2),
        ),
        (namespace::register(&ctx), spawner(namespace::reconcile, 1)),
        (
            serviceaccounts::register(&ctx),
            spawner(serviceaccounts::reconcile, 1),
        ),
        (root_ca::register(&ctx), spawner(root_ca::reconcile, 1)),
        (
            kubernetes_service::register(&ctx),
            spawner(kubernetes_service::reconcile, 1),
        ),
        (endpoints::register(&ctx), spawner(endpoints::reconcile, 2)),
        (hpa::register(&ctx), spawner(hpa::reconcile, 1)),
        (
            clusterrole_aggregation::register(&ctx),
            spawner(clusterrole_aggregation::reconcile, 1),
        ),
        (node_ipam::register(&ctx), spawner(node_ipam::reconcile, 1)),
        (
            node_lifecycle::register(&ctx),
            spawner(node_lifecycle::reconcile, 2),
        ),
    ];
    let scheduler = crate::scheduler::register(&ctx);
    ctx.spawn_informers(&cancel);
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = ctx.synced() => {}
    }
    tracing::info!(
        term = fence.term,
        "caches synced: controllers and scheduler running"
    );
    for (queue, spawn) in queues {
        spawn(ctx.clone(), queue, cancel.clone());
    }
    crate::scheduler::spawn(ctx.clone(), scheduler, cancel.clone());
}

type Spawn = Box<dyn FnOnce(Arc<Ctx>, Arc<WorkQueue>, CancellationToken) + Send>;

/// How to start a controller: its reconcile function and worker count.
fn spawner<F, Fut>(reconcile: F, workers: usize) -> Spawn
where
    F: Fn(Arc<Ctx>, String) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<runtime::Action>> + Send + 'static,
{
    Box::new(move |ctx, queue, cancel| {
        runtime::runner::spawn(
            queue,
            workers,
            move |key| reconcile(ctx.clone(), key),
            cancel,
        )
    })
}
