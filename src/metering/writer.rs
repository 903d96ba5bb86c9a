//! The usage writer: one background thread that writes usage records in
//! batched transactions, off the request path. A batch is written 20 ms after
//! the previous one began (or after the first record, when the thread was
//! idle), so a record is durable within a few tens of milliseconds of its call
//! ending, and under load one transaction every 20 ms carries every record. It also trims the raw
//! log to `usage_retention_days` once an hour.
//!
//! Records are queued in a mutex-guarded vector rather than a channel: the
//! thread is woken only when the queue goes from empty to non-empty (or on a
//! flush), so under load one wake-up carries a whole batch instead of costing
//! two futex calls and a context switch per record.

use crate::db::{self, usage::UsageRecord, Pool};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Queue {
    records: Vec<UsageRecord>,
    acks: Vec<std::sync::mpsc::SyncSender<()>>,
    /// The thread waits for a first record and must be woken.
    idle: bool,
    /// Every handle is gone: write what is left and stop.
    closed: bool,
}

struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the queue half-updated
        // (pushes and takes are single operations), so poisoning is ignored.
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the queue when the last `UsageWriter` clone is dropped.
struct Handle(Arc<Shared>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.cv.notify_one();
    }
}

#[derive(Clone)]
pub struct UsageWriter {
    h: Arc<Handle>,
}

const MAX_BATCH: usize = 2000;
/// How long the writer waits for more records before writing a batch; well
/// inside the 100 ms in which a finished call's record must be durable.
const LINGER: Duration = Duration::from_millis(20);
const TRIM_EVERY: Duration = Duration::from_secs(3600);

impl UsageWriter {
    /// Starts the writer thread.
    pub fn spawn(pool: Pool, retention_days: u64) -> UsageWriter {
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
        });
        let for_thread = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("usage-writer".into())
            .spawn(move || run(pool, for_thread, retention_days));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the usage writer");
        }
        UsageWriter {
            h: Arc::new(Handle(shared)),
        }
    }

    /// Queues a record; never blocks on the database.
    pub fn send(&self, r: UsageRecord) {
        let s = &self.h.0;
        let mut q = s.lock();
        q.records.push(r);
        let wake = q.idle || q.records.len() == MAX_BATCH;
        q.idle = false;
        drop(q);
        if wake {
            s.cv.notify_one();
        }
    }

    /// Waits until everything queued so far is written (shutdown, tests).
    pub async fn flush(&self) {
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(1);
        {
            let s = &self.h.0;
            s.lock().acks.push(ack_tx);
            s.cv.notify_one();
        }
        let _ =
            tokio::task::spawn_blocking(move || ack_rx.recv_timeout(Duration::from_secs(30))).await;
    }
}

fn run(pool: Pool, s: Arc<Shared>, retention_days: u64) {
    let mut last_trim: Option<Instant> = None;
    let mut last_write: Option<Instant> = None;
    loop {
        if last_trim.is_none_or(|t| t.elapsed() > TRIM_EVERY) {
            trim(&pool, retention_days);
            last_trim = Some(Instant::now());
        }
        let mut q = s.lock();
        if q.records.is_empty() && q.acks.is_empty() {
            if q.closed {
                return;
            }
            q.idle = true;
            let (g, _) =
                s.cv.wait_timeout_while(q, Duration::from_secs(60), |q| {
                    q.records.is_empty() && q.acks.is_empty() && !q.closed
                })
                .unwrap_or_else(|p| p.into_inner());
            q = g;
            q.idle = false;
            if q.records.is_empty() && q.acks.is_empty() {
                continue; // timed out (trim check) or closed
            }
            // Linger after the first record so that, under load, one
            // transaction (one WAL append) carries many records; a flush, a
            // full batch or shutdown ends the wait at once.
            let (g, _) =
                s.cv.wait_timeout_while(q, LINGER, |q| {
                    q.acks.is_empty() && q.records.len() < MAX_BATCH && !q.closed
                })
                .unwrap_or_else(|p| p.into_inner());
            q = g;
        } else if let Some(rest) = last_write.and_then(|t| LINGER.checked_sub(t.elapsed())) {
            // Records came in while the last batch was being written: wait
            // out the rest of the linger since that write began, so that
            // under load one transaction per LINGER carries them all.
            let (g, _) =
                s.cv.wait_timeout_while(q, rest, |q| {
                    q.acks.is_empty() && q.records.len() < MAX_BATCH && !q.closed
                })
                .unwrap_or_else(|p| p.into_inner());
            q = g;
        }
        let batch = std::mem::take(&mut q.records);
        let acks = std::mem::take(&mut q.acks);
        drop(q);
        if !batch.is_empty() {
            last_write = Some(Instant::now());
            write(&pool, &batch);
        }
        for a in acks {
            let _ = a.send(());
        }
    }
}

fn write(pool: &Pool, batch: &[UsageRecord]) {
    // A locked or busy database is retried; the records are money.
    for attempt in 0..50 {
        let result = pool
            .get()
            .map_err(db::DbError::from)
            .and_then(|mut c| db::usage::insert_batch(&mut c, batch));
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, records = batch.len(), "cannot write usage records; retrying");
                std::thread::sleep(Duration::from_millis(100 * (attempt + 1).min(10)));
            }
        }
    }
    tracing::error!(records = batch.len(), "giving up writing usage records");
}

fn trim(pool: &Pool, retention_days: u64) {
    let before = chrono::Utc::now() - chrono::Duration::days(retention_days as i64);
    match pool
        .get()
        .map_err(db::DbError::from)
        .and_then(|c| db::usage::delete_before(&c, &db::ts(before)))
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            deleted = n,
            "trimmed request records older than {retention_days} days"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot trim old request records"),
    }
}
