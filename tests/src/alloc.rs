//! A global allocator that counts the bytes live and the peak, for the
//! report's memory per node. It allocates with mimalloc (faster than the
//! system allocator on the simulator's many small objects) and counts the
//! bytes asked for, not the allocator's own overhead. Install it in a binary with
//! `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc as System;
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// mimalloc, counting.
pub struct CountingAlloc;

// SAFETY: every call is forwarded to mimalloc unchanged; only counters are added.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            added(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is the allocator's.
        unsafe { System.dealloc(ptr, layout) };
        removed(layout.size());
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the allocator's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            added(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is the allocator's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            removed(layout.size());
            added(new_size);
        }
        p
    }
}

// Plain loads and stores, not read-modify-writes: the simulator runs on one
// thread, where they count exactly and cost no locked instruction. Another
// thread allocating at the same moment could make a count drift.
fn added(size: usize) {
    let live = LIVE.load(Ordering::Relaxed) + size;
    LIVE.store(live, Ordering::Relaxed);
    if live > PEAK.load(Ordering::Relaxed) {
        PEAK.store(live, Ordering::Relaxed);
    }
}

fn removed(size: usize) {
    LIVE.store(
        LIVE.load(Ordering::Relaxed).saturating_sub(size),
        Ordering::Relaxed,
    );
}

/// Bytes allocated and not freed (0 unless `CountingAlloc` is installed).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes live at once since the start or the last [`reset_peak`].
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts measuring the peak from the bytes live now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}
