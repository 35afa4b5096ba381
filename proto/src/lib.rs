//! Wire definitions shared by the masters and their clients.
//!
//! - [`raft`]: master-to-master RPCs (Raft messages and request forwarding).
//! - [`etcd`]: the subset of etcd's v3 gRPC API that Skiff serves, with
//!   etcd's package names and field numbers so that etcd clients work.
//! - [`agent`]: the node agent's protocol with the masters (over QUIC),
//!   [`agent::frame`], how its messages are framed on a stream, and
//!   [`agent::close`], why a master closes a connection, and
//!   [`agent::client`], the QUIC client side that joiners (node agents and
//!   joining masters) and agents share.
//! - [`quantity`]: Kubernetes resource quantities as they are written on
//!   the wire, parsed exactly (both masters and agents read them).

pub mod agent {
    tonic::include_proto!("skiff.agent");
    pub mod client;
    pub mod close;
    pub mod frame;
}

pub mod quantity;

pub mod raft {
    tonic::include_proto!("skiff.raft");
}

pub mod etcd {
    /// `etcdserverpb`: KV, Watch, Lease, Cluster and Maintenance services.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// `mvccpb`: KeyValue and Event.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub use etcdserverpb::*;

    /// The `range_end` that makes a range cover every key starting with
    /// `prefix` (etcd's `--prefix`): the prefix with its last byte below 0xff
    /// incremented, or `[0]` (all keys) if there is none.
    pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return end;
            }
        }
        vec![0]
    }
}
