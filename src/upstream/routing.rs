//! Where a model name goes (SPEC §5): a prefix naming a configured provider is
//! stripped and the rest goes there; any other name goes whole to the default
//! provider.

use super::providers::{Provider, Providers};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Route {
    pub provider: Arc<Provider>,
    pub upstream_model: String,
}

impl Providers {
    pub fn route(&self, model: &str) -> Route {
        if let Some((prefix, rest)) = model.split_once('/') {
            if !rest.is_empty() {
                if let Some(p) = self.get(prefix) {
                    return Route {
                        provider: p.clone(),
                        upstream_model: rest.to_owned(),
                    };
                }
            }
        }
        Route {
            provider: self.default_provider().clone(),
            upstream_model: model.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::upstream::providers::Providers;

    #[test]
    fn routes_as_the_spec_says() {
        let cfg = Config::parse(
            "[providers.local]\nbase_url = \"http://127.0.0.1:9/v1\"\n",
            None,
        )
        .unwrap();
        let p = Providers::from_config(&cfg);
        let r = p.route("aiml/gpt-4");
        assert_eq!(
            (r.provider.id.as_str(), r.upstream_model.as_str()),
            ("aiml", "gpt-4")
        );
        let r = p.route("openrouter/anthropic/claude-3.5-sonnet");
        assert_eq!(
            (r.provider.id.as_str(), r.upstream_model.as_str()),
            ("openrouter", "anthropic/claude-3.5-sonnet")
        );
        let r = p.route("gpt-4");
        assert_eq!(
            (r.provider.id.as_str(), r.upstream_model.as_str()),
            ("openrouter", "gpt-4")
        );
        let r = p.route("anthropic/claude-3");
        assert_eq!(
            (r.provider.id.as_str(), r.upstream_model.as_str()),
            ("openrouter", "anthropic/claude-3")
        );
        let r = p.route("local/llama3");
        assert_eq!(
            (r.provider.id.as_str(), r.upstream_model.as_str()),
            ("local", "llama3")
        );
        assert!(r.provider.active(), "a custom provider needs no key");
        assert!(!p.get("aiml").unwrap().active());
        let r = p.route("aiml/");
        assert_eq!(
            (r.provider.id.as_str(), r.upstream_model.as_str()),
            ("openrouter", "aiml/")
        );
    }

    #[test]
    fn aliases_name_other_models() {
        let cfg = Config::parse(
            "[routing]\naliases = { \"fast\" = \"aiml/gpt-4o-mini\", \"claude-*\" = \"anth/claude-*\", \
             \"claude-opus-*\" = \"openrouter/anthropic/claude-opus-4\", \"*-latest\" = \"aiml/*\" }\n",
            None,
        )
        .unwrap();
        cfg.validate(None).unwrap();
        let a = Providers::from_config(&cfg).aliases;
        let r = |m: &str| a.resolve(m);
        assert_eq!(r("fast").as_deref(), Some("aiml/gpt-4o-mini"));
        assert_eq!(
            r("claude-haiku-4-5-20251001").as_deref(),
            Some("anth/claude-haiku-4-5-20251001")
        );
        // The most specific name wins; a target without `*` takes none of it.
        assert_eq!(
            r("claude-opus-4-1-20250805").as_deref(),
            Some("openrouter/anthropic/claude-opus-4")
        );
        assert_eq!(r("gpt-4o-latest").as_deref(), Some("aiml/gpt-4o"));
        assert_eq!(r("fast2"), None);
        assert_eq!(r("aiml/gpt-4"), None);
        assert_eq!(
            Providers::from_config(&Config::default())
                .aliases
                .resolve("fast"),
            None
        );

        for (bad, key) in [
            ("\"a*b*\" = \"aiml/x\"", "routing.aliases.\"a*b*\""),
            ("\"a\" = \"aiml/*\"", "routing.aliases.\"a\""),
            ("\"a\" = \"b\"\n\"b\" = \"aiml/x\"", "routing.aliases.\"a\""),
            ("\"a\" = \"\"", "routing.aliases.\"a\""),
        ] {
            let text = format!("[routing.aliases]\n{bad}\n");
            let e = Config::parse(&text, None)
                .unwrap()
                .validate(None)
                .unwrap_err();
            assert_eq!(e.key, key, "{bad}");
        }
    }
}
