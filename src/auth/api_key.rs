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

/// Keys whose digest a serving thread has already computed, at most this many.
const MEMO_CAP: usize = 4096;

thread_local! {
    /// Digests of keys found in the cache, under the key's [`tag`].
    static MEMO: std::cell::RefCell<hashbrown::HashMap<u128, [u8; 32], TagHash>> =
        const { std::cell::RefCell::new(hashbrown::HashMap::with_hasher(TagHash)) };
}

/// A keyed SipHash-1-3-128 of `key` under a secret drawn at start. SipHash is
/// a pseudo-random function: without the secret, nobody can choose a key whose
/// tag equals another's, so a tag stands for its key. It costs about a tenth
/// of a SHA-256, and the key itself is never kept.
fn tag(key: &str) -> u128 {
    use siphasher::sip128::SipHasher13;
    static SECRET: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    let (k0, k1) = *SECRET.get_or_init(|| {
        let mut rng = rand::rngs::OsRng;
        (rng.gen(), rng.gen())
    });
    SipHasher13::new_with_keys(k0, k1)
        .hash(key.as_bytes())
        .as_u128()
}

/// Looks a presented key up by its SHA-256 through `lookup`. The digest of a
/// key that was found is remembered (per thread, by [`tag`]), so a client's
/// later calls skip the SHA-256. Only the digest is remembered, never what it
/// names: `lookup` decides every time, so a revoked key fails at once.
pub fn find<T>(key: &str, lookup: impl FnOnce(&[u8; 32]) -> Option<T>) -> Option<T> {
    let t = tag(key);
    if let Some(h) = MEMO.with(|m| m.borrow().get(&t).copied()) {
        return lookup(&h);
    }
    let h = hash(key);
    let found = lookup(&h)?;
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= MEMO_CAP {
            m.clear();
        }
        m.insert(t, h);
    });
    Some(found)
}

/// Tags are already uniformly random: their low bits serve as the hash.
#[derive(Clone, Copy, Default)]
struct TagHash;

impl std::hash::BuildHasher for TagHash {
    type Hasher = TagHasher;
    fn build_hasher(&self) -> TagHasher {
        TagHasher(0)
    }
}

struct TagHasher(u64);

impl std::hash::Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

pub fn looks_like_key(s: &str) -> bool {
    s.starts_with(KEY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_remembers_only_found_keys_and_always_asks_lookup() {
        let (key, digest, _) = generate();
        let (other, _, _) = generate();
        let memo_len = || MEMO.with(|m| m.borrow().len());
        let before = memo_len();
        // An unknown key is not remembered.
        assert_eq!(find(&other, |_| None::<()>), None);
        assert_eq!(memo_len(), before);
        // A known key is looked up by its SHA-256, then remembered.
        assert_eq!(find(&key, |h| (*h == digest).then_some(7)), Some(7));
        assert_eq!(memo_len(), before + 1);
        // The remembered digest is the same, and the lookup still decides:
        // a key revoked since is refused.
        assert_eq!(find(&key, |h| (*h == digest).then_some(8)), Some(8));
        assert_eq!(find(&key, |_| None::<()>), None);
        assert_eq!(memo_len(), before + 1);
        assert_ne!(tag(&key), tag(&other));
    }

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
