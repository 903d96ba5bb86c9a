//! Loads users and keys straight through tollgate's store, for
//! bench/accounts.sh: `load_accounts DB USERS KEYS` where DB is a SQLite file
//! or a PostgreSQL URL already set up by one start of the server (its plans
//! exist). Users are `load-N` on the default plan; keys are spread evenly
//! over them, with random key hashes (no key is printed, none is usable by
//! anyone: the bench makes its own through the API). Progress on stderr.

use std::time::Instant;
use tollgate::config::DatabaseConfig;
use tollgate::db::{api_keys::NewKey, users::NewUser, Store};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, users, keys] = &args[..] else {
        eprintln!("usage: load_accounts DB|URL USERS KEYS");
        std::process::exit(2);
    };
    let users: usize = users.parse().expect("USERS is a number");
    let keys: usize = keys.parse().expect("KEYS is a number");
    let cfg = match db.starts_with("postgres") {
        true => DatabaseConfig {
            url: Some(db.clone()),
            ..DatabaseConfig::default()
        },
        false => DatabaseConfig {
            path: db.into(),
            ..DatabaseConfig::default()
        },
    };
    let store = Store::connect(&cfg).expect("open the database");
    store.migrate().await.expect("migrate");
    let now = tollgate::db::ts(chrono::Utc::now());
    let start = Instant::now();
    // A few writers at once: PostgreSQL takes them in parallel, SQLite in turn.
    let tasks = 4;
    let mut joins = Vec::new();
    for t in 0..tasks {
        let (store, now) = (store.clone(), now.clone());
        joins.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in (t..users).step_by(tasks) {
                let u = NewUser {
                    username: format!("load-{i}"),
                    email: Some(format!("load-{i}@example.com")),
                    password_hash: None,
                    role: "user".into(),
                    plan: None,
                };
                made.push(store.create_user(u, now.clone()).await.unwrap().unwrap().id);
                if t == 0 && i % 20_000 == 0 {
                    eprintln!("users: {i}/{users}");
                }
            }
            made
        }));
    }
    let mut ids = Vec::with_capacity(users);
    for j in joins {
        ids.extend(j.await.unwrap());
    }
    eprintln!("{users} users in {:.1} s", start.elapsed().as_secs_f64());
    let start = Instant::now();
    let ids = std::sync::Arc::new(ids);
    let mut joins = Vec::new();
    for t in 0..tasks {
        let (store, now, ids) = (store.clone(), now.clone(), ids.clone());
        joins.push(tokio::spawn(async move {
            for i in (t..keys).step_by(tasks) {
                let hash: [u8; 32] = rand::random();
                let k = NewKey {
                    user_id: ids[i % ids.len()],
                    name: format!("load-{i}"),
                    description: None,
                    key_hash: hex::encode(hash),
                    prefix: format!("tg-{}", &hex::encode(&hash[..3])),
                    expires_at: None,
                    allowed_models: None,
                    monthly_token_limit: None,
                    monthly_usd_limit: None,
                };
                store.create_key(k, now.clone()).await.unwrap();
                if t == 0 && i % 40_000 == 0 {
                    eprintln!("keys: {i}/{keys}");
                }
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    eprintln!("{keys} keys in {:.1} s", start.elapsed().as_secs_f64());
}
