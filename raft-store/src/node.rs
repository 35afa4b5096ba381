//! [`Store`]: one master's handle on the replicated store. It owns the Raft
//! instance, serves the peer RPCs, and offers the operations the etcd API and
//! (later) the Kubernetes API are built on. Writes made on a follower are
//! forwarded to the leader; linearizable reads use the leader's read index.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use proto::raft::raft_peer_server::RaftPeerServer;
use tokio::sync::watch;

use crate::error::{Result, StoreError};
use crate::lease::LeaseTtl;
use crate::log_store::LogStore;
use crate::mvcc::read::View;
use crate::mvcc::write::Writer;
use crate::mvcc::{OpResult, RangeRequest, RangeResponse, TxnRequest};
use crate::network::client::Peers;
use crate::network::forward::{Forwarded, Reply};
use crate::network::server::PeerService;
use crate::proposer::{Proposer, Router};
use crate::read_index::Batcher;
use crate::removal::Removal;
use crate::state_machine::{Shared, StateMachine};
use crate::types::{ApplyError, Command, Member, NodeId, Raft, Response};
use crate::watch::{WatchSpec, Watcher};
use crate::{db, jobs, snapshot};

/// How a master runs its part of the Raft group.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    /// Where the peer RPC server listens.
    pub peer_listen: SocketAddr,
    /// How other masters reach this one, e.g. `http://127.0.0.11:2380`.
    pub peer_url: String,
    /// How clients reach this master (published to `member list`).
    pub client_urls: Vec<String>,
    /// Hashed into member and cluster ids, like etcd's `--initial-cluster-token`.
    pub cluster_token: String,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot (and purge the log) after this many applied entries.
    pub snapshot_entries: u64,
    /// Log entries kept behind the snapshot for followers that lag a little.
    pub keep_entries: u64,
    /// Below this much free space on the data dir the master stops taking
    /// writes and leaves the quorum until space returns (see `jobs::disk_guard`).
    pub min_free_bytes: u64,
    /// Compact history this often, to the revision of one interval before
    /// (see `jobs::auto_compact`); `None` keeps all history.
    pub compaction_interval: Option<Duration>,
    /// Mutual TLS between masters; `None` speaks plaintext (peer URLs must
    /// then be `http://`).
    pub peer_tls: Option<PeerTls>,
}

/// The TLS configurations of the peer port: the server side (which client
/// certificates it accepts is the caller's verifier's business) and the
/// client side this master dials its peers with.
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

impl Config {
    pub fn new(name: &str, data_dir: PathBuf, peer_listen: SocketAddr) -> Self {
        Config {
            name: name.to_string(),
            data_dir,
            peer_listen,
            peer_url: format!("http://{peer_listen}"),
            client_urls: Vec::new(),
            cluster_token: "skiff".into(),
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(900)),
            snapshot_entries: 10_000,
            keep_entries: 1_000,
            min_free_bytes: 64 << 20,
            compaction_interval: None,
            peer_tls: None,
        }
    }

    pub fn member_id(&self) -> NodeId {
        member_id(&self.peer_url, &self.cluster_token)
    }
}

/// A member's id: a hash of its peer URL and the cluster token, never 0.
pub fn member_id(peer_url: &str, token: &str) -> NodeId {
    fnv1a(&[token.as_bytes(), b"/", peer_url.as_bytes()]).max(1)
}

pub fn cluster_id(token: &str) -> u64 {
    fnv1a(&[b"cluster/", token.as_bytes()])
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// One row of `member list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: NodeId,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// What `endpoint status` reports.
#[derive(Debug, Clone)]
pub struct Status {
    pub id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: i64,
    pub db_size: u64,
    pub is_learner: bool,
}

/// As the leader, confirm leadership and return a read index.
async fn confirm_read_index(raft: Raft) -> Result<u64> {
    let (read, _) = raft
        .get_read_log_id()
        .await
        .map_err(|_| StoreError::NoLeader)?;
    // openraft's read index is max(commit index, this term's first entry); a
    // leader restarted with its leadership intact starts from a stale commit
    // index and no new first entry. Every acknowledged write is in the
    // leader's log, so its last index, read after leadership was confirmed,
    // is a read index that cannot miss one.
    let last = raft.metrics().borrow().last_log_index.unwrap_or(0);
    Ok(read.map(|l| l.index).unwrap_or(0).max(last))
}

/// A learner is promoted only once its log has reached this fraction of
/// the leader's (etcd's `readyPercent`).
const LEARNER_READY_FRACTION: f64 = 0.9;

/// How long a membership change waits for one in progress to end.
const CHANGE_IN_PROGRESS_PATIENCE: Duration = Duration::from_secs(3);

/// How long a linearizable read waits for a new leader before failing.
const READ_FAILOVER_PATIENCE: Duration = Duration::from_secs(5);

pub struct Store {
    id: NodeId,
    config: Config,
    raft: Raft,
    shared: Arc<Shared>,
    peers: Peers,
    log: LogStore,
    router: Router,
    proposer: Proposer,
    /// Read indexes for this master's linearizable reads (from the leader).
    reads: Batcher,
    /// Read indexes this master confirms as the leader.
    leader_reads: Batcher,
    /// Set while the data disk is nearly full (`jobs::disk_guard`).
    space_low: AtomicBool,
    /// Whether this member knows it was removed from the cluster.
    removal: Arc<Removal>,
    /// When a leader's append or snapshot last reached this master.
    leader_contact: std::sync::Mutex<std::time::Instant>,
    shutdown: watch::Sender<bool>,
}

impl Store {
    /// Open the data directory, start Raft and the peer RPC server.
    pub async fn start(config: Config) -> Result<Arc<Store>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let db = db::open(&config.data_dir.join("db"))?;
        let snap_dir = snapshot::dir_for(&config.data_dir);
        snapshot::recover(&db, &snap_dir)?;
        let shared = Shared::new(db.clone(), snap_dir)?;
        // Every membership config applied from here on, starting with the
        // stored one (see `removal`).
        let applied_configs = shared.membership.subscribe();
        let log = LogStore::new(db);
        let id = config.member_id();
        let removal = Arc::new(Removal::new(id, &config.name, &config.data_dir));
        if log
            .step_down(id)
            .map_err(|e| StoreError::Raft(e.to_string()))?
        {
            tracing::info!("led before the restart: starting as a follower");
        }
        let sm = StateMachine::new(shared.clone());
        let raft_config = openraft::Config {
            cluster_name: config.cluster_token.clone(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_entries),
            max_in_snapshot_log_to_keep: config.keep_entries,
            max_payload_entries: 1000,
            snapshot_max_chunk_size: 1 << 20,
            install_snapshot_timeout: 5_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let peers = Peers::new(
            config
                .peer_tls
                .as_ref()
                .map(|t| crate::network::tls::Connector::new(t.client.clone())),
            removal.clone(),
        );
        let raft = Raft::new(id, Arc::new(raft_config), peers.clone(), log.clone(), sm)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        removal.attach(raft.clone());
        let (shutdown, _) = watch::channel(false);
        let router = Router {
            id,
            raft: raft.clone(),
            peers: peers.clone(),
            patience: config.election_timeout.1 * 2,
            stepping_down: Default::default(),
        };
        let proposer = Proposer::start(router.clone());
        let leader_reads = {
            let raft = raft.clone();
            Batcher::start(move || confirm_read_index(raft.clone()))
        };
        let store = Arc::new_cyclic(|me: &Weak<Store>| {
            let me = me.clone();
            let reads = Batcher::start(move || {
                let me = me.clone();
                async move {
                    let store = me.upgrade().ok_or(StoreError::Stopped)?;
                    match store.to_leader(Forwarded::ReadIndex).await? {
                        Reply::ReadIndex(i) => Ok(i),
                        other => Err(StoreError::Raft(format!("unexpected reply {other:?}"))),
                    }
                }
            });
            Store {
                id,
                config,
                raft,
                shared,
                peers,
                log,
                router,
                proposer,
                reads,
                leader_reads,
                space_low: AtomicBool::new(false),
                removal,
                leader_contact: std::sync::Mutex::new(std::time::Instant::now()),
                shutdown,
            }
        });
        jobs::disk_guard::check(&store);
        store.serve_peers().await?;
        jobs::spawn_all(&store);
        tokio::spawn(jobs::removal::run(store.clone(), applied_configs));
        tokio::spawn(jobs::removal::ask_when_quiet(store.clone()));
        tracing::info!(id = format_args!("{id:x}"), name = %store.config.name, peer = %store.config.peer_url, "store started");
        Ok(store)
    }

    async fn serve_peers(self: &Arc<Self>) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(self.config.peer_listen).await?;
        let service = RaftPeerServer::new(PeerService::new(self.clone()))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let mut stop = self.shutdown.subscribe();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(service);
        match &self.config.peer_tls {
            Some(tls) => {
                let incoming = crate::network::tls::incoming(listener, tls.server.clone(), "peer");
                tokio::spawn(async move {
                    if let Err(e) = server.serve_with_incoming_shutdown(incoming, stopped).await {
                        tracing::error!("peer server stopped: {e}");
                    }
                });
            }
            None => {
                // Nagle's algorithm would hold small replies back for tens of milliseconds.
                let incoming =
                    tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
                        .map_err(|e| StoreError::Raft(e.to_string()))?;
                tokio::spawn(async move {
                    if let Err(e) = server.serve_with_incoming_shutdown(incoming, stopped).await {
                        tracing::error!("peer server stopped: {e}");
                    }
                });
            }
        }
        Ok(())
    }

    /// Form a new cluster from `members` (safe to call on every initial member).
    pub async fn initialize(&self, members: BTreeMap<NodeId, Member>) -> Result<()> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(StoreError::Raft(e.to_string())),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn cluster_id(&self) -> u64 {
        cluster_id(&self.config.cluster_token)
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Turns true (and stays so) once this member knows it was removed
    /// from the cluster: it applied a membership config without itself
    /// after one with it, a peer answered one of its Raft messages saying
    /// so, or an earlier run recorded it in the data directory. From then
    /// on it neither campaigns nor sends heartbeats and every operation
    /// fails with [`StoreError::Removed`]; the master should stop. See
    /// [`crate::removal`].
    pub fn removed(&self) -> watch::Receiver<bool> {
        self.removal.subscribe()
    }

    pub fn is_removed(&self) -> bool {
        self.removal.is_removed()
    }

    pub(crate) fn router(&self) -> &Router {
        &self.router
    }

    pub(crate) fn peers(&self) -> &Peers {
        &self.peers
    }

    pub(crate) fn removal(&self) -> &Removal {
        &self.removal
    }

    pub(crate) fn heard_from_leader(&self) {
        *self
            .leader_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    }

    /// How long since a leader's append or snapshot last reached this master.
    pub(crate) fn since_leader_contact(&self) -> Duration {
        self.leader_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// The id of the last entry in this master's log (`None` if it has none
    /// or it cannot be read).
    async fn last_log_id(&self) -> Option<crate::types::LogId> {
        use openraft::storage::RaftLogReader;
        let m = self.raft.metrics().borrow().clone();
        let index = m.last_log_index?;
        if let Some(snapshot) = m.snapshot.filter(|s| s.index == index) {
            return Some(snapshot);
        }
        let mut reader = self.log.clone();
        let entries = reader.try_get_log_entries(index..index + 1).await.ok()?;
        entries.first().map(|e| e.log_id)
    }

    /// Ask the other members of this master's latest config whether it was
    /// removed (for a member that hears from no leader and would not learn
    /// it by campaigning: a learner, or a voter left out of elections). A
    /// peer that knows answers so, and the network client marks this store
    /// removed. Only a master that its own latest config names asks: a new
    /// learner that so far holds only a snapshot from before it was added
    /// has nothing to ask about.
    pub(crate) async fn ask_peers_if_removed(&self) {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        if membership.membership().get_node(&self.id).is_none() {
            return;
        }
        let Some(last) = self.last_log_id().await else {
            return;
        };
        let ask = Forwarded::AmIRemoved {
            id: self.id,
            last_log_id: Some(last),
        };
        for (id, node) in membership.nodes().filter(|(id, _)| **id != self.id) {
            let answer = self
                .peers
                .forward_with_timeout(*id, &node.peer_url, &ask, Duration::from_secs(1))
                .await;
            if self.is_removed() {
                return;
            }
            if let Err(e) = answer {
                tracing::debug!("asking {id:x} whether this member was removed: {e}");
            }
        }
    }

    fn ensure_member(&self) -> Result<()> {
        if self.is_removed() {
            Err(StoreError::Removed)
        } else {
            Ok(())
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    pub fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The applied store revision.
    pub fn revision(&self) -> i64 {
        self.shared.revision.load(Ordering::Acquire)
    }

    /// Whether this master is fenced off because its data disk is nearly full.
    pub fn space_low(&self) -> bool {
        self.space_low.load(Ordering::Acquire)
    }

    /// Fence this master off (or let it back in): while fenced it neither
    /// campaigns nor sends heartbeats, so a leader is soon replaced, and the
    /// peer RPCs that would write to its log are refused.
    pub fn set_space_low(&self, low: bool) {
        self.space_low.store(low, Ordering::Release);
        metrics::gauge!("skiff_disk_space_low").set(if low { 1.0 } else { 0.0 });
        // A removed member stays silent whatever its disk does.
        let active = !low && !self.is_removed();
        self.raft.runtime_config().elect(active);
        self.raft.runtime_config().heartbeat(active);
    }

    fn ensure_space(&self) -> Result<()> {
        if self.space_low() {
            Err(StoreError::NoSpace)
        } else {
            Ok(())
        }
    }

    /// Send a request to the leader, unless this master is the leader.
    async fn to_leader(&self, fwd: Forwarded) -> Result<Reply> {
        self.ensure_member()?;
        let (leader, url) = self.router.leader().await?;
        if leader == self.id {
            return self.serve_forwarded(fwd).await;
        }
        self.peers.forward(leader, &url, &fwd).await
    }

    /// Replicate a command and return its result once applied here.
    pub async fn write(&self, cmd: Command) -> Result<Response> {
        self.ensure_member()?;
        self.ensure_space()?;
        let resp = self.proposer.propose(cmd).await?;
        // Read-your-writes on this master: wait until it has applied the revision.
        self.wait_revision(resp.revision).await?;
        Ok(resp)
    }

    async fn wait_revision(&self, revision: i64) -> Result<()> {
        if self.revision() >= revision {
            return Ok(());
        }
        let mut metrics = self.raft.metrics();
        // Long enough for this master to apply a command that deletes a
        // large prefix, which the leader has just done.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.revision() < revision {
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                // The Raft core has stopped: nothing more will be applied.
                Ok(Err(_)) => return Err(StoreError::Raft("raft has stopped".into())),
                Err(_) => {
                    return Err(StoreError::Raft(
                        "timed out waiting for the local apply".into(),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Serve a request as the leader (from a follower, or from this master).
    pub(crate) async fn serve_forwarded(&self, fwd: Forwarded) -> Result<Reply> {
        // A leader whose disk is full takes on no leader duties at all: even
        // the heartbeats that confirm a read index would keep its followers
        // from electing a replacement (found by the chaos harness: no new
        // leader for as long as reads kept coming).
        // Nor does a removed one (whatever openraft still thinks it is).
        // Nor does one handing over its leadership (`crate::handoff`).
        if self.space_low() || self.is_removed() || self.router.is_stepping_down() {
            return Err(StoreError::NoLeader);
        }
        match fwd {
            // Already batched by the follower: one log entry as it is.
            Forwarded::WriteBatch(cmds) => Ok(Reply::WriteBatch(self.router.commit(cmds).await?)),
            Forwarded::ReadIndex => Ok(Reply::ReadIndex(self.leader_reads.read_index().await?)),
            Forwarded::LeaseKeepAlive(id) => {
                // Only the leader's clocks expire leases. A leader cut off
                // from its quorum still thinks it leads until its own
                // election timeout; renewing there would tell the client its
                // lease lives on while the new leader lets it expire. A read
                // index confirmed after the request arrived proves this
                // master still led then (etcd 3.5's `ensureLeadership`).
                self.leader_reads.read_index().await?;
                self.ensure_leader()?;
                Ok(Reply::LeaseKeepAlive(self.shared.leases.renew(id)))
            }
            Forwarded::LeaseTimeToLive(id) => {
                self.ensure_leader()?;
                Ok(self
                    .shared
                    .leases
                    .ttl(id)
                    .map(Reply::from)
                    .unwrap_or(Reply::LeaseTimeToLive(None)))
            }
            Forwarded::AddMember { peer_url, learner } => {
                self.add_member_as_leader(peer_url, learner).await
            }
            Forwarded::RemoveMember(id) => self.remove_member_as_leader(id).await,
            // Answered by the peer service itself (`network::server`).
            Forwarded::AmIRemoved { .. } | Forwarded::Campaign => Err(StoreError::Invalid(
                "a removal check or a campaign is for the peer service".into(),
            )),
            Forwarded::PromoteMember(id) => {
                self.check_promotable(id)?;
                self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                    .await?;
                Ok(Reply::Done)
            }
        }
    }

    fn ensure_leader(&self) -> Result<()> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(StoreError::NoLeader)
        }
    }

    /// Wait until this master has applied everything committed before the call
    /// (the read index), so that a read from local state is linearizable.
    pub async fn read_barrier(&self) -> Result<()> {
        self.ensure_member()?;
        // A read index is safe to ask for again: ride through a failover
        // (the leader just died, or no leader yet) rather than fail the read.
        let deadline = tokio::time::Instant::now() + READ_FAILOVER_PATIENCE;
        let index = loop {
            match self.reads.read_index().await {
                Err(StoreError::Forward { .. } | StoreError::NoLeader)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other?,
            }
        };
        if self.shared.applied_index.load(Ordering::Acquire) >= index {
            return Ok(());
        }
        self.raft
            .wait(Some(Duration::from_secs(5)))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        Ok(())
    }

    /// A consistent view of this master's applied state.
    pub fn view(&self) -> View<'_> {
        View::new(&self.shared.db, &self.shared.index)
    }

    /// Range over the store; returns the response and the revision it was read at.
    pub async fn range(
        &self,
        req: &RangeRequest,
        serializable: bool,
    ) -> Result<(RangeResponse, i64)> {
        self.ensure_member()?;
        if !serializable {
            self.read_barrier().await?;
        }
        let view = self.view();
        let rev = view.revision();
        Ok((view.range(req)?, rev))
    }

    /// Evaluate a transaction with no writes against local state (after a
    /// read barrier unless `serializable`); returns (succeeded, results, revision).
    pub async fn txn_read(
        &self,
        t: &TxnRequest,
        serializable: bool,
    ) -> Result<(bool, Vec<OpResult>, i64)> {
        self.ensure_member()?;
        if !serializable {
            self.read_barrier().await?;
        }
        let view = self.view();
        let rev = view.revision();
        let mut scratch = rocksdb::WriteBatch::default();
        let mut writer = Writer::new(&self.shared.db, &view, &mut scratch, rev);
        match writer.txn(t)? {
            OpResult::Txn { succeeded, results } => Ok((succeeded, results, rev)),
            other => Err(StoreError::Raft(format!("unexpected txn result {other:?}"))),
        }
    }

    pub fn watch(&self, spec: WatchSpec, buffer: usize) -> Watcher {
        crate::watch::spawn(self.shared.clone(), spec, buffer)
    }

    pub async fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>> {
        match self.to_leader(Forwarded::LeaseKeepAlive(id)).await? {
            Reply::LeaseKeepAlive(ttl) => Ok(ttl),
            other => Err(StoreError::Raft(format!("unexpected reply {other:?}"))),
        }
    }

    pub async fn lease_time_to_live(&self, id: i64) -> Result<Option<LeaseTtl>> {
        match self.to_leader(Forwarded::LeaseTimeToLive(id)).await? {
            Reply::LeaseTimeToLive(t) => {
                Ok(t.map(|(granted, remaining)| LeaseTtl { granted, remaining }))
            }
            other => Err(StoreError::Raft(format!("unexpected reply {other:?}"))),
        }
    }

    pub fn lease_ids(&self) -> Vec<i64> {
        self.shared.leases.ids()
    }

    /// Keys attached to a lease, from local applied state.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>> {
        crate::mvcc::read::lease_keys(&self.shared.db, id)
    }

    pub async fn grant_lease(&self, id: i64, ttl: i64) -> Result<(i64, i64)> {
        let id = if id == 0 { new_lease_id() } else { id };
        let resp = self.write(Command::LeaseGrant { id, ttl }).await?;
        match resp.outcome? {
            crate::types::Outcome::LeaseGranted { id, ttl } => Ok((id, ttl)),
            other => Err(StoreError::Raft(format!("unexpected outcome {other:?}"))),
        }
    }

    /// The members in this master's latest membership config. A removed
    /// member's config is the last it saw before its removal; it leaves
    /// itself out.
    pub fn members(&self) -> Vec<MemberInfo> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let attrs = self.shared.member_attrs();
        let removed = self.is_removed();
        membership
            .nodes()
            .filter(|(id, _)| !(removed && **id == self.id))
            .map(|(id, node)| {
                let a = attrs.get(id).cloned().unwrap_or_default();
                MemberInfo {
                    id: *id,
                    name: if a.name.is_empty() {
                        node.name.clone()
                    } else {
                        a.name
                    },
                    peer_urls: vec![node.peer_url.clone()],
                    client_urls: a.client_urls,
                    is_learner: !voters.contains(id),
                }
            })
            .collect()
    }

    /// Add a master (etcd's `member add`): it becomes a learner, then a voter
    /// unless `learner` is asked for. The new master is started afterwards with
    /// `--initial-cluster-state existing`.
    pub async fn add_member(&self, peer_url: String, learner: bool) -> Result<NodeId> {
        match self
            .to_leader(Forwarded::AddMember { peer_url, learner })
            .await?
        {
            Reply::Member(id) => Ok(id),
            other => Err(StoreError::Raft(format!("unexpected reply {other:?}"))),
        }
    }

    pub async fn remove_member(&self, id: NodeId) -> Result<()> {
        self.to_leader(Forwarded::RemoveMember(id))
            .await
            .map(|_| ())
    }

    pub async fn promote_member(&self, id: NodeId) -> Result<()> {
        self.to_leader(Forwarded::PromoteMember(id))
            .await
            .map(|_| ())
    }

    async fn add_member_as_leader(&self, peer_url: String, learner: bool) -> Result<Reply> {
        let id = member_id(&peer_url, &self.config.cluster_token);
        if self
            .members()
            .iter()
            .any(|m| m.id == id || m.peer_urls.contains(&peer_url))
        {
            return Err(StoreError::Invalid("peerURL exists".into()));
        }
        let node = Member {
            name: String::new(),
            peer_url,
        };
        self.raft
            .add_learner(id, node, false)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        if !learner {
            self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                .await?;
        }
        Ok(Reply::Member(id))
    }

    async fn remove_member_as_leader(&self, id: NodeId) -> Result<Reply> {
        let member = self
            .members()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(StoreError::MemberNotFound(id))?;
        if member.is_learner {
            self.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                .await?;
        } else {
            self.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
                .await?;
        }
        Ok(Reply::Done)
    }

    /// etcd's checks before promoting `id` (as the leader): it must be a
    /// learner, and in sync: its matched log index at least 90% of the
    /// leader's (etcd's `isLearnerReady`).
    fn check_promotable(&self, id: NodeId) -> Result<()> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if membership.voter_ids().any(|v| v == id) {
            return Err(StoreError::NotLearner(id));
        }
        if membership.get_node(&id).is_none() {
            return Err(StoreError::MemberNotFound(id));
        }
        let replication = m.replication.as_ref().ok_or(StoreError::NoLeader)?;
        let matched = replication
            .get(&id)
            .and_then(|l| l.as_ref())
            .map(|l| l.index)
            .unwrap_or(0);
        let leader = m.last_log_index.unwrap_or(0);
        if (matched as f64) < (leader as f64) * LEARNER_READY_FRACTION {
            tracing::warn!(
                learner = format_args!("{id:x}"),
                matched,
                leader,
                "refusing to promote a learner that is not in sync with the leader"
            );
            return Err(StoreError::LearnerNotReady {
                id,
                matched,
                leader,
            });
        }
        Ok(())
    }

    /// Change the membership as the leader. A change still in progress (a
    /// leader just elected has not committed its first entry yet, or an
    /// earlier change is in its joint phase) is waited out for a while:
    /// it ends on its own within a few heartbeats.
    async fn change_membership(&self, change: ChangeMembers<NodeId, Member>) -> Result<()> {
        let deadline = tokio::time::Instant::now() + CHANGE_IN_PROGRESS_PATIENCE;
        loop {
            match self.raft.change_membership(change.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    return Err(StoreError::NoLeader)
                }
                Err(other) => return Err(StoreError::Raft(other.to_string())),
            }
        }
    }

    pub fn status(&self) -> Result<Status> {
        let m = self.raft.metrics().borrow().clone();
        let is_learner = !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id);
        Ok(Status {
            id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            commit_index: self
                .log
                .committed_index()
                .max(m.last_applied.map(|l| l.index).unwrap_or(0)),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            revision: self.revision(),
            db_size: db::size_on_disk(&self.shared.db),
            is_learner,
        })
    }

    /// Reject a write with a clear error when it names a lease that does not exist.
    pub fn check_lease(&self, id: i64) -> Result<()> {
        if id != 0 && self.shared.leases.ttl(id).is_none() {
            return Err(ApplyError::LeaseNotFound.into());
        }
        Ok(())
    }

    /// Rewrite RocksDB's files to reclaim space (etcd's defragment).
    pub fn compact_disk(&self) {
        db::compact_all(&self.shared.db);
    }

    /// Stop serving and shut Raft down.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        let log = self.log.clone();
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }
}

fn new_lease_id() -> i64 {
    // Positive, non-zero, random: chosen before proposing so every master applies the same id.
    (rand::random::<u64>() >> 1).max(1) as i64
}
