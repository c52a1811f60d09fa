//! Helpers shared by the store's integration tests (each file under tests/ is its own crate).

/// A number unlikely to repeat between runs or tests: names for scratch databases and ids.
pub fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

use std::sync::Arc;

use trimaran_store::{
    AccountId, BlobHash, Delivery, LocalDelivery, MessageMeta, NewMessage, Store, StoredBlob,
};

/// A message of `raw` bytes with the least metadata a delivery needs.
#[allow(dead_code)] // not every test file delivers
pub fn new_message(raw: &[u8]) -> NewMessage {
    NewMessage {
        meta: MessageMeta {
            size: raw.len() as u64,
            ..MessageMeta::default()
        },
        blob: StoredBlob::encode(raw),
        header: None,
        text: None,
        received_at: 1_800_000_000,
    }
}

/// Delivers `raw` to `account`; the body's hash.
#[allow(dead_code)]
pub async fn deliver(store: &Store, account: AccountId, raw: &[u8]) -> BlobHash {
    let msg = new_message(raw);
    let hash = msg.blob.hash;
    store
        .deliver(Arc::new(Delivery {
            id: format!("d{:016x}", rand_id()),
            local: Some(LocalDelivery {
                message: msg,
                accounts: vec![account],
            }),
            outbound: None,
        }))
        .await
        .unwrap();
    hash
}
