//! Recipient resolution and delivery into the store, with the waiting rule of G2: while the
//! store is unreachable, a delivery retries until the configured bound before giving up with a
//! temporary error.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trimaran_store::{
    AccountId, Delivery, DeliveryReceipt, IndexedText, LocalDelivery, NewMessage, OutboundRequest,
    Store, StoreError, StoredBlob, MAX_HEADER_COPY,
};

use crate::address;
use crate::message;

/// How deep aliases may point at aliases; deeper chains are treated as loops.
const MAX_ALIAS_DEPTH: usize = 8;
/// Most addresses one recipient may expand to.
const MAX_EXPANSION: usize = 1000;

/// What a recipient address turns out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A local address: accounts that receive a copy and remote addresses it forwards to.
    Local {
        accounts: Vec<AccountId>,
        forwards: Vec<String>,
    },
    /// The domain is ours but nobody by that name lives here.
    UnknownLocal,
    /// Not one of our domains.
    Remote,
}

/// Resolves `addr` (already normalised) through accounts, aliases (recursively) and `+detail`.
pub async fn resolve(store: &Store, addr: &str) -> Result<Resolved, StoreError> {
    let Some(domain) = trimaran_store::domain_of(addr) else {
        return Ok(Resolved::UnknownLocal);
    };
    if !store.meta().domain_exists(domain).await? {
        return Ok(Resolved::Remote);
    }
    let mut accounts = Vec::new();
    let mut forwards = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![(addr.to_string(), 0usize)];
    while let Some((current, depth)) = todo.pop() {
        if !seen.insert(current.clone()) || seen.len() > MAX_EXPANSION {
            continue;
        }
        if let Some(acc) = store.meta().account_by_address(&current).await? {
            accounts.push(acc.id);
            continue;
        }
        let mut targets = store.meta().alias_targets(&current).await?;
        if targets.is_empty() {
            if let Some(base) = address::without_detail(&current) {
                todo.push((base, depth));
                continue;
            }
        }
        if depth >= MAX_ALIAS_DEPTH {
            tracing::warn!(address = %current, "alias chain too deep; ignoring the rest");
            continue;
        }
        for target in targets.drain(..) {
            let Some(target) = address::normalize(&target) else {
                continue;
            };
            let local = match trimaran_store::domain_of(&target) {
                Some(d) => store.meta().domain_exists(d).await?,
                None => false,
            };
            if local {
                todo.push((target, depth + 1));
            } else if !forwards.contains(&target) {
                forwards.push(target);
            }
        }
    }
    accounts.sort_unstable();
    accounts.dedup();
    if accounts.is_empty() && forwards.is_empty() {
        Ok(Resolved::UnknownLocal)
    } else {
        Ok(Resolved::Local { accounts, forwards })
    }
}

/// Hashes, compresses and parses a message. CPU-bound, so it runs on the blocking pool.
///
/// The bytes are stored as received: SMTP keeps a bare LF as data (BODY=BINARYMIME content may
/// hold any octet, and DATA only ends at CRLF.CRLF).
pub async fn prepare(raw: Vec<u8>, received_at: i64) -> Result<NewMessage, StoreError> {
    tokio::task::spawn_blocking(move || build(raw, received_at))
        .await
        .map_err(|e| StoreError::Internal(format!("preparing a message failed: {e}")))
}

/// [`prepare`] for a message whose bare LF line endings are to become CRLF first: IMAP APPEND,
/// whose message is RFC 5322 text (RFC 9051 §6.3.12), where clients that write files with LF
/// lines would otherwise get a size, line counts and sections no other server reports.
/// Bodies labelled Content-Transfer-Encoding: binary keep their octets.
pub async fn prepare_normalized(raw: Vec<u8>, received_at: i64) -> Result<NewMessage, StoreError> {
    tokio::task::spawn_blocking(move || build(message::normalize(raw), received_at))
        .await
        .map_err(|e| StoreError::Internal(format!("preparing a message failed: {e}")))
}

fn build(raw: Vec<u8>, received_at: i64) -> NewMessage {
    let blob = StoredBlob::encode(&raw);
    with_blob(&raw, blob, received_at)
}

/// The message whose verified bytes are `raw`, kept as `blob` already is (a restore has its
/// bodies compressed from the backup and need not compress them again). CPU-bound: call it
/// from a blocking thread.
pub fn with_blob(raw: &[u8], blob: StoredBlob, received_at: i64) -> NewMessage {
    let meta = message::parse(raw);
    let header = (meta.header_end() <= MAX_HEADER_COPY)
        .then(|| raw.get(..meta.header_end() as usize).map(<[u8]>::to_vec))
        .flatten();
    NewMessage {
        meta,
        header,
        text: Some(IndexedText::for_delivery(message::search_text(raw))),
        blob,
        received_at,
    }
}

/// Commits a delivery, retrying retryable store errors until `wait` has passed.
pub async fn deliver(
    store: &Store,
    id: String,
    local: Option<LocalDelivery>,
    outbound: Option<OutboundRequest>,
    wait: Duration,
) -> Result<DeliveryReceipt, StoreError> {
    let delivery = Arc::new(Delivery {
        id,
        local,
        outbound,
    });
    retry(wait, || store.deliver(delivery.clone())).await
}

/// The id of one transmission of a message: a hash of its envelope and content.
///
/// A reply of 451 can be ambiguous: when the store stalls inside a commit, the bound of G2
/// makes us answer "try later" although the commit may still complete. The sender then sends
/// the same bytes to the same recipients again; with this id the store recognises that retry as
/// already committed and answers 250 without storing a second copy. The id is unique without
/// coordination between nodes, and a genuinely new message differs at least in its Message-ID
/// or Date.
pub fn transmission_id(sender: &str, recipients: &[String], content: &[u8]) -> String {
    let mut sorted: Vec<&str> = recipients.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut h = blake3::Hasher::new_derive_key("trimaran 2026 delivery id v1");
    h.update(sender.as_bytes());
    h.update(&[0]);
    for r in sorted {
        h.update(r.as_bytes());
        h.update(&[0]);
    }
    h.update(&(content.len() as u64).to_le_bytes());
    h.update(content);
    h.finalize().to_hex()[..32].to_string()
}

/// Runs `op` until it succeeds, fails for good, or `wait` is over; backs off from 50 ms to 2 s.
/// Each attempt is itself bounded by the time left, so a store that hangs (a frozen disk, a
/// partitioned database) still gets a temporary failure in time instead of holding the client.
pub async fn retry<T, F, Fut>(wait: Duration, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    loop {
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .max(MIN_ATTEMPT);
        let outcome = match tokio::time::timeout(budget, op()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Unavailable(format!(
                "the store did not answer within {:.1} s",
                budget.as_secs_f64()
            ))),
        };
        match outcome {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(e);
                }
                tracing::warn!(error = %e, "store unavailable; retrying");
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Time any one attempt gets, even when the wait is (nearly) over.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmission_ids() {
        let to = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = transmission_id("s@x", &to(&["a@y", "b@y"]), b"body");
        assert_eq!(
            a,
            transmission_id("s@x", &to(&["b@y", "a@y", "a@y"]), b"body")
        );
        assert_ne!(a, transmission_id("s@x", &to(&["a@y"]), b"body"));
        assert_ne!(a, transmission_id("t@x", &to(&["a@y", "b@y"]), b"body"));
        assert_ne!(a, transmission_id("s@x", &to(&["a@y", "b@y"]), b"body2"));
        assert_eq!(a.len(), 32);
    }

    #[tokio::test]
    async fn retry_gives_up_after_the_bound() {
        let started = Instant::now();
        let mut calls = 0;
        let r: Result<(), _> = retry(Duration::from_millis(300), || {
            calls += 1;
            async { Err(StoreError::Unavailable("down".into())) }
        })
        .await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(calls > 2);
    }

    #[tokio::test]
    async fn retry_bounds_a_hanging_store() {
        let started = Instant::now();
        let r: Result<(), _> = retry(Duration::from_millis(1500), || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn retry_does_not_repeat_permanent_errors() {
        let mut calls = 0;
        let r: Result<(), _> = retry(Duration::from_secs(5), || {
            calls += 1;
            async { Err(StoreError::Invalid("no".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn retry_succeeds_when_the_store_returns() {
        let mut calls = 0;
        let r = retry(Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(StoreError::Unavailable("down".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
    }
}
