//! `control-plane restore`: a new member's data directory from a snapshot
//! file that `etcdctl snapshot save` wrote, as `etcdutl snapshot restore`.
//! Run it once per member of the new cluster, with the same
//! `--initial-cluster` and `--initial-cluster-token` on each, then start
//! each member with `control-plane run` and those same flags.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use raft_store::backup::{self, RestoreConfig};

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The snapshot file (`etcdctl snapshot save`).
    snapshot: PathBuf,
    /// The data directory to write; it must not exist or be empty.
    #[arg(long)]
    data_dir: PathBuf,
    /// This member's name in --initial-cluster.
    #[arg(long)]
    name: String,
    /// Every member of the new cluster as name=peer-url,...
    #[arg(long)]
    initial_cluster: String,
    /// The new cluster's token (a new one: the cluster id derives from it).
    #[arg(long)]
    initial_cluster_token: String,
}

pub fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let initial_cluster = crate::cli::parse_initial_cluster(&args.initial_cluster)?;
    let config = RestoreConfig {
        name: args.name.clone(),
        initial_cluster,
        cluster_token: args.initial_cluster_token.clone(),
    };
    let started = Instant::now();
    let restored = backup::restore(&args.snapshot, &args.data_dir, &config).with_context(|| {
        format!(
            "restoring {} into {}",
            args.snapshot.display(),
            args.data_dir.display()
        )
    })?;
    let info = &restored.info;
    println!(
        "restored {} at revision {} (compacted at {}; {} records, {} leases) from cluster {:x} \
         into {} in {:.2}s",
        args.snapshot.display(),
        info.revision,
        info.compacted,
        restored.records,
        restored.leases,
        info.cluster_id,
        args.data_dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "new cluster {:x}, member {} {:x}: start it with `control-plane run --name {} \
         --data-dir {} --initial-cluster {} --initial-cluster-token {}`",
        restored.cluster_id,
        args.name,
        restored.member_id,
        args.name,
        args.data_dir.display(),
        args.initial_cluster,
        args.initial_cluster_token
    );
    Ok(())
}
