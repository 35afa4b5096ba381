fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_build::configure().compile_protos(
        &[
            "proto/raft.proto",
            "proto/etcd/rpc.proto",
            "proto/agent/agent.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
