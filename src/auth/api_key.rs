//! API key material: `sk_live_` + 43 base62 characters (≥ 256 random bits),
//! stored only as its SHA-256.

use rand::Rng;
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "sk_live_";
const BODY_LEN: usize = 43;
/// How much of a key is kept for display.
pub const DISPLAY_PREFIX_LEN: usize = 12;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new key: (the secret, its hash, its display prefix).
pub fn generate() -> (String, [u8; 32], String) {
    let mut rng = rand::rngs::OsRng;
    let mut key = String::with_capacity(KEY_PREFIX.len() + BODY_LEN);
    key.push_str(KEY_PREFIX);
    for _ in 0..BODY_LEN {
        key.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
    }
    let hash = hash(&key);
    let prefix = key[..DISPLAY_PREFIX_LEN].to_owned();
    (key, hash, prefix)
}

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn looks_like_key(s: &str) -> bool {
    s.starts_with(KEY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape() {
        let (k, h, p) = generate();
        assert!(k.starts_with("sk_live_"));
        assert!(k.len() >= 8 + 43);
        assert!(k[8..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(h, hash(&k));
        assert!(k.starts_with(&p));
        assert_ne!(generate().0, k);
    }
}
