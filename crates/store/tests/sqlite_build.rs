//! A SQLite store built beside its place and put there whole (the restore of a store that does
//! not exist): nothing is ever built over, an interrupted build starts over, and the result is
//! an ordinary store.

mod common;
use common::deliver;
use std::path::Path;

use trimaran_store::sqlite::SqliteBuild;
use trimaran_store::*;

async fn deliver_texts(store: &Store, account: AccountId, texts: &[String]) -> Vec<BlobHash> {
    let mut hashes = Vec::new();
    for text in texts {
        let raw = format!("Subject: {text}\r\n\r\n{text}\r\n");
        hashes.push(deliver(store, account, raw.as_bytes()).await);
    }
    hashes
}

async fn account(store: &Store, address: &str) -> AccountId {
    if !store.meta().domain_exists("example.test").await.unwrap() {
        store.meta().add_domain("example.test").await.unwrap();
    }
    store.meta().add_account(address, "x").await.unwrap()
}

fn building(target: &Path) -> std::path::PathBuf {
    target.with_file_name("t.db.restoring")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_store_appears_whole_and_serves_as_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("sub").join("t.db");
    let mut build = SqliteBuild::begin(&target)
        .unwrap()
        .expect("nothing is there");
    let store = build.open(None).await.unwrap();
    let alice = account(&store, "alice@example.test").await;
    // A job that fails rolls back its own changes only, journal in memory or not.
    assert!(matches!(
        store.meta().add_account("alice@example.test", "y").await,
        Err(StoreError::AlreadyExists(_))
    ));
    let texts: Vec<String> = (0..200).map(|i| format!("message {i}")).collect();
    let hashes = deliver_texts(&store, alice, &texts).await;
    assert!(
        !target.exists(),
        "no server can see a store before it is complete"
    );
    build.finish(store).await.unwrap();
    assert!(!building(&target).exists());

    let store = Store::open(&StoreUrl::Sqlite(target.clone()))
        .await
        .unwrap();
    let alice = store
        .meta()
        .account_by_address("alice@example.test")
        .await
        .unwrap()
        .expect("the account is there")
        .id;
    for hash in &hashes {
        let bytes = store.read_blob(hash).await.unwrap();
        assert_eq!(BlobHash::of(&bytes), *hash);
    }
    // It takes mail as any store does, in WAL mode like every store in service.
    deliver_texts(&store, alice, &["after".to_string()]).await;
    let conn = rusqlite::Connection::open(&target).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let count: i64 = conn
        .query_row("SELECT count(*) FROM mailbox_messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_an_existing_store_is_built_over() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t.db");
    let store = Store::open(&StoreUrl::Sqlite(target.clone()))
        .await
        .unwrap();
    account(&store, "alice@example.test").await;
    drop(store);
    assert!(SqliteBuild::begin(&target).unwrap().is_none());

    // What a build killed before a store was made there some other way left is removed.
    std::fs::write(building(&target), b"half a database").unwrap();
    assert!(SqliteBuild::begin(&target).unwrap().is_none());
    assert!(!building(&target).exists());

    // A build killed between linking the store into place and removing its temporary name
    // leaves two names of the store in service: the second goes, the store is untouched.
    std::fs::hard_link(&target, building(&target)).unwrap();
    let size = std::fs::metadata(&target).unwrap().len();
    assert!(SqliteBuild::begin(&target).unwrap().is_none());
    assert!(!building(&target).exists());
    assert_eq!(std::fs::metadata(&target).unwrap().len(), size);
    let store = Store::open(&StoreUrl::Sqlite(target.clone()))
        .await
        .unwrap();
    assert!(store
        .meta()
        .account_by_address("alice@example.test")
        .await
        .unwrap()
        .is_some());
    drop(store);

    // A WAL without its database (the database removed by hand) would be applied to a new
    // file put beside it: that is not built on either.
    let other = dir.path().join("u.db");
    std::fs::write(dir.path().join("u.db-wal"), b"frames").unwrap();
    assert!(SqliteBuild::begin(&other).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_meanwhile_is_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t.db");
    let mut build = SqliteBuild::begin(&target).unwrap().unwrap();
    let built = build.open(None).await.unwrap();
    let a = account(&built, "alice@example.test").await;
    deliver_texts(&built, a, &["restored".to_string()]).await;

    // A server started on the target while the restore ran, and took mail.
    let live = Store::open(&StoreUrl::Sqlite(target.clone()))
        .await
        .unwrap();
    let b = account(&live, "bob@example.test").await;
    let kept = deliver_texts(&live, b, &["arrived meanwhile".to_string()]).await;

    match build.finish(built).await {
        Err(StoreError::AlreadyExists(why)) => assert!(why.contains("run the restore again")),
        other => panic!("finish over a live store: {other:?}"),
    }
    assert!(!building(&target).exists());
    assert!(live
        .meta()
        .account_by_address("alice@example.test")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        BlobHash::of(&live.read_blob(&kept[0]).await.unwrap()),
        kept[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_build_starts_over_and_a_second_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t.db");
    let mut first = SqliteBuild::begin(&target).unwrap().unwrap();
    let store = first.open(None).await.unwrap();
    account(&store, "alice@example.test").await;
    match SqliteBuild::begin(&target) {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("another restore")),
        Ok(_) => panic!("two builds of one store at once"),
        Err(e) => panic!("{e}"),
    }
    // Interrupted: never finished, its file stays behind, unseen by servers.
    drop(store);
    drop(first);
    assert!(building(&target).metadata().unwrap().len() > 0);
    assert!(!target.exists());

    let mut again = SqliteBuild::begin(&target).unwrap().unwrap();
    let store = again.open(None).await.unwrap();
    assert!(
        !store.meta().domain_exists("example.test").await.unwrap(),
        "a build starts from nothing"
    );
    account(&store, "bob@example.test").await;
    again.finish(store).await.unwrap();
    let store = Store::open(&StoreUrl::Sqlite(target)).await.unwrap();
    assert!(store
        .meta()
        .account_by_address("bob@example.test")
        .await
        .unwrap()
        .is_some());
}
