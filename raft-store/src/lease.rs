//! Leases: the replicated records live in the `leases` column family; this
//! module keeps their deadlines in memory.
//!
//! Deadlines are soft state, as in etcd: keep-alives renew them on the leader
//! only (nothing goes through Raft), and a new leader restarts every lease's
//! clock with its full TTL, so a lease never expires early because of a
//! failover. Expiry is decided by the leader and committed as a revoke.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The replicated part of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub ttl: i64,
}

/// Shortest TTL granted, in seconds; shorter requests are raised to it, as
/// etcd raises them to about 1.5 election timeouts.
pub const MIN_TTL: i64 = 2;

#[derive(Debug, Clone, Copy)]
struct Deadline {
    ttl: i64,
    expires: Instant,
}

#[derive(Debug, Default)]
pub struct Lessor {
    leases: Mutex<HashMap<i64, Deadline>>,
}

/// What `time-to-live` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTtl {
    pub granted: i64,
    pub remaining: i64,
}

impl Lessor {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Deadline>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn granted(&self, id: i64, ttl: i64) {
        let expires = Instant::now() + Duration::from_secs(ttl.max(0) as u64);
        self.table().insert(id, Deadline { ttl, expires });
    }

    pub fn revoked(&self, id: i64) {
        self.table().remove(&id);
    }

    /// Replace every lease (after a snapshot was installed or at start-up).
    pub fn reset(&self, leases: impl IntoIterator<Item = (i64, LeaseRecord)>) {
        let now = Instant::now();
        let mut table = self.table();
        table.clear();
        for (id, rec) in leases {
            table.insert(
                id,
                Deadline {
                    ttl: rec.ttl,
                    expires: now + Duration::from_secs(rec.ttl.max(0) as u64),
                },
            );
        }
    }

    /// This master just became leader: every lease gets its full TTL again.
    pub fn promote(&self) {
        let now = Instant::now();
        for d in self.table().values_mut() {
            d.expires = now + Duration::from_secs(d.ttl.max(0) as u64);
        }
    }

    /// A keep-alive: restart the lease's clock; returns its TTL.
    pub fn renew(&self, id: i64) -> Option<i64> {
        let mut table = self.table();
        let d = table.get_mut(&id)?;
        d.expires = Instant::now() + Duration::from_secs(d.ttl.max(0) as u64);
        Some(d.ttl)
    }

    pub fn ttl(&self, id: i64) -> Option<LeaseTtl> {
        let d = *self.table().get(&id)?;
        let left = d.expires.saturating_duration_since(Instant::now());
        // Round up so that a fresh lease reports its full TTL, as etcd does.
        let remaining = (left.as_millis() as i64 + 999) / 1000;
        Some(LeaseTtl {
            granted: d.ttl,
            remaining,
        })
    }

    /// Leases whose deadline has passed.
    pub fn expired(&self, now: Instant) -> Vec<i64> {
        self.table()
            .iter()
            .filter(|(_, d)| d.expires <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.table().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_renew_and_promote() {
        let l = Lessor::default();
        l.granted(1, 0);
        l.granted(2, 60);
        assert_eq!(l.expired(Instant::now()), vec![1]);
        assert_eq!(l.renew(2), Some(60));
        assert_eq!(
            l.ttl(2),
            Some(LeaseTtl {
                granted: 60,
                remaining: 60
            })
        );
        assert_eq!(l.renew(3), None);
        l.revoked(1);
        l.promote();
        assert_eq!(l.ids(), vec![2]);
        assert!(l
            .expired(Instant::now() + Duration::from_secs(61))
            .contains(&2));
    }
}
