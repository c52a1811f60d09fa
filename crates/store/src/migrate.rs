//! Versioned schema migrations, one list per back end, applied in order on open. A store whose
//! schema is newer than this binary knows is refused rather than misread.

/// (version, SQL) for SQLite, oldest first.
pub const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_initial.sql")),
    (
        2,
        include_str!("../migrations/sqlite/0002_maildrop_leases.sql"),
    ),
    (3, include_str!("../migrations/sqlite/0003_imap.sql")),
    (
        4,
        include_str!("../migrations/sqlite/0004_change_notices.sql"),
    ),
    (
        5,
        include_str!("../migrations/sqlite/0005_search_index.sql"),
    ),
    (6, include_str!("../migrations/sqlite/0006_quota.sql")),
    (7, include_str!("../migrations/sqlite/0007_acl.sql")),
    (
        8,
        include_str!("../migrations/sqlite/0008_search_fields.sql"),
    ),
    (9, include_str!("../migrations/sqlite/0009_header_copy.sql")),
    (
        10,
        include_str!("../migrations/sqlite/0010_notify_after_commit.sql"),
    ),
    (
        11,
        include_str!("../migrations/sqlite/0011_hash_collation.sql"),
    ),
    (12, include_str!("../migrations/sqlite/0012_dkim_keys.sql")),
    (13, include_str!("../migrations/sqlite/0013_outbound.sql")),
    (
        14,
        include_str!("../migrations/sqlite/0014_blobs_rowid.sql"),
    ),
];

/// (version, SQL) for PostgreSQL, oldest first. Kept in step with [`SQLITE`].
pub const POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_initial.sql")),
    (
        2,
        include_str!("../migrations/postgres/0002_maildrop_leases.sql"),
    ),
    (3, include_str!("../migrations/postgres/0003_imap.sql")),
    (
        4,
        include_str!("../migrations/postgres/0004_change_notices.sql"),
    ),
    (
        5,
        include_str!("../migrations/postgres/0005_search_index.sql"),
    ),
    (6, include_str!("../migrations/postgres/0006_quota.sql")),
    (7, include_str!("../migrations/postgres/0007_acl.sql")),
    (
        8,
        include_str!("../migrations/postgres/0008_search_fields.sql"),
    ),
    (
        9,
        include_str!("../migrations/postgres/0009_header_copy.sql"),
    ),
    (
        10,
        include_str!("../migrations/postgres/0010_notify_after_commit.sql"),
    ),
    (
        11,
        include_str!("../migrations/postgres/0011_hash_collation.sql"),
    ),
    (
        12,
        include_str!("../migrations/postgres/0012_dkim_keys.sql"),
    ),
    (13, include_str!("../migrations/postgres/0013_outbound.sql")),
    (
        14,
        include_str!("../migrations/postgres/0014_blobs_rowid.sql"),
    ),
];

pub fn latest(migrations: &[(i64, &str)]) -> i64 {
    migrations.last().map(|(v, _)| *v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_back_ends_have_the_same_versions() {
        let s: Vec<i64> = super::SQLITE.iter().map(|m| m.0).collect();
        let p: Vec<i64> = super::POSTGRES.iter().map(|m| m.0).collect();
        assert_eq!(s, p);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }
}
