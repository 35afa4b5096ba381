//! The master (control-plane) processes on this machine, as /proc shows
//! them: the benchmarks find the ones serving a cluster by their listen
//! flags, to read their memory or to kill and restart them.

use std::path::PathBuf;

/// One master process, as it was when found (its working directory and
/// stderr stay known after it is killed, to restart it the same way).
pub struct Proc {
    pub pid: u32,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The file its stderr goes to, if it is a file.
    pub stderr: Option<PathBuf>,
}

impl Proc {
    /// The value given to `flag` on the command line.
    pub fn arg(&self, flag: &str) -> Option<&str> {
        self.args
            .windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].as_str())
    }

    /// CPU time used so far (user and system), from /proc/<pid>/stat.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the command name (which may hold spaces): utime and
        // stime are the 12th and 13th, in clock ticks.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // USER_HZ: 100 ticks a second on Linux.
        Some(std::time::Duration::from_millis(ticks * 10))
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// Every running control-plane process.
pub fn all() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first()
                .is_some_and(|a| a.ends_with("control-plane"))
                .then(|| Proc {
                    pid,
                    args,
                    cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).ok(),
                    stderr: std::fs::read_link(format!("/proc/{pid}/fd/2"))
                        .ok()
                        .filter(|p| p.is_absolute() && p.exists()),
                })
        })
        .collect()
}

/// The master whose `flag` is `value` (`--listen-client 127.0.0.11:2379`).
pub fn find(flag: &str, value: &str) -> Option<Proc> {
    all().into_iter().find(|p| p.arg(flag) == Some(value))
}

/// The masters serving the Kubernetes API at `servers` (https://host:port),
/// by their --listen-api address.
pub fn serving_api(servers: &[String]) -> Vec<Proc> {
    all()
        .into_iter()
        .filter(|p| {
            p.arg("--listen-api")
                .is_some_and(|a| servers.iter().any(|s| s.ends_with(a)))
        })
        .collect()
}
