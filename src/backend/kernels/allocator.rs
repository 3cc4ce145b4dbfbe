//! glibc malloc tuning for tensor-sized buffers.
//!
//! glibc serves blocks above its (dynamic) mmap threshold with fresh mappings and trims the top
//! of the heap as soon as 128 KiB-2x that threshold is free, so the same activation shapes,
//! allocated again at every UNet step, fault in fresh zeroed pages each time: about 330k page
//! faults and 1 s of system time per 512² SD 1.5 step on the 2-core host (BENCHMARKS.md).
//! With the mmap threshold at glibc's maximum (32 MiB) and the heap kept instead of trimmed,
//! freed activations are reused from the heap: a whole bench process (model load plus twelve
//! UNet steps at 256² and 512²) took 1.2M page faults in all. In A/B runs on the same (noisy)
//! host, 512² steps took 9.3-9.6 s against 9.9-12.2 s untuned; at 256² there was no clear
//! difference.
//!
//! What it costs: freed heap stays resident, and the VAE decoder's 128-256 MiB activations
//! (above the mmap threshold) cannot reuse it. `kernels::release_free_memory` therefore hands
//! it back, thread arenas included, before each of the decoder's up blocks; with that, a 512²
//! job peaks at 4.52 GiB (5.02 GiB when only `malloc_trim` ran before the decode).
//! Buffers from 32 MiB up are fresh mappings each time; [`advise_huge_pages`] has them faulted in
//! 2 MiB pages.

use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    pub const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    pub const TRIM_THRESHOLD: libc::c_int = 1 << 30;
    pub const TOP_PAD: libc::c_int = 256 << 20;
    /// While trimming eagerly: any free top of 128 KiB or more goes back (glibc's default).
    pub const EAGER_TRIM_THRESHOLD: libc::c_int = 128 << 10;

    /// Sets how much free heap top glibc keeps (`M_TRIM_THRESHOLD`) and adds on each growth
    /// (`M_TOP_PAD`); false if glibc refused either.
    pub fn set_trimming(threshold: libc::c_int, top_pad: libc::c_int) -> bool {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, threshold) == 1 && libc::mallopt(libc::M_TOP_PAD, top_pad) == 1 }
    }
}

/// Whether [`tune_allocator`] took effect (the eager trimming then restores its values).
static TUNED: AtomicBool = AtomicBool::new(false);

/// Applies the tuning on glibc targets (a no-op elsewhere). Call once at start-up, before the
/// weights are loaded.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use glibc::*;
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        let applied = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 } && set_trimming(TRIM_THRESHOLD, TOP_PAD);
        TUNED.store(applied, Ordering::Relaxed);
        if !applied {
            tracing::warn!("glibc refused the malloc tuning; tensor buffers will be re-faulted every step");
        }
    }
}

/// Runs `release` with the tuning's trim threshold and top pad lowered, so that frees during
/// it hand a free arena top back to the OS, then restores them.
pub(super) fn trimming_eagerly(release: impl FnOnce()) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if TUNED.load(Ordering::Relaxed) {
        use glibc::*;
        set_trimming(EAGER_TRIM_THRESHOLD, 0);
        release();
        set_trimming(TRIM_THRESHOLD, TOP_PAD);
        return;
    }
    release();
}

/// Buffers from this size up are asked to be backed by transparent huge pages.
const HUGE_PAGE_BUFFER_BYTES: usize = 32 << 20;

/// Asks the kernel to back a large, not yet touched buffer with 2 MiB transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`; a no-op where THP is off or not built). Buffers above glibc's
/// mmap threshold are fresh mappings, so each 4 KiB page of a 128-256 MiB VAE activation would
/// otherwise take its own page fault on first write.
pub(super) fn advise_huge_pages(buffer: &[f32]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE_PAGE: usize = 2 << 20;
        let bytes = std::mem::size_of_val(buffer);
        if bytes < HUGE_PAGE_BUFFER_BYTES {
            return;
        }
        let start = (buffer.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
        let end = (buffer.as_ptr() as usize + bytes) / HUGE_PAGE * HUGE_PAGE;
        if end > start {
            // SAFETY: the range lies inside `buffer`'s allocation; MADV_HUGEPAGE changes only
            // how later faults are served, never the contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// Frees a block on this thread large enough (above glibc's 64 KiB consolidation threshold)
/// that glibc re-checks this thread's arena top for trimming: the only path that shrinks a
/// thread arena, since `malloc_trim` leaves their tops alone. The compute threads' arenas
/// held ~120 MiB of free top after sampling. Call inside [`trimming_eagerly`].
pub(super) fn trim_thread_arena() {
    drop(std::hint::black_box(Vec::<u8>::with_capacity(256 << 10)));
}

/// Hands the heap's free memory back to the OS (`malloc_trim`); see
/// [`super::release_free_memory`], which frees the kernels' scratch first.
pub(super) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}
