//! Store behaviour both back ends must share. SQLite always runs; PostgreSQL runs when
//! TRIMARAN_TEST_POSTGRES names a server URL (the test script provides one).

mod common;
use common::rand_id;
use std::sync::Arc;

use trimaran_store::*;

fn message(text: &str) -> NewMessage {
    let raw = format!("Subject: {text}\r\n\r\n{text}\r\n").into_bytes();
    NewMessage {
        meta: MessageMeta {
            size: raw.len() as u64,
            subject: Some(text.to_string()),
            ..MessageMeta::default()
        },
        blob: StoredBlob::encode(&raw),
        header: None,
        text: Some(IndexedText::new(SearchText {
            header: format!("subject: {}", text.to_lowercase()),
            body: text.to_lowercase(),
        })),
        received_at: 1_800_000_000,
    }
}

fn local(id: &str, msg: NewMessage, accounts: Vec<AccountId>) -> Arc<Delivery> {
    Arc::new(Delivery {
        id: id.to_string(),
        local: Some(LocalDelivery {
            message: msg,
            accounts,
        }),
        outbound: None,
    })
}

/// What a test store needs kept alive, and (PostgreSQL) where it is, for tests that need a
/// connection of their own.
struct Backing {
    _dir: Option<tempfile::TempDir>,
    postgres: Option<String>,
}

async fn stores() -> Vec<(String, Arc<Store>, Backing)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&StoreUrl::Sqlite(dir.path().join("t.db")))
        .await
        .unwrap();
    let backing = Backing {
        _dir: Some(dir),
        postgres: None,
    };
    let mut out = vec![("sqlite".to_string(), sqlite, backing)];
    if let Ok(base) = std::env::var("TRIMARAN_TEST_POSTGRES") {
        let db = format!("t{:016x}", rand_id());
        let admin = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(admin.1);
        admin
            .0
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{db}"),
            None => unreachable!("TRIMARAN_TEST_POSTGRES must end in /DATABASE"),
        };
        let pg = Store::open(&StoreUrl::Postgres(url.clone())).await.unwrap();
        let backing = Backing {
            _dir: None,
            postgres: Some(url),
        };
        out.push(("postgres".to_string(), pg, backing));
    }
    out
}

/// A PostgreSQL connection of a test's own, beside the store's.
async fn own_connection(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Pages in the pending list of the text index's GIN index (needs pgstattuple).
async fn gin_pending_pages(c: &tokio_postgres::Client) -> i32 {
    let sql = "SELECT pending_pages FROM pgstatginindex('text_index_tokens')";
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn setup(store: &Store, n: usize) -> Vec<AccountId> {
    store.meta().add_domain("example.test").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            store
                .meta()
                .add_account(&format!("u{i}@example.test"), "x")
                .await
                .unwrap(),
        );
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_accounts_get_the_special_use_mailboxes() {
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 1).await;
        let boxes = store.meta().mailboxes(ids[0]).await.unwrap();
        let mut got: Vec<(String, Option<String>)> =
            boxes.into_iter().map(|m| (m.name, m.special_use)).collect();
        got.sort();
        let mut want: Vec<(String, Option<String>)> = DEFAULT_MAILBOXES
            .iter()
            .map(|(n, s)| (n.to_string(), s.map(str::to_string)))
            .collect();
        want.sort();
        assert_eq!(got, want, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_get_unique_increasing_uids() {
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 3).await;
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            let ids = ids.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .deliver(local(&format!("d{i}"), message(&format!("m{i}")), ids))
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for id in &ids {
            let msgs = store.meta().list_messages(*id, Some(INBOX)).await.unwrap();
            let uids: Vec<u32> = msgs.iter().map(|m| m.uid).collect();
            assert_eq!(uids, (1..=200).collect::<Vec<u32>>(), "{name}");
            let inbox = store.meta().mailboxes(*id).await.unwrap();
            let inbox = inbox.iter().find(|m| m.name == INBOX).unwrap();
            assert_eq!(inbox.uidnext, 201, "{name}");
            assert_eq!(inbox.highestmodseq, 200, "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_body_for_many_recipients_and_verified_reads() {
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 100).await;
        let msg = message("shared");
        let hash = msg.blob.hash;
        let receipt = store.deliver(local("one", msg, ids.clone())).await.unwrap();
        assert_eq!(receipt.copies.len(), 100, "{name}");
        for id in &ids {
            let m = store.meta().list_messages(*id, None).await.unwrap();
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].hash, hash);
        }
        let bytes = store.read_blob(&hash).await.unwrap();
        assert_eq!(BlobHash::of(&bytes), hash, "{name}");
        assert_eq!(
            store
                .meta()
                .message_meta(&hash)
                .await
                .unwrap()
                .unwrap()
                .subject
                .as_deref(),
            Some("shared")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_committed_delivery_adds_nothing() {
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 1).await;
        let d = local("same-id", message("once"), ids.clone());
        let first = store.deliver(d.clone()).await.unwrap();
        assert!(!first.already_committed);
        let second = store.deliver(d).await.unwrap();
        assert!(second.already_committed, "{name}");
        assert_eq!(
            store
                .meta()
                .list_messages(ids[0], None)
                .await
                .unwrap()
                .len(),
            1,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_leaves_nothing_and_spares_its_group() {
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 1).await;
        // Account 999999 does not exist: that delivery fails inside the transaction.
        let bad = local("bad", message("bad"), vec![ids[0], 999_999]);
        let good = local("good", message("good"), vec![ids[0]]);
        let (b, g) = tokio::join!(store.deliver(bad), store.deliver(good));
        assert!(b.is_err(), "{name}");
        g.unwrap();
        let msgs = store.meta().list_messages(ids[0], None).await.unwrap();
        assert_eq!(msgs.len(), 1, "{name}");
        assert_eq!(msgs[0].subject.as_deref(), Some("good"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_copies_are_queued_per_recipient() {
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 1).await;
        let d = Arc::new(Delivery {
            id: "q".into(),
            local: Some(LocalDelivery {
                message: message("local copy"),
                accounts: ids.clone(),
            }),
            outbound: Some(OutboundRequest {
                message: message("relayed copy"),
                sender: "u0@example.test".into(),
                recipients: vec![
                    OutboundRecipient::plain("a@remote.test"),
                    OutboundRecipient {
                        address: "b@remote.test".into(),
                        notify: Some(Notify::NEVER),
                        orcpt: Some("B@Remote.test".into()),
                    },
                ],
                submitted_by: Some(ids[0]),
                envelope: OutboundEnvelope {
                    envid: Some("env-1".into()),
                    ret: Some(Ret::Headers),
                    body: BodyType::EightBitMime,
                    smtputf8: true,
                    hold_until: 0,
                },
            }),
        });
        let r = store.deliver(d).await.unwrap();
        assert!(r.queue_id.is_some());
        let q = store.meta().queue_list().await.unwrap();
        assert_eq!(q.len(), 2, "{name}");
        assert!(q
            .iter()
            .all(|e| e.status == QueueStatus::Pending && e.sender == "u0@example.test"));
        assert_eq!(q[0].hash, message("relayed copy").blob.hash);
        assert_eq!(q[0].envelope.envid.as_deref(), Some("env-1"), "{name}");
        assert_eq!(q[0].envelope.ret, Some(Ret::Headers), "{name}");
        assert_eq!(q[0].envelope.body, BodyType::EightBitMime, "{name}");
        assert!(q[0].envelope.smtputf8, "{name}");
        assert_eq!((q[0].notify, q[1].notify), (None, Some(Notify::NEVER)));
        assert_eq!(q[1].orcpt.as_deref(), Some("B@Remote.test"));
    }
}

fn queued(id: &str, recipients: &[&str], hold_until: i64) -> Arc<Delivery> {
    Arc::new(Delivery {
        id: id.into(),
        local: None,
        outbound: Some(OutboundRequest {
            message: message(id),
            sender: "u0@example.test".into(),
            recipients: recipients
                .iter()
                .map(|r| OutboundRecipient::plain(*r))
                .collect(),
            submitted_by: None,
            envelope: OutboundEnvelope {
                hold_until,
                ..OutboundEnvelope::default()
            },
        }),
    })
}

fn outcome(r: &QueueRecord, result: QueueResult) -> QueueOutcome {
    QueueOutcome {
        recipient_id: r.recipient_id,
        detail: "250 2.0.0 ok".into(),
        remote_mta: Some("mx.remote.test".into()),
        result,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_leases_hand_work_to_one_owner_at_a_time() {
    for (name, store, _dir) in stores().await {
        setup(&store, 1).await;
        let m = store.meta();
        let now = now_unix();
        store
            .deliver(queued("one", &["a@r.test", "b@r.test"], 0))
            .await
            .unwrap();
        let held = store
            .deliver(queued("held", &["c@r.test"], now + 3600))
            .await
            .unwrap()
            .queue_id
            .unwrap();

        // One claimer gets the due work; a second one gets nothing while the lease lives, and
        // the held message is nobody's until its time.
        let a = m.queue_claim("a", now, now + 30, 100).await.unwrap();
        assert_eq!(a.len(), 2, "{name}");
        assert!(a.iter().all(|r| r.lease_owner.as_deref() == Some("a")));
        assert!(
            m.queue_claim("b", now, now + 30, 100)
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );

        // Renewed leases hold past their first end; lapsed ones go to the next claimer.
        let ids: Vec<i64> = a.iter().map(|r| r.recipient_id).collect();
        assert_eq!(
            m.queue_renew("a", &ids, now + 60).await.unwrap(),
            2,
            "{name}"
        );
        assert_eq!(
            m.queue_renew("b", &ids, now + 90).await.unwrap(),
            0,
            "{name}"
        );
        assert!(m
            .queue_claim("b", now + 45, now + 75, 100)
            .await
            .unwrap()
            .is_empty());
        let b = m.queue_claim("b", now + 61, now + 91, 100).await.unwrap();
        assert_eq!(b.len(), 2, "{name}");

        // The old owner's retry is ignored (the new owner decides); its success is kept, since
        // forgetting it would send again.
        m.queue_settle("a", now, &[outcome(&a[0], QueueResult::Retry(now + 600))])
            .await
            .unwrap();
        m.queue_settle(
            "a",
            now,
            &[outcome(&a[1], QueueResult::Done(QueueStatus::Relayed))],
        )
        .await
        .unwrap();
        m.queue_settle("b", now, &[outcome(&b[1], QueueResult::Retry(now + 600))])
            .await
            .unwrap();
        let list = m.queue_list().await.unwrap();
        let by_id = |id: i64| list.iter().find(|r| r.recipient_id == id).unwrap().clone();
        assert_eq!(by_id(a[0].recipient_id).next_attempt, now, "{name}");
        assert_eq!(
            by_id(a[1].recipient_id).status,
            QueueStatus::Relayed,
            "{name}"
        );
        assert_eq!(
            by_id(a[1].recipient_id).remote_mta.as_deref(),
            Some("mx.remote.test")
        );

        // b's own temporary failure: due again later, one attempt counted, lease dropped.
        m.queue_settle("b", now, &[outcome(&b[0], QueueResult::Retry(now + 600))])
            .await
            .unwrap();
        let r0 = m
            .queue_list()
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.recipient_id == b[0].recipient_id)
            .unwrap();
        assert_eq!(
            (r0.next_attempt, r0.attempts, r0.lease_owner),
            (now + 600, 1, None)
        );

        // Reports: the settled recipient is due; a pending one only once its delay is long.
        let due = m.queue_reports_due(now - 1, 100).await.unwrap();
        assert_eq!(due.len(), 1, "{name}");
        assert_eq!(due[0].recipient_id, a[1].recipient_id);
        let due = m.queue_reports_due(now + 1, 100).await.unwrap();
        // The held message's clock starts at its release: not delayed yet.
        assert_eq!(due.len(), 2, "{name}: {due:?}");
        m.queue_reported(&[a[1].recipient_id], &[a[0].recipient_id])
            .await
            .unwrap();
        let due = m.queue_reports_due(now + 1, 100).await.unwrap();
        assert!(due
            .iter()
            .all(|r| r.recipient_id != a[0].recipient_id && r.recipient_id != a[1].recipient_id));

        // Release a held message now, then delete it (its cancellation).
        assert!(m
            .queue_claim("c", now, now + 30, 100)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(m.queue_release(Some(held), now).await.unwrap(), 1, "{name}");
        let c = m.queue_claim("c", now, now + 30, 100).await.unwrap();
        assert_eq!(c.len(), 1, "{name}");
        assert_eq!(c[0].queue_id, held);
        assert_eq!(m.queue_delete(held).await.unwrap(), 1, "{name}");
        assert_eq!(m.queue_delete(held).await.unwrap(), 0, "{name}");

        // A failure counts only under a lease: first without one (ignored), then claimed again.
        m.queue_settle(
            "b",
            now + 700,
            &[outcome(&b[0], QueueResult::Done(QueueStatus::Failed))],
        )
        .await
        .unwrap();
        assert_eq!(
            m.queue_list().await.unwrap()[0].status,
            QueueStatus::Pending,
            "{name}"
        );
        let again = m.queue_claim("b", now + 700, now + 730, 100).await.unwrap();
        assert_eq!(again.len(), 1, "{name}");
        // Settling the last recipient and reporting it removes the message itself.
        m.queue_settle(
            "b",
            now + 700,
            &[outcome(&b[0], QueueResult::Done(QueueStatus::Failed))],
        )
        .await
        .unwrap();
        let list = m.queue_list().await.unwrap();
        assert_eq!(list.len(), 1, "{name}: {list:?}");
        m.queue_reported(&[b[0].recipient_id], &[]).await.unwrap();
        assert!(m.queue_list().await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors_are_clear() {
    for (name, store, _dir) in stores().await {
        setup(&store, 1).await;
        let m = store.meta();
        assert!(
            matches!(
                m.add_domain("example.test").await,
                Err(StoreError::AlreadyExists(_))
            ),
            "{name}"
        );
        assert!(matches!(
            m.add_account("u0@example.test", "x").await,
            Err(StoreError::AlreadyExists(_))
        ));
        assert!(matches!(
            m.add_account("x@nowhere.test", "x").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            m.remove_domain("example.test").await,
            Err(StoreError::Invalid(_))
        ));
        m.remove_account("u0@example.test").await.unwrap();
        m.remove_domain("example.test").await.unwrap();
        assert!(m.list_domains().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(Store::open(&StoreUrl::Sqlite(path.clone())).await.unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE schema_version SET version = 999", [])
        .unwrap();
    drop(conn);
    match Store::open(&StoreUrl::Sqlite(path)).await {
        Err(StoreError::SchemaTooNew { found: 999, .. }) => {}
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("opened a store with a newer schema"),
    }
}

/// Migration 14 moves SQLite's bodies out of a WITHOUT ROWID table: a store made before it
/// keeps every body, readable and verified, and still stores a body delivered again once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_survive_the_move_to_a_rowid_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let url = StoreUrl::Sqlite(path.clone());
    let mut hashes = Vec::new();
    {
        let store = Store::open(&url).await.unwrap();
        let ids = setup(&store, 2).await;
        for i in 0..20 {
            let msg = message(&format!("body {i}"));
            hashes.push(msg.blob.hash);
            store
                .deliver(local(&format!("d{i}"), msg, vec![ids[0]]))
                .await
                .unwrap();
        }
    }
    // Back to the layout of version 13.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE blobs_v13 (hash TEXT PRIMARY KEY, size INTEGER NOT NULL,
             compression INTEGER NOT NULL, data BLOB NOT NULL, created INTEGER NOT NULL)
             WITHOUT ROWID;
         INSERT INTO blobs_v13 SELECT hash, size, compression, data, created FROM blobs;
         DROP TABLE blobs;
         ALTER TABLE blobs_v13 RENAME TO blobs;
         UPDATE schema_version SET version = 13;",
    )
    .unwrap();
    drop(conn);

    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.meta().schema_version().await.unwrap(), 14);
    for hash in &hashes {
        let bytes = store.read_blob(hash).await.unwrap();
        assert_eq!(BlobHash::of(&bytes), *hash);
    }
    let again = message("body 3");
    let account = store
        .meta()
        .account_by_address("u1@example.test")
        .await
        .unwrap()
        .unwrap()
        .id;
    store
        .deliver(local("again", again, vec![account]))
        .await
        .unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (bodies, sql): (i64, String) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM blobs),
                    (SELECT sql FROM sqlite_schema WHERE name = 'blobs')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(bodies, 20, "a body delivered again is stored once");
    assert!(!sql.contains("WITHOUT ROWID"), "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expunge_removes_logs_and_tolerates_repeats() {
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 1).await;
        for i in 0..3 {
            store
                .deliver(local(
                    &format!("e{i}"),
                    message(&format!("m{i}")),
                    ids.clone(),
                ))
                .await
                .unwrap();
        }
        let before = store.meta().mailboxes(ids[0]).await.unwrap();
        let inbox_id = before.iter().find(|m| m.name == INBOX).unwrap().id;
        let before = before
            .iter()
            .find(|m| m.name == INBOX)
            .unwrap()
            .highestmodseq;
        assert_eq!(
            store
                .meta()
                .expunge(ids[0], inbox_id, &[1, 3, 99])
                .await
                .unwrap(),
            vec![1, 3],
            "{name}"
        );
        assert!(
            store
                .meta()
                .expunge(ids[0], inbox_id, &[1])
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        let left: Vec<u32> = store
            .meta()
            .list_messages(ids[0], Some(INBOX))
            .await
            .unwrap()
            .iter()
            .map(|m| m.uid)
            .collect();
        assert_eq!(left, vec![2], "{name}");
        let after = store.meta().mailboxes(ids[0]).await.unwrap();
        let inbox = after.iter().find(|m| m.name == INBOX).unwrap();
        assert_eq!(inbox.highestmodseq, before + 1, "{name}");
        assert_eq!(inbox.uidnext, 4, "UIDs are never reused ({name})");
        assert!(matches!(
            store.meta().expunge(ids[0], inbox_id + 999_999, &[2]).await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maildrop_leases_are_exclusive_renewable_and_lapse() {
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 1).await;
        let m = store.meta();
        let now = now_unix();
        assert!(
            m.lease_maildrop(ids[0], "a", now + 30).await.unwrap(),
            "{name}"
        );
        assert!(
            !m.lease_maildrop(ids[0], "b", now + 30).await.unwrap(),
            "{name}"
        );
        assert!(
            m.lease_maildrop(ids[0], "a", now + 60).await.unwrap(),
            "renewal ({name})"
        );
        m.release_maildrop(ids[0], "b").await.unwrap();
        assert!(
            !m.lease_maildrop(ids[0], "b", now + 30).await.unwrap(),
            "only the holder releases"
        );
        m.release_maildrop(ids[0], "a").await.unwrap();
        assert!(
            m.lease_maildrop(ids[0], "b", now - 1).await.unwrap(),
            "{name}"
        );
        // b's lease has lapsed: a dead holder does not keep the maildrop.
        assert!(
            m.lease_maildrop(ids[0], "c", now + 30).await.unwrap(),
            "{name}"
        );
    }
}

/// Appends `n` small messages ("TEXT 0", "TEXT 1", ...) with `flags` to `mailbox`.
async fn append_messages(
    store: &Store,
    account: AccountId,
    mailbox: MailboxId,
    text: &str,
    n: usize,
    flags: i64,
) {
    let reqs: Vec<AppendRequest> = (0..n)
        .map(|i| AppendRequest {
            message: message(&format!("{text} {i}")),
            flags,
            keywords: vec![],
        })
        .collect();
    store
        .append(account, mailbox, Arc::new(reqs))
        .await
        .unwrap();
}

async fn mailbox_id(store: &Store, account: AccountId, name: &str) -> MailboxId {
    store
        .meta()
        .mailboxes(account)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no mailbox {name}"))
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_are_created_renamed_with_children_and_deleted() {
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 1).await;
        let (a, m) = (ids[0], store.meta());
        let first = m.create_mailbox(a, "Work", None).await.unwrap();
        m.create_mailbox(a, "Work/2026", None).await.unwrap();
        assert!(
            matches!(
                m.create_mailbox(a, "Work", None).await,
                Err(StoreError::AlreadyExists(_))
            ),
            "{name}"
        );
        assert!(
            matches!(
                m.delete_mailbox(a, "Work").await,
                Err(StoreError::Invalid(_))
            ),
            "a mailbox with children is kept ({name})"
        );
        assert!(matches!(
            m.delete_mailbox(a, "INBOX").await,
            Err(StoreError::Invalid(_))
        ));
        m.set_subscribed(a, "Work/2026", true).await.unwrap();
        m.rename_mailbox(a, "Work", "Jobs").await.unwrap();
        let names: Vec<String> = m
            .mailboxes(a)
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert!(names.contains(&"Jobs".to_string()) && names.contains(&"Jobs/2026".to_string()));
        assert!(!names.iter().any(|n| n.starts_with("Work")), "{names:?}");
        assert!(m
            .subscriptions(a)
            .await
            .unwrap()
            .contains(&"Jobs/2026".to_string()));
        assert!(matches!(
            m.rename_mailbox(a, "Jobs", "Sent").await,
            Err(StoreError::AlreadyExists(_))
        ));
        m.delete_mailbox(a, "Jobs/2026").await.unwrap();
        m.delete_mailbox(a, "Jobs").await.unwrap();
        // Created again: a new UIDVALIDITY, even within the same second (RFC 9051 §2.3.1.1).
        let again = m.create_mailbox(a, "Work", None).await.unwrap();
        assert!(again.uidvalidity > first.uidvalidity, "{name}");
    }
}

fn flags_change(op: FlagOp, flags: i64, keywords: &[&str], since: Option<u64>) -> FlagChange {
    FlagChange {
        op,
        flags,
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        unchanged_since: since,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_flags_copy_move_and_deltas() {
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 1).await;
        let a = ids[0];
        let m = store.meta();
        let inbox = mailbox_id(&store, a, INBOX).await;
        let archive = mailbox_id(&store, a, "Archive").await;
        let reqs: Vec<AppendRequest> = (0..3)
            .map(|i| AppendRequest {
                message: message(&format!("append {i}")),
                flags: flags::SEEN,
                keywords: vec!["$Label1".into()],
            })
            .collect();
        let appended = store.append(a, inbox, Arc::new(reqs)).await.unwrap();
        assert_eq!(
            appended.iter().map(|x| x.uid).collect::<Vec<_>>(),
            vec![1, 2, 3],
            "{name}"
        );
        let base = m.mailbox(a, inbox).await.unwrap().highestmodseq;

        // UNCHANGEDSINCE older than the messages: nothing changes, all reported MODIFIED.
        let out = m
            .update_flags(
                a,
                inbox,
                &[1, 2],
                &flags_change(FlagOp::Add, flags::FLAGGED, &[], Some(base - 1)),
            )
            .await
            .unwrap();
        assert_eq!(out.modified, vec![1, 2], "{name}");
        let out = m
            .update_flags(
                a,
                inbox,
                &[1, 2, 99],
                &flags_change(FlagOp::Add, flags::FLAGGED, &["Work"], None),
            )
            .await
            .unwrap();
        assert_eq!(out.updated.len(), 2);
        assert!(out
            .updated
            .iter()
            .all(|e| e.flags == flags::SEEN | flags::FLAGGED
                && e.keywords == vec!["$Label1".to_string(), "Work".to_string()]));
        let delta = m.mailbox_delta(a, inbox, base).await.unwrap();
        assert_eq!(
            delta.changed.iter().map(|e| e.uid).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(delta.expunged.is_empty());
        // A change that changes nothing keeps the MODSEQ.
        let now = m.mailbox(a, inbox).await.unwrap().highestmodseq;
        m.update_flags(
            a,
            inbox,
            &[1],
            &flags_change(FlagOp::Add, flags::SEEN, &[], None),
        )
        .await
        .unwrap();
        assert_eq!(
            m.mailbox(a, inbox).await.unwrap().highestmodseq,
            now,
            "{name}"
        );

        let copied = m
            .copy_messages((a, inbox), &[1, 3], (a, archive), false)
            .await
            .unwrap();
        assert_eq!(copied.pairs, vec![(1, 1), (3, 2)], "{name}");
        let moved = m
            .copy_messages((a, inbox), &[2], (a, archive), true)
            .await
            .unwrap();
        assert_eq!(moved.pairs, vec![(2, 3)]);
        let delta = m.mailbox_delta(a, inbox, now).await.unwrap();
        assert_eq!(delta.expunged, vec![2], "{name}");
        let arch = m.mailbox_entries(archive).await.unwrap();
        assert_eq!(arch.len(), 3);
        assert_eq!(
            arch[2].keywords,
            vec!["$Label1".to_string(), "Work".to_string()]
        );
        let counts = m.mailbox_counts(inbox).await.unwrap();
        assert_eq!((counts.messages, counts.unseen), (2, 0), "{name}");
        let bodies: Vec<Vec<u8>> = {
            let mut v = Vec::new();
            for e in &arch {
                v.push(store.read_blob(&e.hash).await.unwrap());
            }
            v
        };
        assert!(bodies[0].ends_with(b"append 0\r\n"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_rights_are_kept_per_grantee_and_copies_cross_accounts() {
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 3).await;
        let (owner, friend, stranger) = (ids[0], ids[1], ids[2]);
        let m = store.meta();
        let inbox = mailbox_id(&store, owner, INBOX).await;
        let friend_inbox = mailbox_id(&store, friend, INBOX).await;
        assert!(m.shared_with(friend).await.unwrap().is_empty());

        m.set_acl(owner, inbox, "u1@example.test", Some("lr"))
            .await
            .unwrap();
        m.set_acl(owner, inbox, "u1@example.test", Some("lrsi"))
            .await
            .unwrap();
        let shared = m.shared_with(friend).await.unwrap();
        assert_eq!(shared.len(), 1, "{name}");
        assert_eq!(shared[0].owner, "u0@example.test");
        assert_eq!(shared[0].mailbox.id, inbox);
        assert_eq!(shared[0].rights, "lrsi");
        assert!(m.shared_with(stranger).await.unwrap().is_empty(), "{name}");
        assert_eq!(
            m.mailbox_acl(owner, inbox).await.unwrap(),
            vec![("u1@example.test".to_string(), "lrsi".to_string())]
        );
        // Only the owner's own mailboxes, only real accounts, never the owner.
        assert!(matches!(
            m.set_acl(friend, inbox, "u2@example.test", Some("lr"))
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            m.set_acl(owner, inbox, "nobody@example.test", Some("lr"))
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            m.set_acl(owner, inbox, "u0@example.test", Some("lr")).await,
            Err(StoreError::Invalid(_))
        ));

        // A copy into the shared mailbox lands in the owner's account.
        let appended = store
            .append(
                friend,
                friend_inbox,
                Arc::new(vec![AppendRequest {
                    message: message("shared copy"),
                    flags: 0,
                    keywords: vec![],
                }]),
            )
            .await
            .unwrap();
        let before = m.mailbox(owner, inbox).await.unwrap().highestmodseq;
        let out = m
            .copy_messages(
                (friend, friend_inbox),
                &[appended[0].uid],
                (owner, inbox),
                true,
            )
            .await
            .unwrap();
        assert_eq!(out.pairs.len(), 1, "{name}");
        assert_eq!(m.mailbox_entries(inbox).await.unwrap().len(), 1);
        assert!(m.mailbox_entries(friend_inbox).await.unwrap().is_empty());
        assert!(m.mailbox(owner, inbox).await.unwrap().highestmodseq > before);
        let delta = m.mailbox_delta(friend, friend_inbox, 0).await.unwrap();
        assert_eq!(delta.expunged, vec![appended[0].uid], "{name}");

        // Revoked, and gone with the mailbox.
        m.set_acl(owner, inbox, "u1@example.test", None)
            .await
            .unwrap();
        assert!(m.shared_with(friend).await.unwrap().is_empty(), "{name}");
        m.create_mailbox(owner, "Team", None).await.unwrap();
        let team = mailbox_id(&store, owner, "Team").await;
        m.set_acl(owner, team, "u1@example.test", Some("lr"))
            .await
            .unwrap();
        m.delete_mailbox(owner, "Team").await.unwrap();
        assert!(m.shared_with(friend).await.unwrap().is_empty(), "{name}");
    }
}

/// A delivery whose text has more tokens than are indexed before its sender is answered
/// stores the text and leaves the index to the backlog: searched by its text meanwhile, found
/// in the index once the backlog is done; a short text is indexed with its delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_texts_are_indexed_after_their_delivery() {
    use trimaran_store::search::{Field, INLINE_TOKENS};
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 1).await;
        let mut short = message("short");
        short.text = Some(IndexedText::for_delivery(SearchText {
            header: "subject: short\n".into(),
            body: "a few words\n".into(),
        }));
        assert!(!short.text.as_ref().unwrap().deferred);
        let short_hash = short.blob.hash;
        store
            .deliver(local("short", short, ids.clone()))
            .await
            .unwrap();
        // Random words of 19 characters: about 18 suffixes each, several times INLINE_TOKENS
        // in all, fewer than MAX_TOKENS.
        let body: String = (0..INLINE_TOKENS / 4)
            .map(|i| format!("q{:x}zz ", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        let mut long = message("long");
        long.text = Some(IndexedText::for_delivery(SearchText {
            header: "subject: long\n".into(),
            body: body.clone(),
        }));
        let indexed = long.text.clone().unwrap();
        assert!(indexed.deferred && indexed.tokens.is_none(), "{name}");
        let long_hash = long.blob.hash;
        store
            .deliver(local("long", long, ids.clone()))
            .await
            .unwrap();

        let meta = store.meta();
        assert_eq!(
            meta.search_unindexed().await.unwrap(),
            vec![long_hash],
            "{name}"
        );
        let stored = meta
            .search_texts(
                &[long_hash],
                TextParts {
                    header: true,
                    body: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            stored[0].1.body, body,
            "{name}: the text is stored with the delivery"
        );
        let backlog = meta.search_backlog(10).await.unwrap();
        assert_eq!(backlog.len(), 1, "{name}");
        assert_eq!(backlog[0].0, long_hash, "{name}");
        let text = IndexedText::new(backlog[0].1.clone().expect("stored text"));
        assert!(text.tokens.is_some() && !text.deferred, "{name}");
        meta.index_backlogged(&long_hash, &text).await.unwrap();
        assert!(meta.search_unindexed().await.unwrap().is_empty(), "{name}");
        let needle = body.split(' ').nth(7).unwrap();
        let q = TextQuery::new(&needle[1..], &[Field::Body]).unwrap();
        assert_eq!(
            meta.search_index(&q).await.unwrap(),
            vec![search::index_key(&long_hash)],
            "{name}"
        );
        let q = TextQuery::new("few", &[Field::Body]).unwrap();
        assert_eq!(
            meta.search_index(&q).await.unwrap(),
            vec![search::index_key(&short_hash)],
            "{name}"
        );
    }
}

/// Index entries of new deliveries wait in PostgreSQL's GIN pending list, which every search
/// reads whole, until the search index is tidied; then they are in the index proper and still
/// found. (SQLite has nothing pending; tidying it does nothing and fails nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidying_the_search_index_empties_its_pending_list() {
    use trimaran_store::search::Field;
    for (name, store, backing) in stores().await {
        let ids = setup(&store, 1).await;
        let mut keys = Vec::new();
        for i in 0..20 {
            let mut msg = message(&format!("pending {i}"));
            msg.text = Some(IndexedText::for_delivery(SearchText {
                header: format!("subject: pending {i}\n"),
                body: format!("tidyneedle word{i} and some more words\n"),
            }));
            keys.push(search::index_key(&msg.blob.hash));
            store
                .deliver(local(&format!("p{i}"), msg, ids.clone()))
                .await
                .unwrap();
        }
        keys.sort_unstable();
        let pending = match &backing.postgres {
            Some(url) => {
                let client = own_connection(url).await;
                client
                    .batch_execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
                    .await
                    .unwrap();
                Some(client)
            }
            None => None,
        };
        if let Some(c) = &pending {
            assert!(
                gin_pending_pages(c).await > 0,
                "{name}: deliveries went to the pending list"
            );
        }
        store.meta().tidy_search_index().await.unwrap();
        if let Some(c) = &pending {
            assert_eq!(gin_pending_pages(c).await, 0, "{name}");
        }
        let q = TextQuery::new("dyneedl", &[Field::Body]).unwrap();
        let mut found = store.meta().search_index(&q).await.unwrap();
        found.sort_unstable();
        assert_eq!(found, keys, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_index_finds_candidates_per_field_and_drains_its_backlog() {
    use trimaran_store::search::Field;
    for (name, store, _dir) in stores().await {
        let ids = setup(&store, 1).await;
        let texts = [
            ("invoice march", "please pay"),
            ("hello", "the invoice is attached"),
            ("한글로된 제목", "본문"),
        ];
        let mut hashes = Vec::new();
        for (i, (subject, body)) in texts.iter().enumerate() {
            let mut msg = message(subject);
            msg.text = Some(IndexedText::new(SearchText {
                header: format!("subject: {subject}\nfrom: kim <kim@example.kr>\n"),
                body: body.to_string(),
            }));
            hashes.push(msg.blob.hash);
            store
                .deliver(local(&format!("t{i}"), msg, ids.clone()))
                .await
                .unwrap();
        }
        // A message stored without its text (as before the index existed) waits in the backlog.
        let mut bare = message("backlogged invoice");
        bare.text = None;
        let bare_hash = bare.blob.hash;
        store
            .deliver(local("bare", bare, ids.clone()))
            .await
            .unwrap();

        let meta = store.meta();
        let find = |needle: &str, fields: &[Field]| {
            let q = TextQuery::new(needle, fields).unwrap();
            async move {
                let mut v = meta.search_index(&q).await.unwrap();
                v.sort();
                v
            }
        };
        let expect = |v: Vec<BlobHash>| {
            let mut v: Vec<i64> = v.iter().map(search::index_key).collect();
            v.sort();
            v
        };
        assert_eq!(
            find("invoice", &[Field::Subject]).await,
            expect(vec![hashes[0]]),
            "{name}"
        );
        assert_eq!(
            find("nvoic", Field::all()).await,
            expect(vec![hashes[0], hashes[1]]),
            "{name}"
        );
        assert_eq!(
            find("글로", &[Field::Subject]).await,
            expect(vec![hashes[2]]),
            "{name}"
        );
        assert_eq!(
            find("글로", &[Field::Body]).await,
            Vec::<i64>::new(),
            "{name}"
        );
        assert_eq!(
            find("kim@example", &[Field::From]).await,
            expect(hashes.clone()),
            "{name}"
        );
        // Not indexed yet: to be checked against its text.
        assert_eq!(
            meta.search_unindexed().await.unwrap(),
            vec![bare_hash],
            "{name}"
        );

        let backlog = meta.search_backlog(10).await.unwrap();
        assert_eq!(backlog, vec![(bare_hash, None)], "{name}");
        let text = IndexedText::new(SearchText {
            header: "subject: backlogged invoice\n".into(),
            body: "backlogged invoice\n".into(),
        });
        meta.index_backlogged(&bare_hash, &text).await.unwrap();
        // A second time (another process that read the same backlog) changes nothing.
        meta.index_backlogged(&bare_hash, &text).await.unwrap();
        assert!(meta.search_backlog(10).await.unwrap().is_empty(), "{name}");
        assert!(meta.search_unindexed().await.unwrap().is_empty(), "{name}");
        assert_eq!(
            find("invoice", &[Field::Subject]).await,
            expect(vec![hashes[0], bare_hash]),
            "{name}"
        );
        assert_eq!(
            find("hello", &[Field::Subject]).await,
            expect(vec![hashes[1]]),
            "{name}"
        );
        // A text too long to index whole is always to be checked.
        let mut huge = message("huge");
        let body: String = (0..60_000).map(|i| format!("w{i} ")).collect();
        huge.text = Some(IndexedText::new(SearchText {
            header: "subject: huge\n".into(),
            body,
        }));
        let huge_hash = huge.blob.hash;
        store
            .deliver(local("huge", huge, ids.clone()))
            .await
            .unwrap();
        assert_eq!(
            meta.search_unindexed().await.unwrap(),
            vec![huge_hash],
            "{name}"
        );
        let stored = meta
            .search_texts(
                &[bare_hash],
                TextParts {
                    header: false,
                    body: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            stored,
            vec![(
                bare_hash,
                SearchText {
                    header: String::new(),
                    body: "backlogged invoice\n".into()
                }
            )],
            "{name}"
        );
    }
}

/// The same for system flags added and removed by racing writers: every answer shows its own
/// change made, the end state has all of them, and no MODSEQ is reported that names nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_system_flag_changes_all_land() {
    for (name, store, _dir) in stores().await {
        let a = setup(&store, 1).await[0];
        let inbox = mailbox_id(&store, a, INBOX).await;
        append_messages(&store, a, inbox, "system race", 3, flags::DRAFT).await;
        let changes = [
            (FlagOp::Add, flags::SEEN),
            (FlagOp::Add, flags::ANSWERED),
            (FlagOp::Add, flags::FLAGGED),
            (FlagOp::Add, flags::DELETED),
            (FlagOp::Remove, flags::DRAFT),
        ];
        let tasks: Vec<_> = (0..15)
            .map(|i| {
                let store = store.clone();
                let (op, bit) = changes[i % changes.len()];
                tokio::spawn(async move {
                    let change = flags_change(op, bit, &[], None);
                    let out = store
                        .meta()
                        .update_flags(a, inbox, &[1, 2, 3], &change)
                        .await;
                    (op, bit, out)
                })
            })
            .collect();
        let mut modseqs = Vec::new();
        for t in tasks {
            let (op, bit, out) = t.await.unwrap();
            let out = out.unwrap();
            assert_eq!(out.updated.len(), 3, "{name}");
            for e in &out.updated {
                // Each answer shows its own change made.
                assert_eq!(e.flags & bit != 0, op == FlagOp::Add, "{name}: {e:?}");
            }
            assert!(out.modseqs.len() <= 1, "{name}");
            modseqs.extend(out.modseqs);
        }
        let n = modseqs.len();
        modseqs.sort_unstable();
        modseqs.dedup();
        assert_eq!(modseqs.len(), n, "{name}: a MODSEQ was handed out twice");
        let want = flags::SEEN | flags::ANSWERED | flags::FLAGGED | flags::DELETED;
        for e in store.meta().mailbox_entries(inbox).await.unwrap() {
            assert_eq!(e.flags, want, "{name}: a change was lost: {e:?}");
        }
        let record = store.meta().mailbox(a, inbox).await.unwrap();
        assert_eq!(record.highestmodseq, *modseqs.last().unwrap(), "{name}");
        // Nothing left to change: no MODSEQ taken, the state reported as it is.
        let again = flags_change(FlagOp::Add, flags::SEEN, &[], None);
        let out = store
            .meta()
            .update_flags(a, inbox, &[1, 2, 3, 99], &again)
            .await
            .unwrap();
        assert!(out.modseqs.is_empty(), "{name}");
        assert_eq!(out.updated.len(), 3, "{name}");
        let after = store.meta().mailbox(a, inbox).await.unwrap();
        assert_eq!(after.highestmodseq, record.highestmodseq, "{name}");
        let err = store
            .meta()
            .update_flags(a, inbox + 1000, &[1], &again)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{name}: {err:?}");
    }
}

/// Many accounts changing flags at once (on PostgreSQL, written in groups): every change
/// lands under its own MODSEQ of its account, UNCHANGEDSINCE still holds, nobody reaches a
/// mailbox of another account, and an account locked by another writer is waited for, not
/// skipped or failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_flag_changes_across_accounts_all_land() {
    const ACCOUNTS: usize = 12;
    const ROUNDS: usize = 10;
    for (name, store, backing) in stores().await {
        let accounts = setup(&store, ACCOUNTS).await;
        let mut inboxes = Vec::new();
        let mut before = Vec::new();
        for &a in &accounts {
            let inbox = mailbox_id(&store, a, INBOX).await;
            append_messages(&store, a, inbox, &format!("across {a}"), 4, 0).await;
            inboxes.push(inbox);
            before.push(store.meta().mailbox(a, inbox).await.unwrap().highestmodseq);
        }
        // Another writer holds the first account's row for a while (PostgreSQL only).
        let holder = match &backing.postgres {
            Some(url) => {
                let client = own_connection(url).await;
                client.batch_execute("BEGIN").await.unwrap();
                client
                    .execute(
                        "SELECT id FROM accounts WHERE id = $1 FOR UPDATE",
                        &[&accounts[0]],
                    )
                    .await
                    .unwrap();
                Some(tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    client.batch_execute("COMMIT").await.unwrap();
                }))
            }
            None => None,
        };
        let mut tasks = Vec::new();
        for (n, (&a, &inbox)) in accounts.iter().zip(&inboxes).enumerate() {
            let store = store.clone();
            let stale = before[n];
            let elsewhere = inboxes[(n + 1) % ACCOUNTS];
            tasks.push(tokio::spawn(async move {
                let mut modseqs = Vec::new();
                for r in 0..ROUNDS {
                    let change = flags_change(FlagOp::Add, 0, &[&format!("k{r}")], None);
                    let out = store
                        .meta()
                        .update_flags(a, inbox, &[1, 2, 3, 4], &change)
                        .await
                        .unwrap();
                    assert_eq!(out.updated.len(), 4);
                    assert_eq!(out.modseqs.len(), 1);
                    assert!(out.updated.iter().all(|e| e.modseq == out.modseqs[0]));
                    modseqs.push(out.modseqs[0]);
                    // Changed since `stale` by the first round: left alone, reported.
                    let guarded = flags_change(FlagOp::Add, 0, &["late"], Some(stale));
                    let out = store
                        .meta()
                        .update_flags(a, inbox, &[2], &guarded)
                        .await
                        .unwrap();
                    assert_eq!(out.modified, vec![2]);
                    assert!(out.updated.is_empty() && out.modseqs.is_empty());
                    // Another account's mailbox is not found from this account (G4).
                    let intrusion = flags_change(FlagOp::Add, 0, &["intruder"], None);
                    let err = store
                        .meta()
                        .update_flags(a, elsewhere, &[1], &intrusion)
                        .await
                        .unwrap_err();
                    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
                }
                modseqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap());
        }
        if let Some(h) = holder {
            h.await.unwrap();
        }
        let want: Vec<String> = (0..ROUNDS).map(|r| format!("k{r}")).collect();
        for (n, modseqs) in all.iter().enumerate() {
            assert!(
                modseqs.windows(2).all(|w| w[0] < w[1]),
                "{name}: MODSEQs of account {n} not increasing: {modseqs:?}"
            );
            let (a, inbox) = (accounts[n], inboxes[n]);
            let record = store.meta().mailbox(a, inbox).await.unwrap();
            assert_eq!(record.highestmodseq, *modseqs.last().unwrap(), "{name}");
            for e in store.meta().mailbox_entries(inbox).await.unwrap() {
                let mut kw = e.keywords.clone();
                kw.sort();
                assert_eq!(kw, want, "{name}: account {n}, message {}", e.uid);
                assert_eq!(e.modseq, *modseqs.last().unwrap(), "{name}");
            }
            let delta = store
                .meta()
                .mailbox_delta(a, inbox, before[n])
                .await
                .unwrap();
            assert_eq!(delta.changed.len(), 4, "{name}");
        }
    }
}

/// Sessions changing the flags of the same messages at once must neither lose a change nor
/// hand out one MODSEQ twice (RFC 7162 §3.1.1: a MODSEQ names one state of one message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flag_changes_to_the_same_messages_all_land() {
    for (name, store, _dir) in stores().await {
        let a = setup(&store, 1).await[0];
        let inbox = mailbox_id(&store, a, INBOX).await;
        append_messages(&store, a, inbox, "race", 3, 0).await;
        let base = store.meta().mailbox(a, inbox).await.unwrap().highestmodseq;
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let change = flags_change(FlagOp::Add, 0, &[&format!("k{i}")], None);
                    store
                        .meta()
                        .update_flags(a, inbox, &[1, 2, 3], &change)
                        .await
                })
            })
            .collect();
        let mut modseqs = Vec::new();
        for t in tasks {
            let out = t.await.unwrap().unwrap();
            assert_eq!(out.updated.len(), 3, "{name}");
            let m = out.updated[0].modseq;
            assert!(out.updated.iter().all(|e| e.modseq == m), "{name}");
            modseqs.push(m);
        }
        modseqs.sort_unstable();
        modseqs.dedup();
        assert_eq!(modseqs.len(), 16, "{name}: a MODSEQ was handed out twice");
        let entries = store.meta().mailbox_entries(inbox).await.unwrap();
        for e in &entries {
            assert_eq!(e.keywords.len(), 16, "{name}: a keyword was lost: {e:?}");
        }
        let record = store.meta().mailbox(a, inbox).await.unwrap();
        assert_eq!(record.highestmodseq, *modseqs.last().unwrap(), "{name}");
        let delta = store.meta().mailbox_delta(a, inbox, base).await.unwrap();
        assert_eq!(delta.changed.len(), 3, "{name}");
        // A mailbox that is gone is reported as such, not as a change to nothing.
        let err = store
            .meta()
            .update_flags(
                a,
                inbox + 1000,
                &[1],
                &flags_change(FlagOp::Add, 1, &[], None),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{name}: {err:?}");
    }
}
