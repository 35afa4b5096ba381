//! Reading a frame sets aside memory for the bytes that arrive, not for
//! the length the peer claims: a peer that claims 60 MiB and sends ten
//! bytes must not make the reader allocate 60 MiB.
//!
//! The only way to see what a read allocates is to watch the allocator,
//! so this test binary (this file alone) runs on one that records the
//! largest allocation. That takes `unsafe`, as every `GlobalAlloc` does;
//! it only passes each call on to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use proto::agent::frame::{self, FrameError};
use proto::agent::AgentRequest;
use tokio::io::AsyncWriteExt;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Watching;

// SAFETY: every call goes to `System` unchanged; only sizes are recorded.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

#[test]
fn a_claimed_length_is_not_allocated_before_its_bytes_arrive() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let claimed: usize = 60 << 20;
        assert!(claimed <= frame::MAX_FRAME, "within the reader's limit");
        let (mut peer, mut reader) = tokio::io::duplex(1 << 16);
        peer.write_all(&(claimed as u32).to_be_bytes())
            .await
            .unwrap();
        peer.write_all(&[0u8; 10]).await.unwrap();
        drop(peer);
        LARGEST.store(0, Ordering::Relaxed);
        let err = frame::read::<AgentRequest, _>(&mut reader, frame::MAX_FRAME)
            .await
            .unwrap_err();
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            matches!(&err, FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err}"
        );
        assert!(
            largest <= 1 << 20,
            "reading 10 bytes of a claimed {claimed} allocated {largest} bytes at once"
        );
    });
}
