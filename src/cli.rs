//! The command line: `serve` and the admin commands, all against the same
//! database. `--config` and `--db` are accepted before or after the words.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "Self-hosted LLM gateway and API marketplace in one binary",
    long_about = "tollgate routes OpenAI-style requests to OpenRouter, Glama, Requesty, AIML API or any \
OpenAI-compatible server, meters tokens against each user's plan and serves a web page for keys, usage \
and administration.\n\nStart it with `tollgate serve`; the admin commands work on the same database.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Configuration file (default: ./config.toml when it exists)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// SQLite database file or PostgreSQL URL (overrides [database] and
    /// TOLLGATE_DB / TOLLGATE_DATABASE_URL)
    #[arg(long, global = true, value_name = "PATH|URL")]
    pub db: Option<PathBuf>,
    /// Also print log lines (commands other than serve print only their
    /// result and errors; RUST_LOG chooses the levels in detail)
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway: the API, the web page and the admin routes
    Serve {
        /// Address to listen on (overrides [server] listen and TOLLGATE_LISTEN)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Manage users
    #[command(subcommand)]
    User(UserCmd),
    /// Manage API keys
    #[command(subcommand)]
    Key(KeyCmd),
    /// Manage plans
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Top up, deduct and list users' prepaid credit (USD)
    #[command(subcommand)]
    Credits(CreditsCmd),
    /// Apply pending database migrations and exit; with --from-sqlite, copy a
    /// SQLite deployment into the (empty) PostgreSQL database configured
    Migrate {
        /// The SQLite database file to copy: users, identities, keys, plans,
        /// usage and settings
        #[arg(long, value_name = "PATH")]
        from_sqlite: Option<std::path::PathBuf>,
    },
    /// Validate the configuration and print it with secrets masked
    CheckConfig,
    /// Copy the SQLite database to PATH, consistently, while the server runs
    /// (SQLite's online backup); on PostgreSQL, says how to use pg_dump
    Backup {
        /// Where to write the copy (a new file)
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Replace PATH if it exists
        #[arg(long)]
        force: bool,
    },
    /// Show each provider, whether it is active and why
    Providers {
        /// Also call each active provider's model list
        #[arg(long)]
        probe: bool,
    },
    /// Show which provider and upstream model a model name goes to (after its alias, if any)
    Route {
        /// A model name as a client sends it, e.g. aiml/gpt-4
        model: String,
    },
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PasswordSource {
    /// The password (visible in shell history; prefer --password-stdin)
    #[arg(long, value_name = "P")]
    pub password: Option<String>,
    /// Read the password from the first line of standard input
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user
    Add {
        /// Username
        name: String,
        #[command(flatten)]
        password: PasswordSource,
        /// Make the user an administrator
        #[arg(long)]
        admin: bool,
        /// Plan name (default: the default plan, normally "free")
        #[arg(long)]
        plan: Option<String>,
    },
    /// List users
    List,
    /// Move a user to another plan
    SetPlan {
        /// Username
        name: String,
        /// Plan name
        plan: String,
    },
    /// Set a new password (signs the user out everywhere)
    ResetPassword {
        /// Username
        name: String,
        #[command(flatten)]
        password: PasswordSource,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create an API key for a user and print it (the only time it is shown)
    Create {
        /// Owner's username
        #[arg(long)]
        user: String,
        /// A name to recognise the key by
        #[arg(long, default_value = "cli")]
        name: String,
        /// Tokens the key may spend per calendar month, below the plan's
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        monthly_token_limit: Option<i64>,
        /// Dollars the key may spend per calendar month, up to 6 decimals
        /// (e.g. 5 or 0.25)
        #[arg(
            long,
            value_name = "USD",
            allow_negative_numbers = true,
            value_parser = usd_arg
        )]
        monthly_usd_limit: Option<i64>,
    },
    /// List a user's keys (without secrets)
    List {
        /// Owner's username
        #[arg(long)]
        user: String,
    },
    /// Revoke a key by id; it stops working within seconds in a running server
    Revoke {
        /// Key id (see `tollgate key list`)
        id: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum PlanCmd {
    /// List plans
    List,
    /// Create a plan
    Add {
        /// Plan name (1 to 64 characters, no '/')
        name: String,
        /// Tokens a user may spend per calendar month (UTC)
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        monthly_tokens: i64,
        /// Requests per minute, per user
        #[arg(
            long,
            visible_alias = "requests-per-minute",
            value_name = "N",
            allow_negative_numbers = true
        )]
        rpm: i64,
        #[command(flatten)]
        extra: PlanExtra,
    },
    /// Change a plan's limits, price or models; the running server applies
    /// them within a second
    Set {
        /// Plan name
        name: String,
        /// Tokens a user may spend per calendar month (UTC)
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        monthly_tokens: Option<i64>,
        /// Requests per minute, per user
        #[arg(
            long,
            visible_alias = "requests-per-minute",
            value_name = "N",
            allow_negative_numbers = true
        )]
        rpm: Option<i64>,
        #[command(flatten)]
        extra: PlanExtra,
    },
    /// Delete a plan (refused while a user is on it)
    Delete {
        /// Plan name
        name: String,
    },
}

/// The optional fields of `plan add` and `plan set`.
#[derive(Args, Debug)]
pub struct PlanExtra {
    /// Dollars a user may spend per calendar month (UTC), up to 6 decimals,
    /// e.g. 25 or 0.5; calls are refused once it is spent (default: no USD
    /// limit)
    #[arg(
        long,
        value_name = "USD",
        allow_negative_numbers = true,
        value_parser = usd_arg,
        conflicts_with = "no_monthly_usd"
    )]
    pub monthly_usd: Option<i64>,
    /// Remove the plan's USD limit (tokens alone limit it again)
    #[arg(long)]
    pub no_monthly_usd: bool,
    /// Whether calls are paid from the user's prepaid credit (`tollgate
    /// credits`) instead of a monthly allowance (default false)
    #[arg(long, value_name = "true|false")]
    pub pay_as_you_go: Option<bool>,
    /// Price shown to users, USD per month (default 0)
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub price_usd_month: Option<f64>,
    /// Model names or glob patterns the plan allows, comma-separated, e.g.
    /// "aiml/*,openrouter/openai/*" (default "*": every model)
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub allowed_models: Option<Vec<String>>,
}

#[derive(Subcommand, Debug)]
pub enum CreditsCmd {
    /// Add an entry to a user's credit ledger: a positive AMOUNT tops the
    /// credit up, a negative one deducts (never below zero)
    #[command(
        after_help = "Examples:\n  tollgate credits add alice 25 --note 'invoice 1042'\n  \
tollgate credits add alice -2.5 --note 'refund of a test call'"
    )]
    Add {
        /// Username or user id
        user: String,
        /// US dollars with up to 6 decimals, e.g. 25, 0.5 or -2.5
        #[arg(allow_negative_numbers = true, value_parser = usd_arg)]
        amount: i64,
        /// Why, kept in the ledger (at most 500 characters)
        #[arg(long, value_name = "TEXT", default_value = "")]
        note: String,
    },
    /// Show a user's credit balance and ledger, newest entries first
    List {
        /// Username or user id
        user: String,
        /// How many entries to show
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: i64,
    },
}

/// Reads an amount of dollars (`12.5`, `-3`) into micro-dollars.
fn usd_arg(s: &str) -> Result<i64, String> {
    crate::money::parse_usd(s.trim())
}
