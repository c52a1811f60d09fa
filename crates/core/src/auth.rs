//! Password hashing with argon2id (RFC 9106). Hashing is deliberately slow, so it runs on the
//! blocking pool and never stalls the protocol tasks.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand_core::OsRng;

/// Longest password accepted: bounds the work an unauthenticated client can ask for.
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is longer than {MAX_PASSWORD_LEN} bytes")]
    TooLong,
    #[error("hashing failed: {0}")]
    Hash(String),
}

pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Constant-time check of `password` against a stored PHC string.
pub fn verify_password(password: &[u8], stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A valid hash to verify against when the account does not exist, so that the time an
/// answer takes does not tell which accounts exist.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a real account").unwrap_or_default())
}

/// The outcome of a login attempt.
#[derive(Debug)]
pub enum Login {
    Accepted(trimaran_store::AccountRecord),
    /// Wrong user name or password.
    Rejected,
    /// Too many failures from this client address; the password was not checked.
    Throttled,
}

/// Checks `user`/`password` from `client`, through the login throttle, waiting out a store
/// outage up to the configured bound. Unknown users cost the same argon2 work as known ones, so
/// timing does not reveal which accounts exist. `Err` is a store failure: a temporary answer.
pub async fn authenticate(
    core: &crate::Core,
    client: std::net::IpAddr,
    user: &str,
    password: Vec<u8>,
) -> Result<Login, trimaran_store::StoreError> {
    let name = crate::address::normalize(user).unwrap_or_else(|| user.to_lowercase());
    let delay = match core.logins.verdict(client, &name) {
        crate::throttle::Verdict::Refuse => return Ok(Login::Throttled),
        crate::throttle::Verdict::Check(delay) => delay,
    };
    tokio::time::sleep(delay).await;
    let store = &core.store;
    let account = match crate::address::normalize(user) {
        Some(addr) => {
            let wait = core.config.store_wait();
            crate::delivery::retry(wait, || store.meta().account_by_address(&addr)).await?
        }
        None => None,
    };
    let hash = account
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    match account.filter(|_| ok) {
        Some(account) => {
            core.logins.succeeded(&name);
            Ok(Login::Accepted(account))
        }
        None => {
            core.logins.failed(client, &name);
            Ok(Login::Rejected)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(b"s3cret", &h));
        assert!(!verify_password(b"S3cret", &h));
        assert!(!verify_password(b"s3cret", "garbage"));
        assert!(hash_password("").is_err());
    }
}
