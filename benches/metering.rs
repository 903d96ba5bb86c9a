//! How many metered calls one core settles, and whether the usage writer keeps
//! up: `cargo bench --bench metering`. Prints figures; asserts nothing.
//!
//! - ledger: reserve + settle pairs per second on one thread (the in-memory
//!   part of every call), and with two threads contending on one user;
//! - writer: usage records per second written by `insert_batch` into a real
//!   SQLite file (WAL), in the batch sizes the writer thread forms under load.

use std::time::Instant;
use tollgate::db::{self, usage::UsageRecord};
use tollgate::metering::ledger::{Account, Ledger};

fn ledger_rate(threads: usize, per_thread: usize) -> f64 {
    let ledger = std::sync::Arc::new(Ledger::new("2026-11", &[]));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let l = ledger.clone();
            std::thread::spawn(move || {
                let a = Account {
                    user_id: 1,
                    user_limit: i64::MAX / 4,
                    key_id: Some(t as i64),
                    key_limit: None,
                };
                for _ in 0..per_thread {
                    let (amount, _) = l
                        .reserve::<(), ()>(&a, "2026-11", |avail| Ok((4096.min(avail), ())))
                        .expect("reserve");
                    l.settle(&a, "2026-11", amount, 30);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    (threads * per_thread) as f64 / start.elapsed().as_secs_f64()
}

fn record(i: usize) -> UsageRecord {
    UsageRecord {
        id: 0,
        request_id: format!("req_bench{i:012}"),
        user_id: (i % 50) as i64 + 1,
        username: format!("user{}", i % 50),
        key_id: Some((i % 200) as i64 + 1),
        provider: ["openrouter", "aiml", "requesty"][i % 3].to_owned(),
        model: format!("openrouter/model-{}", i % 20),
        upstream_model: format!("model-{}", i % 20),
        endpoint: "chat/completions".into(),
        prompt_tokens: 120,
        completion_tokens: 80,
        total_tokens: 200,
        cost_micros: 1200,
        credit_micros: 0,
        estimated: false,
        priced: true,
        http_status: 200,
        outcome: "ok".into(),
        latency_ms: 150,
        ttft_ms: Some(40),
        created_at: "2026-11-26T10:00:00Z".to_owned(),
        reservation: None,
        seq: 0,
    }
}

fn writer_rate(total: usize, batch: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = db::open(&dir.path().join("bench.db")).expect("open");
    db::migrate(&pool).expect("migrate");
    let records: Vec<UsageRecord> = (0..total).map(record).collect();
    let mut conn = pool.get().expect("conn");
    let start = Instant::now();
    for chunk in records.chunks(batch) {
        db::usage::insert_batch(&mut conn, chunk).expect("insert");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    println!(
        "ledger reserve+settle, 1 thread:  {:>12.0} calls/s",
        ledger_rate(1, 2_000_000)
    );
    println!(
        "ledger reserve+settle, 2 threads: {:>12.0} calls/s",
        ledger_rate(2, 1_000_000)
    );
    for batch in [1, 50, 500] {
        let total = if batch == 1 { 2_000 } else { 50_000 };
        println!(
            "usage writer, batches of {batch:>3}:   {:>12.0} records/s",
            writer_rate(total, batch)
        );
    }
}
