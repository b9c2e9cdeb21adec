//! A global allocator for processes that serve the Kafka listener: the system allocator,
//! except that very large blocks are mapped with `MAP_NORESERVE`. The `eventstream` binary
//! and the fuzzer install it.
//!
//! Why: decoders of peer-controlled input may reserve capacity from a count read off the
//! wire before decoding a single element (the Kafka-protocol crate's array decoder reserves
//! `count × element size` up front). A reservation the kernel refuses — larger than memory
//! plus swap under the default overcommit heuristic — makes Rust abort the process, so a
//! 64-byte request could stop a node. Mapped with `MAP_NORESERVE`, such a reservation costs
//! address space only: pages are committed when written, and a decoder that fails on the
//! short input a moment later never writes them. Memory actually used still tracks the bytes
//! actually decoded.
//!
//! Invariants:
//! * A block is mapped iff its layout's size is at least [`MAPPED_FROM`] and its alignment at
//!   most the page size; `dealloc` and `realloc` decide the same way from the layout they are
//!   given (the one the block was allocated with), so a block is always freed by the scheme
//!   that made it.
//! * Mapped blocks are page-aligned and zero-filled by the kernel, so `alloc_zeroed` needs no
//!   writes for them.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of at least this many bytes are mapped (64 MiB: far above what the hot paths
/// allocate one at a time; glibc maps blocks this large anyway, only without `NORESERVE`).
const MAPPED_FROM: usize = 64 << 20;
/// The alignment every mapping has.
const PAGE: usize = 4096;

/// See the module documentation.
#[derive(Debug)]
pub struct Allocator;

fn mapped(size: usize, align: usize) -> bool {
    size >= MAPPED_FROM && align <= PAGE
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
    // result is checked against MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every block comes from `System` or from `mmap`, and is returned to the one that
// made it (see the module's invariants); mapped blocks satisfy their layout (page-aligned,
// at least `size` bytes).
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(layout.size(), layout.align()) {
            return map(layout.size());
        }
        // SAFETY: forwarded with the caller's layout (non-zero size, as GlobalAlloc requires).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout.size(), layout.align()) {
            // Anonymous mappings are zero-filled.
            return map(layout.size());
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if mapped(layout.size(), layout.align()) {
            // SAFETY: `ptr` was mapped with exactly `layout.size()` bytes by `map` (or moved
            // there by `mremap` in `realloc`, which keeps the size the layout now says).
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
            return;
        }
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (was, will) = (
            mapped(layout.size(), layout.align()),
            mapped(new_size, layout.align()),
        );
        match (was, will) {
            // SAFETY: `ptr` came from `System` with `layout`; forwarded.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) => {
                // SAFETY: `ptr` is a mapping of `layout.size()` bytes; MREMAP_MAYMOVE lets the
                // kernel move it, keeping its contents; the result is checked.
                let p = unsafe {
                    libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                if p == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    p.cast()
                }
            }
            _ => {
                // Crossing the threshold: a new block of the other kind, the contents copied.
                // SAFETY: `new_size` is non-zero (GlobalAlloc's contract) and the alignment is
                // the old, valid one.
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                // SAFETY: as in `alloc`.
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks are valid for the smaller size and do not overlap
                    // (`new` is a fresh block); the old one is then freed with its layout.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_larger_than_memory_costs_address_space_only() {
        // 256 GiB: refused by the overcommit heuristic on any machine this runs on, were it
        // not mapped with NORESERVE (the system allocator returns null for it).
        let layout = Layout::from_size_align(256 << 30, 8).unwrap();
        // SAFETY: a non-zero layout; the block is freed with the same layout.
        unsafe {
            let p = Allocator.alloc(layout);
            assert!(!p.is_null());
            *p = 7; // one page committed
            Allocator.dealloc(p, layout);
            assert!(
                System.alloc(layout).is_null(),
                "the system allocator would refuse it"
            );
        }
    }

    #[test]
    fn blocks_keep_their_contents_across_the_threshold_both_ways() {
        let small = Layout::from_size_align(4096, 8).unwrap();
        // SAFETY: every block is used within its size and freed with the layout it now has.
        unsafe {
            let p = Allocator.alloc(small);
            for i in 0..4096 {
                *p.add(i) = (i % 251) as u8;
            }
            let check = |p: *mut u8| (0..4096).all(|i| *p.add(i) == (i % 251) as u8);
            let p = Allocator.realloc(p, small, MAPPED_FROM); // small → mapped
            assert!(check(p));
            let big = Layout::from_size_align(MAPPED_FROM, 8).unwrap();
            let p = Allocator.realloc(p, big, 2 * MAPPED_FROM); // mapped → mapped (mremap)
            assert!(check(p));
            let bigger = Layout::from_size_align(2 * MAPPED_FROM, 8).unwrap();
            let p = Allocator.realloc(p, bigger, 4096); // mapped → small
            assert!(check(p));
            Allocator.dealloc(p, small);
            let z = Allocator.alloc_zeroed(big);
            assert!((0..MAPPED_FROM).step_by(4096).all(|i| *z.add(i) == 0));
            Allocator.dealloc(z, big);
        }
    }
}
