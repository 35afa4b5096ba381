//! `control-plane`: the Skiff master binary (see the library for the map).

#![deny(unsafe_code)]
#![deny(rust_2018_idioms)]

use clap::Parser;
use control_plane::cli;

/// mimalloc: the store allocates and frees many small buffers per request on
/// every thread, where glibc's allocator spent a measured 7% of the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option: its index in both the v2 and v3
/// `mi_option_t` (libmimalloc-sys names it only for v2).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc hands it
/// back to the OS (mimalloc's default is 1 s; jemalloc's decay is 10 s).
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Keep freed memory for reuse for [`PURGE_DELAY_MS`].
///
/// With mimalloc's 1 s default, a master under a steady write load handed
/// memory back that it wanted again moments later, and each return cost a
/// page fault that zeroed a 2 MiB transparent huge page: about 2% of the
/// machine under `check perf --load=xl`. With 10 s, one master's madvise
/// calls fell from 808 to 94 and its page faults from 23,900 to 11,200 in
/// 10 s of that load. `MIMALLOC_PURGE_DELAY` in the environment still
/// decides, as mimalloc documents.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option, which mimalloc reads afresh each
        // time it purges; no other thread exists yet.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let cli = cli::Cli::parse();
    if let Err(e) = control_plane::logging::init(&cli.log) {
        eprintln!("control-plane: {e}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("control-plane: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-plane: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index names the option it should: mimalloc 3 documents a purge
    /// delay of 1000 ms by default, and setting it reads back. (Run without
    /// `MIMALLOC_PURGE_DELAY` in the environment.)
    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_option_index() {
        // SAFETY: reads and sets one integer option.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
        }
        keep_freed_memory();
        // SAFETY: as above.
        let now = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(now, PURGE_DELAY_MS);
    }
}
