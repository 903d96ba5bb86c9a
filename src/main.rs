//! The `tollgate` binary: CLI dispatch and startup.

#![forbid(unsafe_code)]

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use std::io::BufRead;
use tollgate::cli::{Cli, Command, CreditsCmd, KeyCmd, PasswordSource, PlanCmd, UserCmd};
use tollgate::config::{Config, Overrides};
use tollgate::db::{self, Store, UserChanges};
use tollgate::service::accounts;
use tollgate::upstream::providers::Providers;

// mimalloc: the request path allocates and frees small buffers on every call,
// often on different threads (workers and the usage writer); glibc's malloc
// spent about a fifth of the instructions of a call there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    // The server logs at info; the other commands print their result and
    // errors only, unless -v or RUST_LOG asks for logs.
    let quiet = !matches!(cli.command, Command::Serve { .. }) && !cli.global.verbose;
    init_tracing(if quiet { "warn" } else { "info" });
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
        // tokio-postgres logs server notices at info and each statement's parameters at debug level:
        // password and key hashes, never to be logged (SPEC §3).
        .add_directive("tokio_postgres=warn".parse().expect("a valid directive"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn load_config(cli: &Cli, listen: Option<String>) -> Result<Config> {
    let ov = Overrides {
        config: cli.global.config.clone(),
        listen,
        db: cli.global.db.clone(),
    };
    Ok(Config::load(&ov)?)
}

fn admin_password_env() -> Option<String> {
    std::env::var("TOLLGATE_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
}

fn print_bootstrap(b: &accounts::Bootstrap) {
    if let Some(pw) = &b.generated_admin_password {
        // The one time tollgate prints a password (SPEC §1).
        eprintln!("\n  First start: created the administrator 'admin' with the password\n\n      {pw}\n\n  It is not shown again; change it after signing in (POST /auth/password).\n");
    } else if b.created_admin {
        eprintln!("First start: created the administrator 'admin' with the password from TOLLGATE_ADMIN_PASSWORD.");
    }
}

fn read_password(src: &PasswordSource) -> Result<String> {
    if let Some(p) = &src.password {
        return Ok(p.clone());
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        bail!("no password on standard input");
    }
    Ok(pw)
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Serve { listen } => serve(load_config(&cli, listen.clone())?),
        Command::CheckConfig => {
            let cfg = load_config(&cli, None)?;
            print!("{}", tollgate::check_config::effective_toml(&cfg));
            // `serve` reads these; the check reads them now, so that a bad
            // pair is found before a restart.
            if let (Some(cert), Some(key)) = (&cfg.server.tls_cert, &cfg.server.tls_key) {
                let n = tollgate::server::tls::check(cert, key).map_err(anyhow::Error::msg)?;
                eprintln!(
                    "HTTPS: {} ({n} certificate(s)) and its key {} load",
                    cert.display(),
                    key.display()
                );
            }
            eprintln!("configuration OK");
            Ok(())
        }
        Command::Backup { path, force } => backup(&load_config(&cli, None)?, path, *force),
        Command::Migrate { from_sqlite } => {
            let cfg = load_config(&cli, None)?;
            let store = Store::connect(&cfg.database)?;
            let n = block_on(store.migrate())??;
            let target = Store::describe(&cfg.database);
            println!("{n} migration(s) applied to {target}");
            if let Some(source) = from_sqlite {
                let Some(pg) = store.postgres() else {
                    bail!(
                        "--from-sqlite copies into PostgreSQL: set [database] url, \
                         TOLLGATE_DATABASE_URL or --db postgres://…"
                    );
                };
                let copied = block_on(pg.copy_from_sqlite(source, |table, done, total| {
                    eprint!("\rcopying {table}: {done}/{total}   ");
                    if done == total {
                        eprintln!();
                    }
                }))??;
                for (table, rows) in copied {
                    println!("{table}: {rows} row(s)");
                }
                println!("copied {} into {target}", source.display());
            }
            Ok(())
        }
        Command::Providers { probe } => providers(&load_config(&cli, None)?, *probe),
        Command::Route { model } => {
            let cfg = load_config(&cli, None)?;
            let p = Providers::from_config(&cfg);
            let named = p.aliases.resolve(model);
            if let Some(n) = &named {
                println!("{model} is an alias of {n} ([routing] aliases)");
            }
            let name = named.as_deref().unwrap_or(model);
            let r = p.route(name);
            println!(
                "{name} -> provider {} ({}), upstream model {}",
                r.provider.id, r.provider.base_url, r.upstream_model
            );
            if let Some(reason) = r.provider.inactive_reason() {
                println!("note: {} is inactive: {reason}", r.provider.id);
            }
            Ok(())
        }
        Command::User(cmd) => block_on(user_cmd(&load_config(&cli, None)?, cmd))?,
        Command::Key(cmd) => block_on(key_cmd(&load_config(&cli, None)?, cmd))?,
        Command::Plan(cmd) => block_on(plan_cmd(&load_config(&cli, None)?, cmd))?,
        Command::Credits(cmd) => block_on(credits_cmd(&load_config(&cli, None)?, cmd))?,
    }
}

/// `tollgate backup PATH`: the SQLite file copied while the server may run.
fn backup(cfg: &Config, path: &std::path::Path, force: bool) -> Result<()> {
    if let Some(url) = &cfg.database.url {
        // Shown without its password: pg_dump reads that from PGPASSWORD or ~/.pgpass.
        let url = tollgate::config::mask_password(url).replacen(":***@", "@", 1);
        bail!(
            "tollgate backup copies a SQLite database, and this configuration uses PostgreSQL. \
             Back it up with pg_dump, e.g.\n\n    pg_dump --format=custom --file='{}' '{url}'\n\n\
             (pg_dump takes the password from PGPASSWORD or ~/.pgpass; restore with pg_restore --dbname=URL)",
            path.display()
        );
    }
    let source = &cfg.database.path;
    let started = std::time::Instant::now();
    let mut shown = false;
    let written = tollgate::db::backup::backup_sqlite(source, path, force, |p| {
        shown = true;
        eprint!(
            "\rbacking up: {}/{} pages ({}%)   ",
            p.copied,
            p.total,
            p.copied * 100 / p.total.max(1)
        );
    })
    .with_context(|| format!("backup of {}", source.display()));
    if shown {
        eprintln!();
    }
    let written = written?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "backed up {} to {}: {} bytes ({:.1} MiB, {} pages) in {secs:.2} s",
        source.display(),
        path.display(),
        written.bytes,
        written.bytes as f64 / (1024.0 * 1024.0),
        written.pages
    );
    Ok(())
}

/// Runs `f` to completion on a runtime of this thread (the CLI's database work).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}

/// A plan's USD limit for a table: the amount, or `-` for none.
fn usd_or_dash(v: Option<tollgate::money::Usd>) -> String {
    v.map_or_else(|| "-".into(), |u| tollgate::money::format_usd(u.0))
}

async fn plan_list(store: &Store) -> Result<()> {
    println!(
        "{:<16} {:>14} {:>11} {:>8} {:>10} {:<5}  allowed models",
        "name", "monthly_tokens", "monthly_usd", "rpm", "usd/month", "payg"
    );
    for p in store.list_plans().await? {
        println!(
            "{:<16} {:>14} {:>11} {:>8} {:>10.2} {:<5}  {}",
            p.name,
            p.monthly_tokens,
            usd_or_dash(p.monthly_usd),
            p.requests_per_minute,
            p.price_usd_month,
            if p.pay_as_you_go { "yes" } else { "no" },
            p.allowed_models.join(", ")
        );
    }
    Ok(())
}

/// `plan add | set | delete`, with the admin API's checks; the running server
/// picks the change up from the database.
async fn plan_cmd(cfg: &Config, cmd: &PlanCmd) -> Result<()> {
    use tollgate::service::plans;
    let store = open_db(cfg).await?;
    let extra = |x: &tollgate::cli::PlanExtra| (x.price_usd_month, x.allowed_models.clone());
    let usd = |x: &tollgate::cli::PlanExtra| match (x.monthly_usd, x.no_monthly_usd) {
        (Some(m), _) => Some(Some(tollgate::money::Usd(m))),
        (None, true) => Some(None),
        (None, false) => None,
    };
    match cmd {
        PlanCmd::List => plan_list(&store).await?,
        PlanCmd::Add {
            name,
            monthly_tokens,
            rpm,
            extra: x,
        } => {
            let (price_usd_month, allowed_models) = extra(x);
            let new = plans::NewPlan {
                name: name.clone(),
                monthly_tokens: *monthly_tokens,
                monthly_usd: usd(x).flatten(),
                requests_per_minute: *rpm,
                price_usd_month,
                allowed_models,
                pay_as_you_go: x.pay_as_you_go,
            };
            let p = plans::create(&store, new, db::ts(chrono::Utc::now()))
                .await
                .map_err(flag_error)?;
            println!("created plan {}", describe_plan(&p));
        }
        PlanCmd::Set {
            name,
            monthly_tokens,
            rpm,
            extra: x,
        } => {
            let (price_usd_month, allowed_models) = extra(x);
            let changes = plans::PlanChanges {
                monthly_tokens: *monthly_tokens,
                monthly_usd: usd(x),
                requests_per_minute: *rpm,
                price_usd_month,
                allowed_models,
                pay_as_you_go: x.pay_as_you_go,
            };
            if changes.is_empty() {
                bail!(
                    "nothing to change: give --monthly-tokens, --monthly-usd (or --no-monthly-usd), --rpm, \
                     --price-usd-month, --allowed-models or --pay-as-you-go"
                );
            }
            let p = plans::update(&store, name, changes)
                .await
                .map_err(flag_error)?;
            println!("changed plan {}", describe_plan(&p));
        }
        PlanCmd::Delete { name } => {
            plans::delete(&store, name).await.map_err(flag_error)?;
            println!("deleted plan {name}");
        }
    }
    Ok(())
}

/// The admin API's error, naming the flag where the API names a field.
fn flag_error(e: tollgate::error::ApiError) -> anyhow::Error {
    match e.param.as_deref() {
        Some("requests_per_minute") => anyhow!("--rpm: {}", e.message),
        Some(p) if p != "name" => anyhow!("--{}: {}", p.replace('_', "-"), e.message),
        _ => anyhow!(e.message),
    }
}

fn describe_plan(p: &tollgate::db::plans::Plan) -> String {
    let usd = match p.monthly_usd {
        Some(u) => format!("up to {} USD/month", tollgate::money::format_usd(u.0)),
        None => "no USD limit".into(),
    };
    format!(
        "{}: {} tokens/month, {usd}, {} requests/minute, {:.2} USD/month, models {}{}",
        p.name,
        p.monthly_tokens,
        p.requests_per_minute,
        p.price_usd_month,
        p.allowed_models.join(", "),
        if p.pay_as_you_go {
            ", pay-as-you-go from credit"
        } else {
            ""
        }
    )
}

async fn open_db(cfg: &Config) -> Result<Store> {
    let (store, report) = tollgate::open_database(cfg, admin_password_env()).await?;
    print_bootstrap(&report);
    Ok(store)
}

fn api<T>(r: Result<T, tollgate::error::ApiError>) -> Result<T> {
    r.map_err(|e| anyhow!(e.message))
}

async fn user_cmd(cfg: &Config, cmd: &UserCmd) -> Result<()> {
    let store = open_db(cfg).await?;
    let now = db::ts(chrono::Utc::now());
    match cmd {
        UserCmd::Add {
            name,
            password,
            admin,
            plan,
        } => {
            let hash = api(accounts::hash_password(&read_password(password)?))?;
            let u = api(accounts::create_user(
                &store,
                &accounts::NewAccount {
                    username: name,
                    password_hash: Some(&hash),
                    email: None,
                    role: if *admin { "admin" } else { "user" },
                    plan: plan.as_deref(),
                },
                &now,
            )
            .await)?;
            println!(
                "created user {} (id {}, role {}, plan {})",
                u.username, u.id, u.role, u.plan
            );
        }
        UserCmd::List => {
            println!(
                "{:>5}  {:<24} {:<6} {:<12} {:<8} created",
                "id", "username", "role", "plan", "status"
            );
            for u in store.list_users().await? {
                let status = if u.disabled { "disabled" } else { "active" };
                println!(
                    "{:>5}  {:<24} {:<6} {:<12} {:<8} {}",
                    u.id, u.username, u.role, u.plan, status, u.created_at
                );
            }
        }
        UserCmd::SetPlan { name, plan } => {
            let u = store
                .user_by_username(name.clone())
                .await?
                .ok_or_else(|| anyhow!("no user named {name:?}"))?;
            let change = UserChanges {
                plan: Some(plan.clone()),
                ..Default::default()
            };
            api(accounts::update_user(&store, u.id, change).await)?;
            println!("{name} is now on plan {plan}");
        }
        UserCmd::ResetPassword { name, password } => {
            let u = store
                .user_by_username(name.clone())
                .await?
                .ok_or_else(|| anyhow!("no user named {name:?}"))?;
            let hash = api(accounts::hash_password(&read_password(password)?))?;
            store.set_user_password(u.id, hash).await?;
            println!("password of {name} changed; their earlier sign-ins no longer work");
        }
    }
    Ok(())
}

async fn key_cmd(cfg: &Config, cmd: &KeyCmd) -> Result<()> {
    let store = open_db(cfg).await?;
    match cmd {
        KeyCmd::Create {
            user,
            name,
            monthly_token_limit,
            monthly_usd_limit,
        } => {
            let u = store
                .user_by_username(user.clone())
                .await?
                .ok_or_else(|| anyhow!("no user named {user:?}"))?;
            let spec = accounts::KeySpec {
                name: name.clone(),
                monthly_token_limit: *monthly_token_limit,
                monthly_usd_limit: monthly_usd_limit.map(tollgate::money::Usd),
                ..Default::default()
            };
            let now = db::ts(chrono::Utc::now());
            let (row, secret) = accounts::create_key(&store, u.id, &spec, &now)
                .await
                .map_err(flag_error)?;
            eprintln!(
                "created key {} ({}) for {user}; it is shown only this once:",
                row.id, row.name
            );
            println!("{secret}");
        }
        KeyCmd::List { user } => {
            let u = store
                .user_by_username(user.clone())
                .await?
                .ok_or_else(|| anyhow!("no user named {user:?}"))?;
            println!(
                "{:>5}  {:<14} {:<20} {:<8} {:<21} {:>12} {:>11} last used",
                "id", "prefix", "name", "status", "expires", "tokens/month", "usd/month"
            );
            for k in store.list_keys_for_user(u.id).await? {
                let status = if k.revoked { "revoked" } else { "active" };
                println!(
                    "{:>5}  {:<14} {:<20} {:<8} {:<21} {:>12} {:>11} {}",
                    k.id,
                    k.prefix,
                    k.name,
                    status,
                    k.expires_at.as_deref().unwrap_or("never"),
                    k.monthly_token_limit
                        .map_or_else(|| "-".into(), |n| n.to_string()),
                    usd_or_dash(k.monthly_usd_limit),
                    k.last_used_at.as_deref().unwrap_or("never")
                );
            }
        }
        KeyCmd::Revoke { id } => {
            if !store.revoke_key(*id).await? {
                bail!("there is no key with id {id}");
            }
            println!("key {id} revoked");
        }
    }
    Ok(())
}

/// `credits add | list`: a user's prepaid credit, with the admin API's
/// checks. An entry made here has no author (`created_by` null).
async fn credits_cmd(cfg: &Config, cmd: &CreditsCmd) -> Result<()> {
    use tollgate::money::format_usd;
    use tollgate::service::credits;
    let store = open_db(cfg).await?;
    match cmd {
        CreditsCmd::Add { user, amount, note } => {
            let u = api(credits::find_user(&store, user).await)?;
            let now = db::ts(chrono::Utc::now());
            let (e, balance) = credits::add(&store, u.id, *amount, note, None, now)
                .await
                .map_err(|e| match e.param.as_deref() {
                    Some("amount_usd") => anyhow!("AMOUNT: {}", e.message),
                    Some("note") => anyhow!("--note: {}", e.message),
                    _ => anyhow!(e.message),
                })?;
            let what = if e.amount_usd.0 > 0 {
                "added"
            } else {
                "deducted"
            };
            println!(
                "{what} {} USD for {} (entry {}); credit now {} USD",
                format_usd(e.amount_usd.0.abs()),
                u.username,
                e.id,
                format_usd(balance)
            );
        }
        CreditsCmd::List { user, limit } => {
            if !(1..=1000).contains(limit) {
                bail!("--limit: give a number from 1 to 1000");
            }
            let u = api(credits::find_user(&store, user).await)?;
            let (entries, balance) = api(credits::ledger(&store, u.id, None, *limit).await)?;
            println!("{}: credit {} USD", u.username, format_usd(balance));
            if entries.is_empty() {
                println!(
                    "no credit entries yet (`tollgate credits add {} AMOUNT`)",
                    u.username
                );
                return Ok(());
            }
            println!(
                "{:>6}  {:<20}  {:>16}  {:<16}  note",
                "id", "created", "amount_usd", "by"
            );
            for e in entries {
                println!(
                    "{:>6}  {:<20}  {:>16}  {:<16}  {}",
                    e.id,
                    e.created_at,
                    format_usd(e.amount_usd.0),
                    e.created_by.as_deref().unwrap_or("(cli)"),
                    e.note
                );
            }
        }
    }
    Ok(())
}

fn providers(cfg: &Config, probe: bool) -> Result<()> {
    let p = Providers::from_config(cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let catalog = tollgate::upstream::catalog::Catalog::new(cfg.routing.max_response_bytes);
    for prov in &p.list {
        let status = if prov.active() { "active" } else { "inactive" };
        let default = if prov.is_default { " (default)" } else { "" };
        println!("{:<12} {:<9} {}{}", prov.id, status, prov.base_url, default);
        if let Some(reason) = prov.inactive_reason() {
            println!("             {reason}");
        } else if probe {
            eprintln!("             probing {} …", prov.models_url);
            match rt.block_on(catalog.fetch(prov)) {
                Ok(models) => println!("             model list: {} models", models.len()),
                Err(reason) => println!("             model list failed: {reason}"),
            }
        }
    }
    Ok(())
}

fn serve(cfg: Config) -> Result<()> {
    // This thread accepts connections and runs the background jobs; the
    // serving threads (`[server] workers`) each run their own event loop.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // A certificate that does not load stops the start before anything is opened.
    if let (Some(cert), Some(key)) = (&cfg.server.tls_cert, &cfg.server.tls_key) {
        tollgate::server::tls::check(cert, key).map_err(anyhow::Error::msg)?;
    }
    let scheme = if cfg.server.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    rt.block_on(async move {
        let addr = cfg.listen_addr();
        let (state, report) = tollgate::build_state(cfg, admin_password_env()).await?;
        print_bootstrap(&report);
        if report.admin_password_ignored {
            tracing::warn!(
                "TOLLGATE_ADMIN_PASSWORD is set but ignored: it sets the admin's password on the first start \
                 only, and this database has its admin already. To change the password: \
                 tollgate user reset-password admin --password-stdin"
            );
        }
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (is another server running there? use --listen)")
        })?;
        let local = listener.local_addr()?;
        let providers = Providers::from_config(&state.config);
        let active: Vec<&str> = providers
            .list
            .iter()
            .filter(|p| p.active())
            .map(|p| p.id.as_str())
            .collect();
        tracing::info!("tollgate listening on {scheme}://{local}");
        tracing::info!("web page: {scheme}://{local}/ui/");
        tracing::info!(
            "providers active: {} (default: {})",
            if active.is_empty() {
                "none — set OPENROUTER_API_KEY or another <NAME>_API_KEY".to_string()
            } else {
                active.join(", ")
            },
            providers.default_id
        );
        tracing::info!(
            "database: {}",
            tollgate::db::Store::describe(&state.config.database)
        );
        tollgate::serve(listener, state, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
