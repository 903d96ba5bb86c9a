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
}
