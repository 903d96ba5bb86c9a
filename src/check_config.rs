//! What `tollgate check-config` prints: the effective configuration, as a
//! valid config file with secrets masked. Unlike the file it is built from, it
//! shows what the server will use: every provider, the built-in ones included,
//! with a comment saying whether it is active and why not, and the plans a
//! first start creates (the three defaults when the file lists none).

use crate::config::Config;
use crate::upstream::providers::Providers;

/// The effective configuration of `cfg` as commented TOML, secrets masked.
pub fn effective_toml(cfg: &Config) -> String {
    let providers = Providers::from_config(cfg);
    let mut eff = cfg.clone();
    eff.plans = cfg.initial_plans();
    for p in &providers.list {
        let section = eff.providers.entry(p.id.clone()).or_default();
        section.name.get_or_insert_with(|| p.name.clone());
        section.base_url.get_or_insert_with(|| p.base_url.clone());
        // Extra headers that may carry a credential print masked (`config::Headers`).
    }
    let text = eff.to_masked_toml();
    let mut out = String::with_capacity(text.len() + 1024);
    let mut plans_noted = false;
    for line in text.lines() {
        if let Some(p) = provider_header(line).and_then(|id| providers.get(id)) {
            let default = if p.is_default { ", the default" } else { "" };
            match p.inactive_reason() {
                None => out.push_str(&format!("# {}: active{default}\n", p.id)),
                Some(why) => out.push_str(&format!("# {}: inactive{default}: {why}\n", p.id)),
            }
        }
        if line == "[[plans]]" && !plans_noted {
            plans_noted = true;
            if cfg.plans.is_empty() {
                out.push_str(
                    "# Plans: the file lists none, so a first start creates these defaults.\n",
                );
            } else {
                out.push_str("# Plans: created on the first start only.\n");
            }
            out.push_str(
                "# Afterwards the database holds them: `tollgate plan list | add | set | delete`.\n",
            );
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `id` of a `[providers.id]` or `[providers."id"]` header line.
fn provider_header(line: &str) -> Option<&str> {
    let id = line.strip_prefix("[providers.")?.strip_suffix(']')?;
    Some(
        id.strip_prefix('"')
            .and_then(|i| i.strip_suffix('"'))
            .unwrap_or(id),
    )
}
