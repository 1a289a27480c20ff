//! The global allocator: the system allocator, with a per-thread cache in front of it for the
//! block sizes that every connection takes and gives back (hyper's 8 KiB read and write
//! buffers, the connection's task, its shared state, the request's header map).
//!
//! glibc keeps only 7 freed blocks of a size per thread; beyond that, and for every block
//! above 1 KiB, it goes to its shared bins: a free merges the block with its neighbours and a
//! malloc sorts its unsorted list and consolidates its fast bins first. Under 64 concurrent
//! short connections that was 6-8% of fulcrum's time. Here a freed block of 129 B to 16 KiB
//! waits in a per-thread stack for the next request of exactly its size and alignment: last
//! freed, first reused, so it comes back warm in the cache. Smaller blocks stay with glibc,
//! whose fast bins are cheap.
//!
//! A general-purpose allocator (mimalloc) saves the same time but keeps more memory per idle
//! connection (26.6 vs 18 KiB measured). This cache keeps at most `BUDGET` bytes per thread,
//! and nothing on threads that did not turn it on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Blocks from this size on are cached. Smaller ones are glibc's fast bins, cheap even when
/// its per-thread cache is full.
const MIN: usize = 129;
/// And up to this size: larger blocks are rare (bulk bodies) and would pin memory.
const MAX: usize = 16 * 1024;
/// Distinct block layouts cached per thread: a short connection frees about a dozen.
const SLOTS: usize = 16;
/// Blocks kept per layout: enough for a burst of short connections ending together.
const DEPTH: usize = 128;
/// Bytes kept per thread, all layouts together: what the cache may hold back from the system.
const BUDGET: usize = 4 << 20;

/// See the module comment.
pub struct Allocator;

struct Slot {
    size: usize,
    align: usize,
    len: usize,
    blocks: [*mut u8; DEPTH],
}

struct Cache {
    on: bool,
    /// Bytes in all stacks together, at most `BUDGET`.
    bytes: usize,
    slots: [Slot; SLOTS],
}

const EMPTY_SLOT: Slot = Slot {
    size: 0,
    align: 0,
    len: 0,
    blocks: [ptr::null_mut(); DEPTH],
};

thread_local! {
    // Const-initialised and without a destructor: using it never allocates, and it is
    // usable until the thread is gone.
    static CACHE: UnsafeCell<Cache> = const {
        UnsafeCell::new(Cache { on: false, bytes: 0, slots: [EMPTY_SLOT; SLOTS] })
    };
}

/// Turns the cache on for the calling thread. It must be turned off (`disable`) before the
/// thread ends, or the blocks it holds are lost: the runtime's thread start and stop hooks.
pub fn enable() {
    let _ = CACHE.try_with(|c| {
        // SAFETY: the cache is only touched by its own thread, never re-entered (the system
        // allocator does not call back into Rust).
        unsafe { (*c.get()).on = true };
    });
}

/// Turns the cache off for the calling thread and gives its blocks back to the system.
pub fn disable() {
    let _ = CACHE.try_with(|c| {
        // SAFETY: as in `enable`.
        let cache = unsafe { &mut *c.get() };
        cache.on = false;
        for slot in &mut cache.slots {
            for &block in slot.blocks.iter().take(slot.len) {
                if let Ok(layout) = Layout::from_size_align(slot.size, slot.align) {
                    // SAFETY: every cached block came from `System` with this layout.
                    unsafe { System.dealloc(block, layout) };
                }
            }
            slot.len = 0;
        }
        cache.bytes = 0;
    });
}

fn cacheable(layout: Layout) -> bool {
    (MIN..=MAX).contains(&layout.size())
}

/// A cached block of exactly `layout`, if this thread has one.
fn take(layout: Layout) -> Option<*mut u8> {
    CACHE
        .try_with(|c| {
            // SAFETY: as in `enable`.
            let cache = unsafe { &mut *c.get() };
            if !cache.on {
                return None;
            }
            let slot = cache
                .slots
                .iter_mut()
                .find(|s| s.size == layout.size() && s.align == layout.align())?;
            slot.len = slot.len.checked_sub(1)?;
            cache.bytes -= layout.size();
            slot.blocks.get(slot.len).copied()
        })
        .ok()
        .flatten()
}

/// Keeps `block` for reuse; false when its layout's stack is full or no slot is free.
fn keep(block: *mut u8, layout: Layout) -> bool {
    CACHE
        .try_with(|c| {
            // SAFETY: as in `enable`.
            let cache = unsafe { &mut *c.get() };
            if !cache.on || cache.bytes + layout.size() > BUDGET {
                return false;
            }
            let (size, align) = (layout.size(), layout.align());
            let slot = match cache
                .slots
                .iter()
                .position(|s| s.size == size && s.align == align)
            {
                Some(i) => cache.slots.get_mut(i),
                // A slot whose stack ran empty can serve another layout.
                None => cache.slots.iter_mut().find(|s| s.len == 0),
            };
            let Some(slot) = slot else {
                return false;
            };
            slot.size = size;
            slot.align = align;
            match slot.blocks.get_mut(slot.len) {
                Some(free) => {
                    *free = block;
                    slot.len += 1;
                    cache.bytes += size;
                    true
                }
                None => false,
            }
        })
        .unwrap_or(false)
}

// SAFETY: every block handed out is either fresh from `System` or was freed with exactly the
// same layout and kept unused since, so `System` may free or resize it under that layout.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if cacheable(layout)
            && let Some(block) = take(layout)
        {
            return block;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if cacheable(layout) && keep(block, layout) {
            return;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(block, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees (a cached block is a `System` block
        // of this very layout).
        unsafe { System.realloc(block, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached_bytes() -> usize {
        // SAFETY: as in `enable`.
        CACHE.with(|c| unsafe { (*c.get()).bytes })
    }

    #[test]
    fn the_cache_keeps_no_more_than_its_budget() {
        enable();
        let layouts: Vec<Layout> = [8, 16, 32, 64]
            .iter()
            .map(|&align| Layout::from_size_align(MAX, align).expect("layout"))
            .collect();
        // SAFETY: plain allocate/free pairs with matching layouts.
        unsafe {
            let blocks: Vec<(*mut u8, Layout)> = layouts
                .iter()
                .flat_map(|&l| (0..DEPTH).map(move |_| (Allocator.alloc(l), l)))
                .collect();
            for &(block, layout) in &blocks {
                Allocator.dealloc(block, layout);
            }
        }
        assert_eq!(
            cached_bytes(),
            BUDGET,
            "full up to the budget, and no further"
        );
        disable();
        assert_eq!(cached_bytes(), 0);
    }

    #[test]
    fn a_freed_block_is_handed_out_again_for_the_same_layout_only() {
        enable();
        let layout = Layout::from_size_align(8192, 1).expect("layout");
        let other = Layout::from_size_align(8192, 64).expect("layout");
        // SAFETY: plain allocate/free pairs with matching layouts.
        unsafe {
            let a = Allocator.alloc(layout);
            Allocator.dealloc(a, layout);
            let b = Allocator.alloc(other);
            assert_ne!(a, b, "another alignment must not get the cached block");
            let c = Allocator.alloc(layout);
            assert_eq!(a, c, "the same layout gets the cached block back");
            Allocator.dealloc(b, other);
            Allocator.dealloc(c, layout);
        }
        disable();
    }

    #[test]
    fn small_and_large_blocks_and_disabled_threads_are_not_cached() {
        // SAFETY: plain allocate/free pairs with matching layouts.
        unsafe {
            let layout = Layout::from_size_align(4096, 8).expect("layout");
            assert!(!keep(ptr::dangling_mut(), layout), "off by default");
            enable();
            for size in [16, 128, MAX + 1] {
                let layout = Layout::from_size_align(size, 8).expect("layout");
                assert!(!cacheable(layout), "{size} bytes must go to the system");
            }
            let a = Allocator.alloc(layout);
            Allocator.dealloc(a, layout);
            disable();
            assert!(take(layout).is_none(), "disable empties the cache");
        }
    }
}
