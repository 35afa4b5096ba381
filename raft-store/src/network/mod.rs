//! Master-to-master transport over tonic gRPC.
//!
//! - [`client`]: openraft's `RaftNetwork` (append, vote, snapshot chunks) and
//!   request forwarding to the leader.
//! - [`server`]: the `RaftPeer` service that receives them.
//! - [`forward`]: what a follower can hand to the leader.
//! - [`tls`]: mutual TLS for the peer port (and the etcd API beside it).

pub mod client;
pub mod forward;
pub mod server;
pub mod tls;
