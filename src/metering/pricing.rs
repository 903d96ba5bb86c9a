//! Prices in USD per million tokens: `[pricing]` first, then what the
//! provider's model list says; without either a call costs 0 and is marked
//! unpriced.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub prompt: f64,
    pub completion: f64,
}

impl Price {
    pub fn cost(&self, prompt_tokens: i64, completion_tokens: i64) -> f64 {
        (prompt_tokens as f64 * self.prompt + completion_tokens as f64 * self.completion)
            / 1_000_000.0
    }
}
