//! The usage writer: one background thread that writes usage records in
//! batched transactions, off the request path. A batch is written 20 ms after
//! the previous one began (or after the first record, when the thread was
//! idle), so a record is durable within a few tens of milliseconds of its call
//! ending, and under load one transaction every 20 ms carries every record. It also trims the raw
//! log to `usage_retention_days` once an hour.
//!
//! When the database refuses writes (disk full, unreachable) the batch is
//! retried until it is written, never dropped, while later records wait in
//! memory; [`UsageWriter::failure`] says so (`/health`), and the proxy
//! refuses metered calls once [`UsageWriter::pending`] reaches
//! `max_pending_records` (SPEC §13). When writes succeed again every waiting
//! record is written, in order.
//!
//! Records are queued in mutex-guarded vectors rather than a channel: the
//! thread is woken only when it waits for a first record (or on a flush, or
//! a full batch), so under load one wake-up carries a whole batch instead of
//! costing two futex calls and a context switch per record. Each thread that
//! sends records has its own vector (a shard), so the serving threads never
//! contend for one lock; the writer drains every shard.

use crate::db::{self, usage::UsageRecord, Store};
use std::cell::RefCell;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Queue {
    acks: Vec<std::sync::mpsc::SyncSender<()>>,
    /// Every handle is gone: write what is left and stop.
    closed: bool,
}

type Shard = Mutex<Vec<UsageRecord>>;

struct Shared {
    id: u64,
    q: Mutex<Queue>,
    cv: Condvar,
    shards: Mutex<Vec<Arc<Shard>>>,
    /// The thread waits for a first record and must be woken.
    idle: AtomicBool,
    /// The last write failed; the batch in flight is being retried.
    failing: AtomicBool,
    /// Records of the batch being written (while failing: being retried).
    in_flight: AtomicUsize,
    /// Why the last write failed, while it is failing.
    error: Mutex<Option<String>>,
}

thread_local! {
    /// This thread's shard of each writer it has sent records to.
    static MINE: RefCell<Vec<(u64, Arc<Shard>)>> = const { RefCell::new(Vec::new()) };
}

// A panic while holding one of these locks cannot leave a vector half-updated
// (pushes and takes are single operations), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        lock(&self.q)
    }

    /// Records waiting in every shard.
    fn pending(&self) -> usize {
        lock(&self.shards).iter().map(|s| lock(s).len()).sum()
    }

    /// Takes every shard's records.
    fn drain(&self) -> Vec<UsageRecord> {
        let shards = lock(&self.shards);
        let mut all = Vec::new();
        for s in shards.iter() {
            let mut s = lock(s);
            if all.is_empty() {
                all = std::mem::take(&mut *s);
            } else {
                all.append(&mut s);
            }
        }
        // Each shard is in order; merged, the batch is in the order records
        // were sent (a stable sort of a few sorted runs is cheap).
        if shards.len() > 1 {
            all.sort_by_key(|r| r.seq);
        }
        all
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
    pub fn spawn(store: Store, retention_days: u64) -> UsageWriter {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let shared = Arc::new(Shared {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
            shards: Mutex::default(),
            idle: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            error: Mutex::new(None),
        });
        let for_thread = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("usage-writer".into())
            .spawn(move || run(store, for_thread, retention_days));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the usage writer");
        }
        UsageWriter {
            h: Arc::new(Handle(shared)),
        }
    }

    /// Queues a record; never blocks on the database.
    pub fn send(&self, mut r: UsageRecord) {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        r.seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let s = &self.h.0;
        let len = MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            let shard = match mine.iter().find(|(id, _)| *id == s.id) {
                Some((_, shard)) => shard,
                None => {
                    let shard = Arc::new(Shard::default());
                    lock(&s.shards).push(shard.clone());
                    mine.push((s.id, shard));
                    &mine[mine.len() - 1].1
                }
            };
            let mut v = lock(shard);
            v.push(r);
            v.len()
        });
        // Pairs with the fence in `run`: either this thread sees the writer
        // idle and wakes it, or the writer, after saying it is idle, sees
        // this record in the shard.
        fence(Ordering::SeqCst);
        if len == MAX_BATCH || s.idle.load(Ordering::Relaxed) {
            // Taken so that the wake-up cannot fall between the writer's
            // check of the shards and its wait.
            let _q = s.lock();
            s.cv.notify_one();
        }
    }

    /// Records not written yet: queued, and in the batch being written.
    /// Costs a lock per serving thread: the proxy asks only while
    /// [`UsageWriter::is_failing`].
    pub fn pending(&self) -> usize {
        let s = &self.h.0;
        s.in_flight.load(Ordering::Relaxed) + s.pending()
    }

    /// Whether the last write failed (one relaxed load: asked on every call).
    pub fn is_failing(&self) -> bool {
        self.h.0.failing.load(Ordering::Relaxed)
    }

    /// Why records are waiting, while writes fail and some wait.
    pub fn failure(&self) -> Option<String> {
        if !self.is_failing() {
            return None;
        }
        let n = self.pending();
        (n > 0).then(|| {
            let why = lock(&self.h.0.error).clone().unwrap_or_default();
            format!("{n} usage record(s) wait to be written: {why}")
        })
    }

    /// Waits until everything queued so far is written (shutdown, tests);
    /// returns at once while writes fail (nothing would be written).
    pub async fn flush(&self) {
        if self.is_failing() {
            return;
        }
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

fn run(store: Store, s: Arc<Shared>, retention_days: u64) {
    let mut last_trim: Option<Instant> = None;
    let mut last_write: Option<Instant> = None;
    loop {
        if last_trim.is_none_or(|t| t.elapsed() > TRIM_EVERY) {
            trim(&store, retention_days);
            last_trim = Some(Instant::now());
        }
        let mut q = s.lock();
        if q.acks.is_empty() && !q.closed && {
            s.idle.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            s.pending() == 0
        } {
            let (g, _) =
                s.cv.wait_timeout_while(q, Duration::from_secs(60), |q| {
                    q.acks.is_empty() && !q.closed && s.pending() == 0
                })
                .unwrap_or_else(|p| p.into_inner());
            q = g;
            s.idle.store(false, Ordering::Relaxed);
            if q.acks.is_empty() && !q.closed && s.pending() == 0 {
                continue; // timed out (trim check)
            }
            // Linger after the first record so that, under load, one
            // transaction (one WAL append) carries many records; a flush, a
            // full batch or shutdown ends the wait at once.
            let (g, _) =
                s.cv.wait_timeout_while(q, LINGER, |q| {
                    q.acks.is_empty() && !q.closed && s.pending() < MAX_BATCH
                })
                .unwrap_or_else(|p| p.into_inner());
            q = g;
        } else {
            s.idle.store(false, Ordering::Relaxed);
            if let Some(rest) = last_write.and_then(|t| LINGER.checked_sub(t.elapsed())) {
                // Records came in while the last batch was being written:
                // wait out the rest of the linger since that write began, so
                // that under load one transaction per LINGER carries them all.
                let (g, _) =
                    s.cv.wait_timeout_while(q, rest, |q| {
                        q.acks.is_empty() && !q.closed && s.pending() < MAX_BATCH
                    })
                    .unwrap_or_else(|p| p.into_inner());
                q = g;
            }
        }
        let acks = std::mem::take(&mut q.acks);
        let closed = q.closed;
        drop(q);
        // Taken after the acks: every record sent before a flush is in.
        let batch = s.drain();
        if !batch.is_empty() {
            last_write = Some(Instant::now());
            // A long outage leaves many records: written in order, a
            // transaction of bounded size at a time.
            for chunk in batch.chunks(CHUNK) {
                s.in_flight.store(chunk.len(), Ordering::Relaxed);
                write(&store, &s, chunk);
                s.in_flight.store(0, Ordering::Relaxed);
            }
        }
        for a in acks {
            let _ = a.send(());
        }
        if closed && s.pending() == 0 {
            return;
        }
    }
}

/// Records per transaction when a backlog is written.
const CHUNK: usize = 20_000;

/// Writes `batch`, retrying until it is written: the records are money. Only
/// at shutdown does it give up, after about a minute, so that the process can
/// stop; what is lost then is counted in the log.
fn write(store: &Store, s: &Shared, batch: &[UsageRecord]) {
    let mut attempt: u32 = 0;
    loop {
        match store.write_usage_batch_blocking(batch) {
            Ok(()) => {
                if s.failing.swap(false, Ordering::Relaxed) {
                    *lock(&s.error) = None;
                    tracing::info!(records = batch.len(), "usage records are written again");
                }
                return;
            }
            Err(e) => {
                let first = !s.failing.swap(true, Ordering::Relaxed);
                *lock(&s.error) = Some(e.to_string());
                if first || attempt.is_multiple_of(50) {
                    tracing::warn!(error = %e, attempt, records = batch.len(), waiting = s.pending(), "cannot write usage records; retrying");
                }
                if attempt >= 60 && s.lock().closed {
                    tracing::error!(
                        records = batch.len() + s.pending(),
                        "giving up writing usage records at shutdown: they are lost"
                    );
                    return;
                }
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100 * u64::from(attempt.min(10))));
            }
        }
    }
}

fn trim(store: &Store, retention_days: u64) {
    let before = chrono::Utc::now() - chrono::Duration::days(retention_days as i64);
    match store.trim_usage_blocking(&db::ts(before)) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            deleted = n,
            "trimmed request records older than {retention_days} days"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot trim old request records"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::usage::sample_record as record;

    async fn count(store: &Store) -> usize {
        let all = db::usage::RequestFilter {
            limit: 10_000,
            ..Default::default()
        };
        store.requests_page(all).await.unwrap().len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_from_many_threads_are_all_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db")).unwrap();
        store.migrate().await.unwrap();
        let w = UsageWriter::spawn(store.clone(), 30);
        // Four threads, each with its own shard, sending at once.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..700 {
                        w.send(record(t * 1000 + i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        w.flush().await;
        assert_eq!(count(&store).await, 2800);
        // An idle writer is woken by one record, without a flush, well
        // inside the 100 ms durability bound (5 s here, for a loaded CI).
        tokio::time::sleep(Duration::from_millis(100)).await;
        w.send(record(99_999));
        let start = Instant::now();
        while count(&store).await < 2801 {
            assert!(start.elapsed() < Duration::from_secs(5), "not woken");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Dropping the last handle writes what is left and stops the thread.
        w.send(record(100_000));
        drop(w);
        let start = Instant::now();
        while count(&store).await < 2802 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "not written at close"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
