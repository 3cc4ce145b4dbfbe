//! Periodic expiry for in-memory stores (finished jobs, URL images). Stores also expire entries
//! when they are touched, but a worker that goes quiet after a burst would otherwise keep the
//! burst's images until the next request: the sweep makes memory fall back on its own.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How often the stores are swept. Retention times are minutes; a minute late is fine.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// A store whose entries expire.
pub trait Expiring: Send + Sync + 'static {
    /// Drop every expired entry; returns how many went.
    fn sweep_expired(&self) -> usize;
}

/// Sweep `store` every `every` on the current tokio runtime, for as long as the store lives
/// (the task holds only a weak reference and ends with it). `None` outside a runtime, where
/// expiry on access still applies.
pub fn spawn_periodic_sweep<T: Expiring>(store: &Arc<T>, every: Duration, what: &'static str) -> Option<JoinHandle<()>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let store: Weak<T> = Arc::downgrade(store);
    Some(runtime.spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; nothing has expired yet
        loop {
            ticker.tick().await;
            let Some(store) = store.upgrade() else { return };
            let swept = store.sweep_expired();
            if swept > 0 {
                tracing::debug!(store = what, swept, "expired entries dropped");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Expiring for Counting {
        fn sweep_expired(&self) -> usize {
            self.0.fetch_add(1, Ordering::SeqCst);
            0
        }
    }

    #[tokio::test]
    async fn sweeps_repeatedly_and_stops_when_the_store_is_gone() {
        let store = Arc::new(Counting::default());
        let task = spawn_periodic_sweep(&store, Duration::from_millis(10), "test").expect("inside a runtime");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(store.0.load(Ordering::SeqCst) >= 3, "swept {} times", store.0.load(Ordering::SeqCst));
        drop(store);
        tokio::time::timeout(Duration::from_secs(2), task).await.expect("the sweep task ends with its store").expect("no panic");
    }

    #[test]
    fn outside_a_runtime_nothing_is_spawned() {
        assert!(spawn_periodic_sweep(&Arc::new(Counting::default()), SWEEP_INTERVAL, "test").is_none());
    }
}
