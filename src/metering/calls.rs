//! Calls in flight, so that shutdown can end them and wait for them to settle:
//! once the grace period is over, [`CallTracker::stop`] tells every call to
//! stop (a stream is cut and charged for what was generated), and
//! [`CallTracker::wait_idle`] waits until each [`CallMeter`](super::call::CallMeter)
//! has settled and queued its record, so none is lost as the process exits.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub struct CallTracker {
    live: AtomicUsize,
    idle: Notify,
    stop: CancellationToken,
    /// Tells this tracker's per-thread tokens from another tracker's (tests
    /// run several in one process).
    id: u64,
}

impl Default for CallTracker {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        CallTracker {
            live: AtomicUsize::new(0),
            idle: Notify::new(),
            stop: CancellationToken::new(),
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

thread_local! {
    /// The calling thread's child of the stop token, and whose it is.
    static LOCAL_STOP: RefCell<Option<(u64, CancellationToken)>> = const { RefCell::new(None) };
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

    /// Resolves once [`stop`](Self::stop) was called. Each call and each
    /// read of a stream waits on this: it waits on a child token of the
    /// calling thread, so that registering and dropping the wait takes a
    /// lock no other serving thread touches.
    pub async fn stopped(&self) {
        self.local_token().cancelled_owned().await
    }

    /// [`stopped`](Self::stopped) as a future that does not borrow the tracker.
    pub fn stopped_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.local_token().cancelled_owned()
    }

    fn local_token(&self) -> CancellationToken {
        LOCAL_STOP.with(|l| {
            let mut l = l.borrow_mut();
            match &*l {
                Some((id, t)) if *id == self.id => t.clone(),
                _ => {
                    let t = self.stop.child_token();
                    *l = Some((self.id, t.clone()));
                    t
                }
            }
        })
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

#[cfg(test)]
mod tests {
    use super::CallTracker;
    use std::time::Duration;

    #[tokio::test]
    async fn stop_reaches_waiters_on_every_thread_and_only_its_own() {
        let a = std::sync::Arc::new(CallTracker::default());
        let b = CallTracker::default();
        let a2 = a.clone();
        let other = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    tokio::time::timeout(Duration::from_secs(5), a2.stopped()).await
                })
        });
        let here = tokio::spawn({
            let a = a.clone();
            async move { tokio::time::timeout(Duration::from_secs(5), a.stopped()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.stop();
        assert!(here.await.unwrap().is_ok(), "a waiter on this thread");
        assert!(other.join().unwrap().is_ok(), "a waiter on another thread");
        // Another tracker on the same thread has its own token, not stopped.
        let b_wait = tokio::time::timeout(Duration::from_millis(50), b.stopped()).await;
        assert!(b_wait.is_err(), "another tracker's waiters are not stopped");
        // Waiting after the stop resolves at once.
        tokio::time::timeout(Duration::from_millis(50), a.stopped())
            .await
            .unwrap();
    }
}
