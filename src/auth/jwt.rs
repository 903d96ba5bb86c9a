//! Access tokens: HS256 JWTs carrying the user id and token version, expiring
//! exactly at `exp` (no leeway).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// The user's token version when issued.
    pub ver: i64,
    pub iat: i64,
    pub exp: i64,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl_secs: u64,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // Expiry is checked against the server's clock in `verify`, exactly at `exp`.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    pub fn issue(&self, user_id: i64, token_version: i64, now: i64) -> String {
        let claims = Claims {
            sub: user_id.to_string(),
            ver: token_version,
            iat: now,
            exp: now + self.ttl_secs as i64,
        };
        // Encoding HS256 with a valid key cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    /// The (user id, token version) of a valid, unexpired token.
    pub fn verify(&self, token: &str, now: i64) -> Option<(i64, i64)> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        if data.claims.exp <= now {
            return None;
        }
        Some((data.claims.sub.parse().ok()?, data.claims.ver))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_expire() {
        let k = JwtKeys::new(b"secret-secret-secret-secret-32b!", 60);
        let now = chrono::Utc::now().timestamp();
        let t = k.issue(7, 3, now);
        assert_eq!(k.verify(&t, now), Some((7, 3)));
        assert_eq!(k.verify(&t, now + 60), None, "expires exactly at exp");
        let other = JwtKeys::new(b"another-secret-another-secret-32", 60);
        assert_eq!(other.verify(&t, now), None);
        assert_eq!(k.verify("garbage", now), None);
    }
}
