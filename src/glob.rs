//! Glob patterns over model names and origins (`aiml/*`, `vscode-webview://*`):
//! `*` matches any run of characters, `/` included.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

#[derive(Debug, Clone)]
pub struct Patterns {
    set: GlobSet,
    /// Fast path for the common `["*"]`.
    everything: bool,
    pub source: Vec<String>,
}

impl Patterns {
    /// Compiles the patterns; an invalid one is reported with its text.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let g = GlobBuilder::new(p)
                .literal_separator(false)
                .build()
                .map_err(|e| format!("{p:?} is not a valid glob pattern: {e}"))?;
            b.add(g);
        }
        Ok(Patterns {
            set: b.build().map_err(|e| e.to_string())?,
            everything: patterns.iter().any(|p| p == "*"),
            source: patterns.to_vec(),
        })
    }

    /// Like `new`, but an invalid pattern matches nothing instead of failing
    /// (for values already validated when stored).
    pub fn lenient(patterns: &[String]) -> Self {
        Self::new(patterns).unwrap_or_else(|_| Patterns {
            set: GlobSet::empty(),
            everything: false,
            source: patterns.to_vec(),
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        self.everything || self.set.is_match(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_crosses_slashes() {
        let p = Patterns::new(&["aiml/*".into(), "vscode-webview://*".into()]).unwrap();
        assert!(p.matches("aiml/gpt-4"));
        assert!(p.matches("aiml/openai/gpt-4"));
        assert!(p.matches("vscode-webview://abc123"));
        assert!(!p.matches("openrouter/gpt-4"));
        assert!(Patterns::new(&["*".into()])
            .unwrap()
            .matches("anything/at/all"));
        assert!(!Patterns::new(&[]).unwrap().matches("x"));
        assert!(Patterns::new(&["a[".into()]).is_err());
    }
}
