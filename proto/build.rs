fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_build::configure()
        // An object's JSON is shared, not copied, among the sessions it
        // goes to.
        .bytes([".skiff.agent.Object.json"])
        .compile_protos(
            &[
                "proto/raft.proto",
                "proto/etcd/rpc.proto",
                "proto/agent/agent.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
