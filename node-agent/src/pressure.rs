//! Whether the node is short of memory, disk or process ids, read from the
//! node itself and judged against the kubelet's hard eviction thresholds
//! (`--eviction-hard`, in the kubelet's own syntax and with its defaults:
//! `memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,
//! imagefs.available<15%`). The result is the node's MemoryPressure,
//! DiskPressure and PIDPressure conditions.
//!
//! Readings: memory from `/proc/meminfo` (MemAvailable); the node's
//! filesystem from statvfs of the agent's data directory (pod volumes,
//! logs), the image filesystem from statvfs of the engine's root
//! directory; process ids from `kernel.pid_max` and the processes that
//! exist (`/proc/loadavg`).

use std::path::{Path, PathBuf};

use proto::quantity::Quantity;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum ThresholdError {
    #[error("eviction threshold {0:?}: want signal<quantity or signal<percent%")]
    Syntax(String),
    #[error("eviction threshold {0:?}: unknown signal (memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available)")]
    Signal(String),
    #[error("eviction threshold {0:?}: bad quantity")]
    Quantity(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    ImagefsInodesFree,
    PidAvailable,
}

impl Signal {
    fn parse(s: &str) -> Option<Signal> {
        Some(match s {
            "memory.available" => Signal::MemoryAvailable,
            "nodefs.available" => Signal::NodefsAvailable,
            "nodefs.inodesFree" => Signal::NodefsInodesFree,
            "imagefs.available" => Signal::ImagefsAvailable,
            "imagefs.inodesFree" => Signal::ImagefsInodesFree,
            "pid.available" => Signal::PidAvailable,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::ImagefsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// An amount (bytes, inodes or pids).
    Absolute(u64),
    /// A share of the capacity, 0..=1.
    Share(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub below: Limit,
}

/// The kubelet's default hard eviction thresholds.
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%";

/// Parse `--eviction-hard` (comma-separated `signal<limit`).
pub fn parse_thresholds(s: &str) -> Result<Vec<Threshold>, ThresholdError> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (signal, limit) = t
                .split_once('<')
                .ok_or_else(|| ThresholdError::Syntax(t.to_string()))?;
            let signal = Signal::parse(signal.trim())
                .ok_or_else(|| ThresholdError::Signal(t.to_string()))?;
            let limit = limit.trim();
            let below = match limit.strip_suffix('%') {
                Some(p) => {
                    let p: f64 = p
                        .parse()
                        .map_err(|_| ThresholdError::Quantity(t.to_string()))?;
                    if !(0.0..=100.0).contains(&p) {
                        return Err(ThresholdError::Quantity(t.to_string()));
                    }
                    Limit::Share(p / 100.0)
                }
                None => {
                    let q = Quantity::parse(limit)
                        .map_err(|_| ThresholdError::Quantity(t.to_string()))?;
                    if q.is_negative() {
                        return Err(ThresholdError::Quantity(t.to_string()));
                    }
                    Limit::Absolute(u64::try_from(q.value()).unwrap_or(u64::MAX))
                }
            };
            Ok(Threshold { signal, below })
        })
        .collect()
}

/// One signal's reading: what is available of what capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub available: u64,
    pub capacity: u64,
}

impl Reading {
    fn below(&self, limit: Limit) -> bool {
        match limit {
            Limit::Absolute(n) => self.available < n,
            Limit::Share(s) => (self.available as f64) < s * self.capacity as f64,
        }
    }
}

/// The node's readings, each None where it could not be read.
#[derive(Debug, Default, Clone)]
pub struct Readings {
    pub memory: Option<Reading>,
    pub nodefs: Option<Reading>,
    pub nodefs_inodes: Option<Reading>,
    pub imagefs: Option<Reading>,
    pub imagefs_inodes: Option<Reading>,
    pub pids: Option<Reading>,
}

impl Readings {
    fn get(&self, s: Signal) -> Option<Reading> {
        match s {
            Signal::MemoryAvailable => self.memory,
            Signal::NodefsAvailable => self.nodefs,
            Signal::NodefsInodesFree => self.nodefs_inodes,
            Signal::ImagefsAvailable => self.imagefs,
            Signal::ImagefsInodesFree => self.imagefs_inodes,
            Signal::PidAvailable => self.pids,
        }
    }
}

/// A threshold crossed, with the reading that crossed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossed {
    pub threshold: Threshold,
    pub reading: Reading,
}

/// The thresholds crossed now.
pub fn crossed(thresholds: &[Threshold], r: &Readings) -> Vec<Crossed> {
    thresholds
        .iter()
        .filter_map(|t| {
            let reading = r.get(t.signal)?;
            reading.below(t.below).then(|| Crossed {
                threshold: t.clone(),
                reading,
            })
        })
        .collect()
}

/// Which node condition a signal's pressure shows in.
pub fn condition_of(s: Signal) -> &'static str {
    match s {
        Signal::MemoryAvailable => "MemoryPressure",
        Signal::PidAvailable => "PIDPressure",
        _ => "DiskPressure",
    }
}

/// Where the node's readings come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The agent's data directory (the node filesystem).
    pub nodefs: PathBuf,
    /// The engine's root directory (the image filesystem), when known and
    /// reachable from here.
    pub imagefs: Option<PathBuf>,
}

fn meminfo_available(text: &str) -> Option<Reading> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some(Reading {
        available: field("MemAvailable:")?,
        capacity: field("MemTotal:")?,
    })
}

fn filesystem(path: &Path) -> (Option<Reading>, Option<Reading>) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let block = s.fragment_size();
            let bytes = Reading {
                available: s.blocks_available() * block,
                capacity: s.blocks() * block,
            };
            let inodes = (s.files() > 0).then(|| Reading {
                available: s.files_available(),
                capacity: s.files(),
            });
            (Some(bytes), inodes)
        }
        Err(_) => (None, None),
    }
}

/// Process ids: `pid_max` less the tasks that exist (the fourth field of
/// /proc/loadavg is running/total).
fn pids(loadavg: &str, pid_max: &str) -> Option<Reading> {
    let total: u64 = loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()?;
    let max: u64 = pid_max.trim().parse().ok()?;
    Some(Reading {
        available: max.saturating_sub(total),
        capacity: max,
    })
}

/// Read the node now (blocking file reads and statvfs: call off the
/// async threads).
pub fn read(sources: &Sources) -> Readings {
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_available(&t));
    let (nodefs, nodefs_inodes) = filesystem(&sources.nodefs);
    let (imagefs, imagefs_inodes) = match &sources.imagefs {
        Some(p) => filesystem(p),
        None => (nodefs, nodefs_inodes),
    };
    let pids = match (
        std::fs::read_to_string("/proc/loadavg"),
        std::fs::read_to_string("/proc/sys/kernel/pid_max"),
    ) {
        (Ok(l), Ok(m)) => pids(&l, &m),
        _ => None,
    };
    Readings {
        memory,
        nodefs,
        nodefs_inodes,
        imagefs,
        imagefs_inodes,
        pids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_defaults_parse() {
        let t = parse_thresholds(DEFAULT_EVICTION_HARD).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(
            t[0],
            Threshold {
                signal: Signal::MemoryAvailable,
                below: Limit::Absolute(100 << 20)
            }
        );
        assert_eq!(t[1].below, Limit::Share(0.10));
        assert_eq!(parse_thresholds("").unwrap(), vec![]);
    }

    #[test]
    fn bad_thresholds_are_refused_with_their_text() {
        assert!(matches!(
            parse_thresholds("memory.available>1Gi"),
            Err(ThresholdError::Syntax(_))
        ));
        assert!(matches!(
            parse_thresholds("cpu.available<1"),
            Err(ThresholdError::Signal(_))
        ));
        assert!(matches!(
            parse_thresholds("nodefs.available<140%"),
            Err(ThresholdError::Quantity(_))
        ));
        assert!(matches!(
            parse_thresholds("memory.available<lots"),
            Err(ThresholdError::Quantity(_))
        ));
    }

    #[test]
    fn thresholds_are_crossed_by_amount_or_share() {
        let t = parse_thresholds("memory.available<1Gi,nodefs.available<10%").unwrap();
        let mut r = Readings {
            memory: Some(Reading {
                available: 2 << 30,
                capacity: 8 << 30,
            }),
            nodefs: Some(Reading {
                available: 50,
                capacity: 100,
            }),
            ..Default::default()
        };
        assert!(crossed(&t, &r).is_empty());
        r.memory = Some(Reading {
            available: 512 << 20,
            capacity: 8 << 30,
        });
        r.nodefs = Some(Reading {
            available: 9,
            capacity: 100,
        });
        let c: Vec<&str> = crossed(&t, &r)
            .iter()
            .map(|c| condition_of(c.threshold.signal))
            .collect();
        assert_eq!(c, ["MemoryPressure", "DiskPressure"]);
    }

    #[test]
    fn readings_come_from_the_proc_files() {
        let m = meminfo_available(
            "MemTotal:       16384 kB\nMemFree: 1 kB\nMemAvailable:    4096 kB\n",
        )
        .unwrap();
        assert_eq!((m.available, m.capacity), (4096 * 1024, 16384 * 1024));
        let p = pids("0.10 0.20 0.30 2/731 12345\n", "4194304\n").unwrap();
        assert_eq!((p.available, p.capacity), (4194304 - 731, 4194304));
        // And this node's own readings are there.
        let r = read(&Sources {
            nodefs: std::env::temp_dir(),
            imagefs: None,
        });
        assert!(r
            .memory
            .is_some_and(|m| m.capacity > 0 && m.available <= m.capacity));
        assert!(r.nodefs.is_some_and(|d| d.capacity > 0));
        assert!(r.pids.is_some_and(|p| p.available > 0));
    }
}
