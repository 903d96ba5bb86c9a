//! The usage writer: one background thread that writes usage records in
//! batched transactions, off the request path. A record is written as soon as
//! the thread is free, after lingering 20 ms for more, so it is durable within
//! a few tens of milliseconds of its call ending. It also trims the raw
//! log to `usage_retention_days` once an hour.

use crate::db::{self, usage::UsageRecord, Pool};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

enum Msg {
    Record(Box<UsageRecord>),
    Flush(std::sync::mpsc::SyncSender<()>),
}

#[derive(Clone)]
pub struct UsageWriter {
    tx: mpsc::Sender<Msg>,
}

const MAX_BATCH: usize = 2000;
/// How long the writer waits for more records before writing a batch; well
/// inside the 100 ms in which a finished call's record must be durable.
const LINGER: Duration = Duration::from_millis(20);

impl UsageWriter {
    /// Starts the writer thread.
    pub fn spawn(pool: Pool, retention_days: u64) -> UsageWriter {
        let (tx, rx) = mpsc::channel::<Msg>();
        let spawned = std::thread::Builder::new()
            .name("usage-writer".into())
            .spawn(move || run(pool, rx, retention_days));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the usage writer");
        }
        UsageWriter { tx }
    }

    /// Queues a record; never blocks.
    pub fn send(&self, r: UsageRecord) {
        if self.tx.send(Msg::Record(Box::new(r))).is_err() {
            tracing::error!("usage writer is gone; a usage record was lost");
        }
    }

    /// Waits until everything queued so far is written (shutdown, tests).
    pub async fn flush(&self) {
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_err() {
            return;
        }
        let _ =
            tokio::task::spawn_blocking(move || ack_rx.recv_timeout(Duration::from_secs(30))).await;
    }
}

fn run(pool: Pool, rx: mpsc::Receiver<Msg>, retention_days: u64) {
    let mut last_trim: Option<Instant> = None;
    loop {
        if last_trim.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            trim(&pool, retention_days);
            last_trim = Some(Instant::now());
        }
        let first = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Linger briefly after the first record so that, under load, one
        // transaction (one WAL append) carries many records; a flush request
        // ends the wait at once.
        let deadline = Instant::now() + LINGER;
        let mut batch = Vec::new();
        let mut acks = Vec::new();
        let mut m = first;
        loop {
            match m {
                Msg::Record(r) => batch.push(*r),
                Msg::Flush(a) => acks.push(a),
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            let wait = if acks.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let next = if wait.is_zero() {
                rx.try_recv().ok()
            } else {
                rx.recv_timeout(wait).ok()
            };
            match next {
                Some(n) => m = n,
                None => break,
            }
        }
        if !batch.is_empty() {
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
