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
//! difference. What it costs: the peak RSS of a 512² job rose from 4.92 to 5.02 GiB (freed
//! heap blocks that the decoder's fresh mappings cannot reuse, though `release_free_memory`
//! returns most of them first), and after a job up to 1 GiB of freed heap stays resident for the
//! next one instead of going back to the OS.

/// Applies the tuning on glibc targets (a no-op elsewhere). Call once at start-up, before the
/// weights are loaded.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        const TOP_PAD: libc::c_int = 256 << 20;
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        let applied = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                && libc::mallopt(libc::M_TOP_PAD, TOP_PAD) == 1
        };
        if !applied {
            tracing::warn!("glibc refused the malloc tuning; tensor buffers will be re-faulted every step");
        }
    }
}

/// Hands the heap's free memory back to the OS (`malloc_trim`). For phase changes whose large
/// buffers are fresh mappings that cannot reuse what the previous phase freed: the VAE decode
/// after sampling (its 128-256 MiB activations are above the mmap threshold), so the peak RSS
/// of a job does not carry the sampler's freed activations.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}
