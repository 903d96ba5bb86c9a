//! Prices: `[pricing]` first, then what the provider's model list says;
//! without either a call costs 0 and is marked unpriced. Configured and
//! listed prices are dollars per million tokens; the gateway keeps them as
//! whole pico-dollars per token so that every cost is integer arithmetic.

use crate::money;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Pico-dollars (1e-12 USD) per prompt token.
    pub prompt: i64,
    /// Pico-dollars per completion token.
    pub completion: i64,
}

impl Price {
    /// A price given in dollars per million tokens.
    pub fn per_mtok(prompt: f64, completion: f64) -> Price {
        Price {
            prompt: money::pico_per_token(prompt),
            completion: money::pico_per_token(completion),
        }
    }

    /// Micro-dollars of a call, each part rounded up to the micro-dollar.
    pub fn cost(&self, prompt_tokens: i64, completion_tokens: i64) -> i64 {
        money::cost_micros(prompt_tokens, self.prompt)
            + money::cost_micros(completion_tokens, self.completion)
    }
}
