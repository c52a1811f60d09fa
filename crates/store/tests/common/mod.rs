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
