//! Slowing down password guessing, shared by every protocol that takes a password.
//!
//! Per client address: past `max_failures_per_address` failures within the window, further
//! logins from that address are refused until the window passes (a guesser is shut out).
//! Per account: past `max_failures_per_account`, every further attempt on that account waits a
//! growing delay (up to 10 s) but is never refused, so an attacker cannot lock the owner out.
//! A success clears the account's count, not the address's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    pub max_failures_per_address: u32,
    pub max_failures_per_account: u32,
    /// Seconds over which failures are counted.
    pub window: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_failures_per_address: 20,
            max_failures_per_account: 10,
            window: 900,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Check the password, after waiting this long.
    Check(Duration),
    /// Do not even check: this address failed too often.
    Refuse,
}

#[derive(Clone, Copy)]
struct Count {
    failures: u32,
    since: Instant,
}

#[derive(Hash, PartialEq, Eq, Clone)]
enum Key {
    Address(IpAddr),
    Account(String),
}

/// Entries kept at most; beyond it expired ones are dropped, then everything (failing open
/// rather than letting an attacker who rotates names grow our memory).
const MAX_ENTRIES: usize = 100_000;
const MAX_ACCOUNT_DELAY: Duration = Duration::from_secs(10);

pub struct LoginThrottle {
    config: ThrottleConfig,
    counts: Mutex<HashMap<Key, Count>>,
}

impl LoginThrottle {
    pub fn new(config: ThrottleConfig) -> LoginThrottle {
        LoginThrottle {
            config,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.config.window)
    }

    fn failures(&self, map: &HashMap<Key, Count>, key: &Key, now: Instant) -> u32 {
        match map.get(key) {
            Some(c) if now.duration_since(c.since) < self.window() => c.failures,
            _ => 0,
        }
    }

    /// What to do with a login attempt for `account` (normalised) from `ip`.
    pub fn verdict(&self, ip: IpAddr, account: &str) -> Verdict {
        let now = Instant::now();
        let map = self.counts.lock().expect("throttle map");
        if self.failures(&map, &Key::Address(ip), now) >= self.config.max_failures_per_address {
            return Verdict::Refuse;
        }
        let over = self
            .failures(&map, &Key::Account(account.to_string()), now)
            .saturating_sub(self.config.max_failures_per_account.saturating_sub(1));
        let delay = Duration::from_secs(over as u64).min(MAX_ACCOUNT_DELAY);
        Verdict::Check(delay)
    }

    pub fn failed(&self, ip: IpAddr, account: &str) {
        let now = Instant::now();
        let window = self.window();
        let mut map = self.counts.lock().expect("throttle map");
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, c| now.duration_since(c.since) < window);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        for key in [Key::Address(ip), Key::Account(account.to_string())] {
            let entry = map.entry(key).or_insert(Count {
                failures: 0,
                since: now,
            });
            if now.duration_since(entry.since) >= window {
                *entry = Count {
                    failures: 0,
                    since: now,
                };
            }
            entry.failures += 1;
        }
    }

    pub fn succeeded(&self, account: &str) {
        self.counts
            .lock()
            .expect("throttle map")
            .remove(&Key::Account(account.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottleConfig {
            max_failures_per_address: 3,
            max_failures_per_account: 2,
            window: 60,
        })
    }

    #[test]
    fn an_address_is_shut_out_after_its_limit() {
        let t = throttle();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for i in 0..3 {
            assert!(matches!(
                t.verdict(ip, &format!("u{i}@x")),
                Verdict::Check(_)
            ));
            t.failed(ip, &format!("u{i}@x"));
        }
        assert_eq!(t.verdict(ip, "other@x"), Verdict::Refuse);
        assert!(matches!(
            t.verdict("192.0.2.8".parse().unwrap(), "other@x"),
            Verdict::Check(_)
        ));
    }

    #[test]
    fn an_account_is_slowed_not_locked() {
        let t = throttle();
        for i in 0..5u8 {
            t.failed(IpAddr::from([198, 51, 100, i]), "victim@x");
        }
        let other: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(
            t.verdict(other, "victim@x"),
            Verdict::Check(Duration::from_secs(4))
        );
        t.succeeded("victim@x");
        assert_eq!(t.verdict(other, "victim@x"), Verdict::Check(Duration::ZERO));
    }
}
