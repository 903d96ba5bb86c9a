//! Calls in flight, so that shutdown can end them and wait for them to settle:
//! once the grace period is over, [`CallTracker::stop`] tells every call to
//! stop (a stream is cut and charged for what was generated), and
//! [`CallTracker::wait_idle`] waits until each [`CallMeter`](super::call::CallMeter)
//! has settled and queued its record, so none is lost as the process exits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct CallTracker {
    live: AtomicUsize,
    idle: Notify,
    stop: CancellationToken,
}

impl CallTracker {
    pub(crate) fn enter(&self) {
        self.live.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn leave(&self) {
        if self.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Calls not yet settled.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Tells every call in flight to end now.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Resolves once [`stop`](Self::stop) was called.
    pub async fn stopped(&self) {
        self.stop.cancelled().await
    }

    /// Waits up to `limit` for every call to settle; `true` if they all did.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.idle.notified();
            if self.live() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.live() == 0;
            }
        }
    }
}
