//! Password hashing with argon2id (RFC 9106). Hashing is deliberately slow, so it runs on the
//! blocking pool and never stalls the protocol tasks.

use std::sync::Mutex;

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut memory = WorkingMemory::take(params.block_count());
    let argon2 = Argon2::new(algorithm, version, params);
    let computed = Output::init_with(expected.len(), |out| {
        argon2
            .hash_password_into_with_memory(password, salt, out, &mut memory.0[..])
            .map_err(|_| argon2::password_hash::Error::Password)
    });
    memory.give_back();
    // `Output`'s equality is constant-time.
    computed.is_ok_and(|c| c == expected)
}

/// argon2's working memory (19 MiB at the default cost), kept between checks: allocating and
/// zeroing it afresh for every login was a fifth of a login's CPU. At most one buffer per CPU
/// is kept, and none over `MAX_KEPT_BLOCKS`, so what stays allocated is bounded.
struct WorkingMemory(Vec<Block>);

static SPARE_MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// 64 MiB of 1 KiB blocks.
const MAX_KEPT_BLOCKS: usize = 64 * 1024;

impl WorkingMemory {
    fn take(blocks: usize) -> WorkingMemory {
        let spare = SPARE_MEMORY.lock().ok().and_then(|mut s| s.pop());
        let mut memory = spare.unwrap_or_default();
        // Every block is written before argon2 reads it, so old contents need no clearing.
        memory.resize(blocks, Block::default());
        WorkingMemory(memory)
    }

    fn give_back(self) {
        if self.0.len() > MAX_KEPT_BLOCKS {
            return;
        }
        // Asked once: on Linux the answer reads the cgroup's CPU quota from /proc and /sys.
        static KEEP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let keep =
            *KEEP.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if let Ok(mut spare) = SPARE_MEMORY.lock() {
            if spare.len() < keep {
                spare.push(self.0);
            }
        }
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

    /// The kept working memory fits whatever cost a stored hash names: hashes made with other
    /// parameters (an older default, an operator's choice) check right before and after.
    #[test]
    fn hashes_of_other_costs_verify_with_kept_memory() {
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        );
        let salt = SaltString::generate(&mut OsRng);
        let small = small.hash_password(b"pw", &salt).unwrap().to_string();
        let default = hash_password("pw").unwrap();
        for _ in 0..2 {
            assert!(verify_password(b"pw", &small));
            assert!(!verify_password(b"pW", &small));
            assert!(verify_password(b"pw", &default));
            assert!(!verify_password(b"px", &default));
        }
        // A hash cut short, or with a cost argon2 refuses, is a failed check, not a panic.
        assert!(!verify_password(b"pw", &small[..small.len() - 10]));
        assert!(!verify_password(b"pw", &small.replace("m=64", "m=1")));
    }
}
