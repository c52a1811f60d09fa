//! Bodies in an S3 object store (src/s3.rs), against a real Garage cluster: these run when
//! TRIMARAN_TEST_S3 names one, either as the JSON `scripts/garage up DIR` prints or as the path
//! of its DIR/cluster.json. The metadata runs on SQLite, and on PostgreSQL too when
//! TRIMARAN_TEST_POSTGRES is set. The unreachable-endpoint test needs no service and always runs.

mod common;
use common::{deliver, rand_id};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use trimaran_store::s3::{S3BlobStore, S3Config};
use trimaran_store::*;

/// The cluster's S3 settings, under a key prefix of this test's own so that tests (and runs)
/// never see each other's objects.
fn garage() -> Option<S3Config> {
    let raw = std::env::var("TRIMARAN_TEST_S3").ok()?;
    let text = if raw.trim_start().starts_with('{') {
        raw
    } else {
        std::fs::read_to_string(&raw).expect("TRIMARAN_TEST_S3: cluster.json")
    };
    let c: serde_json::Value = serde_json::from_str(&text).expect("TRIMARAN_TEST_S3 is JSON");
    let s = |k: &str| {
        Some(
            c[k].as_str()
                .unwrap_or_else(|| panic!("no {k}"))
                .to_string(),
        )
    };
    Some(S3Config {
        url: format!(
            "s3://{}/test-{:016x}",
            c["bucket"].as_str().unwrap(),
            rand_id()
        ),
        endpoint: s("endpoint"),
        region: s("region"),
        access_key_id: s("key_id"),
        secret_access_key: s("secret"),
    })
}

/// A client of the test's own, to look at and damage objects behind the store's back.
fn raw_client(c: &S3Config) -> object_store::aws::AmazonS3 {
    let (bucket, _) = c.bucket_and_prefix().unwrap();
    AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(c.endpoint.clone().unwrap())
        .with_region(c.region.clone().unwrap())
        .with_access_key_id(c.access_key_id.clone().unwrap())
        .with_secret_access_key(c.secret_access_key.clone().unwrap())
        .with_allow_http(true)
        .build()
        .unwrap()
}

/// A store pointed at a loopback port that is not Garage (nothing, or something silent).
fn loopback_store(bucket: &str, port: u16) -> S3BlobStore {
    S3BlobStore::new(&S3Config {
        url: format!("s3://{bucket}"),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("garage".into()),
        access_key_id: Some("GK0".into()),
        secret_access_key: Some("0".into()),
    })
    .unwrap()
}

fn compressible() -> Vec<u8> {
    b"Subject: compressible\r\n\r\nthe same line again and again\r\n".repeat(2000)
}

fn incompressible() -> Vec<u8> {
    // xorshift noise: zstd cannot shrink it, so it is stored raw.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Stores with S3 bodies: SQLite metadata, and PostgreSQL when the test script provides one.
async fn stores(c: &S3Config) -> Vec<(String, Arc<Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = StoreUrl::Sqlite(dir.path().join("t.db"));
    let sqlite = Store::open_with_blobs(&url, Some(c)).await.unwrap();
    let mut out = vec![("sqlite".to_string(), sqlite, Some(dir))];
    if let Ok(base) = std::env::var("TRIMARAN_TEST_POSTGRES") {
        let db = format!("t{:016x}", rand_id());
        let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        let (server, _) = base.rsplit_once('/').unwrap();
        let url = StoreUrl::Postgres(format!("{server}/{db}"));
        let pg = Store::open_with_blobs(&url, Some(c)).await.unwrap();
        out.push(("postgres".to_string(), pg, None));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_round_trip_through_garage_and_stay_out_of_the_database() {
    let Some(c) = garage() else { return };
    let raw_client = raw_client(&c);
    for (name, store, dir) in stores(&c).await {
        store.meta().add_domain("example.test").await.unwrap();
        let id = store
            .meta()
            .add_account("a@example.test", "x")
            .await
            .unwrap();
        for (body, compression) in [
            (compressible(), Compression::Zstd),
            (incompressible(), Compression::None),
        ] {
            assert_eq!(StoredBlob::encode(&body).compression, compression);
            let hash = deliver(&store, id, &body).await;
            assert_eq!(store.read_blob(&hash).await.unwrap(), body, "{name}");
            // The object is where the layout says, holding header + stored bytes.
            let blobs = S3BlobStore::new(&c).unwrap();
            let key = blobs.key(&hash);
            assert!(key.ends_with(&format!("blobs/{}/{hash}", &hash.to_hex()[..2])));
            let meta = raw_client.head(&Path::from(key)).await.unwrap();
            let stored = StoredBlob::encode(&body);
            assert_eq!(meta.size, 14 + stored.data.len() as u64, "{name}");
        }
        if let Some(dir) = dir {
            let db = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
            let n: i64 = db
                .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 0, "bodies must not be in the metadata database");
        }
        assert_eq!(store.corrupt_reads(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_are_idempotent_and_missing_bodies_are_none() {
    let Some(c) = garage() else { return };
    let blobs = S3BlobStore::new(&c).unwrap();
    let blob = StoredBlob::encode(&compressible());
    blobs.put_blob(&blob).await.unwrap();
    blobs.put_blob(&blob).await.unwrap();
    let back = blobs.get_blob(&blob.hash).await.unwrap().unwrap();
    assert_eq!(back.size, blob.size);
    assert_eq!(back.compression, blob.compression);
    assert_eq!(back.data, blob.data);
    let key = blobs.key(&blob.hash);
    let dir = Path::from(key.rsplit_once('/').unwrap().0);
    let listed: Vec<_> = raw_client(&c)
        .list(Some(&dir))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|o| o.unwrap().location.to_string())
        .collect();
    assert_eq!(listed, vec![key], "one object for one hash");

    let absent = BlobHash::of(b"never stored");
    assert!(blobs.get_blob(&absent).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_objects_are_reported_corrupt_and_never_served() {
    let Some(c) = garage() else { return };
    let raw = raw_client(&c);
    let blobs = S3BlobStore::new(&c).unwrap();
    for (name, store, _dir) in stores(&c).await {
        store.meta().add_domain("example.test").await.unwrap();
        let id = store
            .meta()
            .add_account("a@example.test", "x")
            .await
            .unwrap();
        for (i, body) in [compressible(), incompressible()].iter().enumerate() {
            // A body of its own per back end, so that each store sees its own damage.
            let mut body = body.clone();
            body.extend_from_slice(format!("{name}{i}").as_bytes());
            let hash = deliver(&store, id, &body).await;
            let path = Path::from(blobs.key(&hash));
            let mut object = raw
                .get(&path)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec();
            let mid = 14 + (object.len() - 14) / 2;
            object[mid] ^= 0x01;
            raw.put(&path, PutPayload::from(object)).await.unwrap();
            let before = store.corrupt_reads();
            let err = store.read_blob(&hash).await.unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{name}: {err}");
            assert_eq!(store.corrupt_reads(), before + 1, "{name}");
        }
        // An object that is not a blob at all (no header) is corruption too.
        let hash = deliver(&store, id, format!("other {name}").as_bytes()).await;
        raw.put(
            &Path::from(blobs.key(&hash)),
            PutPayload::from_static(b"hi"),
        )
        .await
        .unwrap();
        let before = store.corrupt_reads();
        let err = store.read_blob(&hash).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{name}: {err}");
        assert_eq!(store.corrupt_reads(), before + 1, "{name}");
        // A deleted one is reported as missing, also corruption.
        raw.delete(&Path::from(blobs.key(&hash))).await.unwrap();
        let err = store.read_blob(&hash).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{name}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_missing_buckets_are_unavailable() {
    let Some(c) = garage() else { return };
    let blob = StoredBlob::encode(b"credentials");
    let wrong_secret = S3Config {
        secret_access_key: Some("0".repeat(64)),
        ..c.clone()
    };
    let no_bucket = S3Config {
        url: format!("s3://no-such-bucket-{:x}", rand_id()),
        ..c.clone()
    };
    for config in [wrong_secret, no_bucket] {
        let blobs = S3BlobStore::new(&config).unwrap();
        let err = blobs.put_blob(&blob).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        let err = blobs.get_blob(&blob.hash).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }
}

/// Nothing listens: every operation must give up with `Unavailable`, quickly (connect errors
/// are retried twice, with short backoff), so that the caller's retry loop stays in charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_unavailable_fast() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let blobs = loopback_store("nowhere", port);
    let blob = StoredBlob::encode(b"to nowhere");
    let started = Instant::now();
    let err = blobs.put_blob(&blob).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.is_retryable());
    let err = blobs.get_blob(&blob.hash).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

/// An endpoint that accepts connections and never answers (a hung node, a half-dead peer):
/// requests are abandoned after a few seconds, as `Unavailable`, so the caller can try again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_is_unavailable_in_bounded_time() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let blobs = loopback_store("silent", port);
    let blob = StoredBlob::encode(b"into the void");
    let started = Instant::now();
    let err = blobs.put_blob(&blob).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let err = blobs.get_blob(&blob.hash).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    hold.abort();
}
