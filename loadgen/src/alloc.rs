//! Each process of the load generator allocates as the program it stands for: the
//! collector child with mimalloc, as `aftercare-collector` does; the simulated agents with
//! the system allocator, as `aftercare-agent` does. One binary plays both, so the choice
//! is made per process, from an environment variable the parent sets for its child, and
//! before the first allocation, so every block is freed by the allocator that made it.
//!
//! (mimalloc for the agents as well would also cost about 2 MiB of resident memory per
//! simulated agent: each has its own quinn endpoint, whose 3 MiB receive buffer mimalloc
//! zeroes where the system allocator maps untouched pages.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU8, Ordering};

/// Set (to any value) in the collector child's environment by its parent.
pub const COLLECTOR_ALLOCATOR: &CStr = c"AFTERCARE_LOADGEN_MIMALLOC";

const UNDECIDED: u8 = 0;
const SYSTEM: u8 = 1;
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
        c = if set { MIMALLOC } else { SYSTEM };
        CHOICE.store(c, Ordering::Relaxed);
    }
    if c == MIMALLOC {
        &mimalloc::MiMalloc
    } else {
        &System
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
