//! Password hashing with argon2id (the crate's default parameters).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

pub const MIN_LEN: usize = 8;

/// A password long enough to accept, or the message explaining why not.
pub fn check_strength(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_LEN {
        return Err(format!(
            "The password must be at least {MIN_LEN} characters long."
        ));
    }
    if password.len() > 1024 {
        return Err("The password must be at most 1024 bytes long.".into());
    }
    Ok(())
}

pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("password hashing failed: {e}"))
}

/// Whether `password` matches `stored`. Without a stored hash a dummy hash is
/// still verified, so unknown usernames take as long as wrong passwords.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("dummy-password-for-timing").unwrap_or_default());
    let target = stored.unwrap_or(dummy);
    let ok = match PasswordHash::new(target) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    };
    ok && stored.is_some()
}

/// A random password for the first admin (printed once).
pub fn generate() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 20)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_and_verify() {
        let h = super::hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify("correct horse", Some(&h)));
        assert!(!super::verify("wrong horse", Some(&h)));
        assert!(!super::verify("anything", None));
        assert!(super::check_strength("short").is_err());
        assert!(super::check_strength("longenough").is_ok());
    }
}
