//! Wall-clock time per operation class, for the benchmark's breakdown. CPU ops in candle and in
//! these kernels are synchronous, so a timer around each call is exact there.
//!
//! Compiled in only with the `profile` feature, and recording only while [`set_enabled`] is on;
//! without the feature [`timer`] is an empty inline function.

#[cfg(feature = "profile")]
mod imp {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    static ENABLED: AtomicBool = AtomicBool::new(false);
    static TOTALS: Mutex<Option<HashMap<&'static str, (u64, f64)>>> = Mutex::new(None);

    pub struct Timer {
        name: &'static str,
        start: Option<Instant>,
    }

    #[inline]
    pub fn timer(name: &'static str) -> Timer {
        let start = ENABLED.load(Ordering::Relaxed).then(Instant::now);
        Timer { name, start }
    }

    impl Drop for Timer {
        fn drop(&mut self) {
            if let Some(start) = self.start {
                let secs = start.elapsed().as_secs_f64();
                let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
                let entry = totals.get_or_insert_with(HashMap::new).entry(self.name).or_insert((0, 0.0));
                entry.0 += 1;
                entry.1 += secs;
            }
        }
    }

    pub fn set_enabled(on: bool) {
        ENABLED.store(on, Ordering::Relaxed);
    }

    pub fn take_report() -> Vec<(&'static str, u64, f64)> {
        let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<_> = totals.take().unwrap_or_default().into_iter().map(|(k, (n, s))| (k, n, s)).collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        rows
    }

    pub const AVAILABLE: bool = true;
}

#[cfg(not(feature = "profile"))]
mod imp {
    pub struct Timer;

    #[inline(always)]
    pub fn timer(_name: &'static str) -> Timer {
        Timer
    }

    pub fn set_enabled(_on: bool) {}

    pub fn take_report() -> Vec<(&'static str, u64, f64)> {
        Vec::new()
    }

    pub const AVAILABLE: bool = false;
}

/// `let _t = timer("conv3x3");` times until the end of the scope.
pub use imp::timer;
/// Start or stop recording (profile builds only).
pub use imp::set_enabled;
/// (op class, calls, seconds) since the last report, slowest first; clears the totals.
pub use imp::take_report;
/// Whether this build has the timers (`--features profile`).
pub use imp::AVAILABLE;
pub use imp::Timer;
