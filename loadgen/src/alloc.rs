//! Each process of the load generator picks its allocator before the first allocation,
//! so every block is freed by the allocator that made it. One binary plays both parts, so
//! the choice comes from an environment variable the parent sets for its child.
//!
//! The collector child runs on mimalloc, as `aftercare-collector` does. The simulated
//! agents are a harness sharing the machine with the collector it measures (real agents
//! are on other hosts): they run on mimalloc too (a 10,000-agent restart on SQLite took
//! 8.8 to 10.0 s, 10.3 s before), except for blocks of 1 MiB and more. Those go to the
//! system allocator: each quinn endpoint has a 3 MiB receive buffer, which the system
//! allocator maps as untouched pages and mimalloc zeroes (2 MiB more resident memory per
//! endpoint: 20 GB for 10,000 agents with `--agents-per-socket 1`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU8, Ordering};

/// Set (to any value) in the collector child's environment by its parent.
pub const COLLECTOR_ALLOCATOR: &CStr = c"AFTERCARE_LOADGEN_MIMALLOC";

const UNDECIDED: u8 = 0;
const SPLIT: u8 = 1;
const MIMALLOC: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// This process's allocator.
fn chosen() -> &'static dyn GlobalAlloc {
    let mut c = CHOICE.load(Ordering::Relaxed);
    if c == UNDECIDED {
        // getenv allocates nothing. The first allocation (by the runtime's start or, at
        // the latest, the parsing of the arguments) comes before `main` starts a thread
        // or sets a variable; later calls find the choice made.
        // SAFETY: a NUL-terminated name, read while nothing writes the environment.
        let set = unsafe { !libc::getenv(COLLECTOR_ALLOCATOR.as_ptr()).is_null() };
        c = if set { MIMALLOC } else { SPLIT };
        CHOICE.store(c, Ordering::Relaxed);
    }
    if c == MIMALLOC {
        &mimalloc::MiMalloc
    } else {
        &Split
    }
}

/// Blocks from this size on go to the system allocator in [`Split`].
const BIG: usize = 1 << 20;

/// mimalloc for blocks under [`BIG`], the system allocator for the rest: which one made a
/// block follows from its size, which every call is given.
struct Split;

impl Split {
    fn by_size(size: usize) -> &'static dyn GlobalAlloc {
        if size >= BIG {
            &System
        } else {
            &mimalloc::MiMalloc
        }
    }
}

// SAFETY: each block is made and freed by the allocator its size names; a realloc across
// BIG moves the block from one to the other.
unsafe impl GlobalAlloc for Split {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { Self::by_size(layout.size()).alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { Self::by_size(layout.size()).alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { Self::by_size(layout.size()).dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = (layout.size() >= BIG, new_size >= BIG);
        if old == new {
            return unsafe { Self::by_size(new_size).realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller promises new_size, rounded to the alignment, fits an isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        moved
    }
}

pub struct ByProcess;

// SAFETY: every call goes to one allocator for the life of the process (decided before
// the first allocation), which upholds GlobalAlloc's contract itself.
unsafe impl GlobalAlloc for ByProcess {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { chosen().alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { chosen().alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { chosen().dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { chosen().realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: ByProcess = ByProcess;

#[cfg(test)]
mod tests {
    use super::{BIG, Split};
    use std::alloc::{GlobalAlloc, Layout};

    /// Blocks grown and shrunk across BIG keep their bytes and are freed by the allocator
    /// that made them (a block freed by the other one aborts the process or corrupts a
    /// heap the later allocations would trip on).
    #[test]
    fn blocks_move_between_allocators_intact() {
        let small = Layout::from_size_align(1000, 16).unwrap();
        for _ in 0..50 {
            unsafe {
                let p = Split.alloc(small);
                assert!(!p.is_null());
                for i in 0..1000 {
                    *p.add(i) = (i % 251) as u8;
                }
                let big = Split.realloc(p, small, 3 * BIG);
                assert!(!big.is_null());
                assert!((0..1000).all(|i| *big.add(i) == (i % 251) as u8));
                *big.add(3 * BIG - 1) = 7;
                let big_layout = Layout::from_size_align(3 * BIG, 16).unwrap();
                let bigger = Split.realloc(big, big_layout, 4 * BIG);
                assert_eq!(*bigger.add(3 * BIG - 1), 7);
                let bigger_layout = Layout::from_size_align(4 * BIG, 16).unwrap();
                let back = Split.realloc(bigger, bigger_layout, 500);
                assert!((0..500).all(|i| *back.add(i) == (i % 251) as u8));
                Split.dealloc(back, Layout::from_size_align(500, 16).unwrap());

                let z = Split.alloc_zeroed(big_layout);
                assert!((0..3 * BIG).step_by(4096).all(|i| *z.add(i) == 0));
                Split.dealloc(z, big_layout);
                let z = Split.alloc_zeroed(small);
                assert!((0..1000).all(|i| *z.add(i) == 0));
                Split.dealloc(z, small);
            }
        }
    }
}
