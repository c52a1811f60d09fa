//! Message bodies in an S3-compatible object store (tested on Garage, three zones, fsync on),
//! beside the metadata in SQL. Chosen with a `[blobs]` section in the configuration; without
//! one, bodies stay in the metadata database.
//!
//! Object layout. A body lives at `[PREFIX/]blobs/HH/HASH`, where HASH is the BLAKE3 hex of the
//! original bytes and HH its first two characters. S3 itself needs no fan-out, but a scrub or a
//! backup can then list and work through 256 independent prefixes in parallel.
//!
//! The object is a fixed 14-byte header followed by the stored bytes (zstd frame or raw):
//!
//! ```text
//! "TRMB" | version (1) | compression code (1) | original size (u64, big-endian) | data
//! ```
//!
//! The header is in the object rather than in `x-amz-meta-*` metadata so that an object is
//! self-describing wherever it is copied (a backup tool or `rclone` may drop user metadata), and
//! so that every byte we need to rebuild a [`StoredBlob`] comes from the one GET whose bytes the
//! read path verifies: a damaged header shows up as a wrong size or an undecodable frame, hence
//! as corruption, never as a different message.
//!
//! Errors (DESIGN.md G2). "No such key" is `Ok(None)`, which [`crate::Store::read_blob`] reports
//! as a missing body. Everything else — timeouts, refused connections, 5xx, lost quorum, and also
//! bad credentials or a missing bucket (a configuration fault: ours, not the sender's) — is
//! [`StoreError::Unavailable`], which callers retry for up to `store_wait` and then answer with a
//! 4xx.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use crate::blob::{BlobHash, BlobStore, Compression, StoredBlob};
use crate::error::{Result, StoreError};

/// Where the bodies go. Fields left `None` come from the standard AWS environment variables
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`), as the AWS tools read them.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// `s3://BUCKET` or `s3://BUCKET/PREFIX`.
    pub url: String,
    /// e.g. `http://127.0.0.1:3900`; an `http://` endpoint is allowed (loopback, private
    /// networks). Requests use path-style addressing (`ENDPOINT/BUCKET/KEY`), which Garage and
    /// most self-hosted stores serve without wildcard DNS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("S3Config")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// The bucket and key prefix named by `url`.
    pub fn bucket_and_prefix(&self) -> Result<(String, String)> {
        let rest = self.url.strip_prefix("s3://").ok_or_else(|| {
            StoreError::Invalid(format!(
                "blob store URL {:?}: expected s3://BUCKET[/PREFIX]",
                self.url
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Invalid(format!(
                "blob store URL {:?} names no bucket",
                self.url
            )));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }
}

/// Time to open a TCP (and TLS) connection. A reachable endpoint answers in milliseconds; a
/// dead one should be reported soon enough for the caller's retry loop to try again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time the store gets to answer, beyond moving the bytes. A stuck request is abandoned after
/// it and tried again (by the callers' loop) rather than waited for: Garage 2.5 can hold a
/// request for as long as it takes to notice that a peer it sent part of it to has died
/// (seen after a SIGKILL: the request hung until the client gave up, and the next one went
/// through), so giving up early is what lets the retry succeed within `store_wait`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Slowest transfer rate allowed for before a request counts as stuck: bodies are up to
/// `smtp.max_message_size` (50 MB by default), so a large one gets its transfer time on top.
const MIN_RATE: u64 = 1 << 20;
/// The client's own bound on any one request, whatever its size: a backstop to the timeouts
/// above.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a request moving `bytes` may take before it is abandoned.
fn deadline_for(bytes: u64) -> Duration {
    ANSWER_TIMEOUT + Duration::from_secs(bytes / MIN_RATE)
}

/// The client's own retries of a failed request (connection errors, 5xx, timeouts of safe
/// requests). Few and short: the callers' loop (`store_wait`, 60 s) bounds the total wait and
/// decides when to answer 4xx; retrying here only smooths over a dropped connection.
const MAX_RETRIES: usize = 2;
const RETRY_TIMEOUT: Duration = Duration::from_secs(10);

const MAGIC: &[u8; 4] = b"TRMB";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 1 + 8;

pub struct S3BlobStore {
    client: AmazonS3,
    prefix: String,
    /// For messages: `s3://BUCKET/PREFIX at ENDPOINT`.
    name: String,
}

impl S3BlobStore {
    /// Builds the client. Nothing is sent yet: an unreachable store shows up on first use, as
    /// `Unavailable`, so a server can start while its object store is still coming up.
    pub fn new(config: &S3Config) -> Result<S3BlobStore> {
        // reqwest is built without a default crypto provider; use ring, as the rest of
        // Trimaran's TLS does. Failing means one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (bucket, prefix) = config.bucket_and_prefix()?;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(false)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_allow_http(true),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_TIMEOUT,
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(id) = &config.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::Invalid(format!("blob store {}: {e}", config.url)))?;
        let endpoint = config
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .unwrap_or_else(|| "AWS".into());
        Ok(S3BlobStore {
            client,
            prefix,
            name: format!("{} at {endpoint}", config.url),
        })
    }

    /// The object key of a body (see the module documentation).
    pub fn key(&self, hash: &BlobHash) -> String {
        let hex = hash.to_hex();
        let key = format!("blobs/{}/{hex}", &hex[..2]);
        if self.prefix.is_empty() {
            key
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn unavailable(&self, op: &str, hash: &BlobHash, e: object_store::Error) -> StoreError {
        StoreError::Unavailable(format!("blob store {}: {op} {hash}: {e}", self.name))
    }

    fn stuck(&self, op: &str, hash: &BlobHash, limit: Duration) -> StoreError {
        StoreError::Unavailable(format!(
            "blob store {}: {op} {hash}: no answer within {} s",
            self.name,
            limit.as_secs()
        ))
    }
}

/// The object's bytes: header, then the stored data.
pub fn encode_object(blob: &StoredBlob) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + blob.data.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(blob.compression as i64 as u8);
    out.extend_from_slice(&blob.size.to_be_bytes());
    out.extend_from_slice(&blob.data);
    out
}

/// The blob an object holds, unverified (the read path verifies it). An object that is not in
/// our format at all is corruption.
pub fn decode_object(hash: &BlobHash, object: &[u8]) -> Result<StoredBlob> {
    let corrupt = |detail: &str| StoreError::Corrupt {
        hash: hash.to_hex(),
        detail: format!("object store: {detail}"),
    };
    if object.len() < HEADER_LEN || &object[..4] != MAGIC {
        return Err(corrupt("object has no Trimaran blob header"));
    }
    if object[4] != VERSION {
        return Err(corrupt(&format!(
            "unknown blob format version {}",
            object[4]
        )));
    }
    let compression = Compression::from_code(object[5] as i64)
        .map_err(|_| corrupt(&format!("unknown compression code {}", object[5])))?;
    let size = u64::from_be_bytes(object[6..HEADER_LEN].try_into().expect("8 bytes"));
    Ok(StoredBlob {
        hash: *hash,
        size,
        compression,
        data: object[HEADER_LEN..].to_vec(),
    })
}

#[async_trait]
impl BlobStore for S3BlobStore {
    /// A plain PUT: the same hash always carries the same bytes, so writing a body again (a
    /// retried delivery, the same message to another account) replaces it with itself, and
    /// even repairs an object that was damaged meanwhile. S3 answers 200 only once the object
    /// is stored (with Garage in consistent mode: on a write quorum of zones, fsynced), which
    /// is what G1 needs before the metadata commit.
    async fn put_blob(&self, blob: &StoredBlob) -> Result<()> {
        let path = Path::from(self.key(&blob.hash));
        let object = encode_object(blob);
        let limit = deadline_for(object.len() as u64);
        let put = self.client.put(&path, PutPayload::from(object));
        match tokio::time::timeout(limit, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.unavailable("writing", &blob.hash, e)),
            Err(_) => Err(self.stuck("writing", &blob.hash, limit)),
        }
    }

    async fn replace_blob(&self, blob: &StoredBlob) -> Result<()> {
        // A PUT replaces the object whole.
        self.put_blob(blob).await
    }

    async fn get_blob(&self, hash: &BlobHash) -> Result<Option<StoredBlob>> {
        let path = Path::from(self.key(hash));
        let object = match tokio::time::timeout(ANSWER_TIMEOUT, self.client.get(&path)).await {
            Err(_) => return Err(self.stuck("reading", hash, ANSWER_TIMEOUT)),
            Ok(Ok(got)) => {
                // The body's own transfer time, now that its size is known.
                let limit = deadline_for(got.meta.size);
                match tokio::time::timeout(limit, got.bytes()).await {
                    Ok(read) => read,
                    Err(_) => return Err(self.stuck("reading", hash, limit)),
                }
            }
            Ok(Err(e)) => Err(e),
        };
        match object {
            Ok(bytes) => decode_object(hash, &bytes).map(Some),
            Err(object_store::Error::NotFound { .. }) => {
                // S3 answers 404 for a missing bucket too (NoSuchBucket), which is a
                // configuration fault, not a lost body. Listing the key's prefix succeeds only
                // when the bucket is there; the extra request is paid only for absent bodies.
                let dir = Path::from(self.key(hash).rsplit_once('/').expect("key has /").0);
                let list = self.client.list_with_delimiter(Some(&dir));
                match tokio::time::timeout(ANSWER_TIMEOUT, list).await {
                    Ok(Ok(_)) => Ok(None),
                    Ok(Err(e)) => Err(self.unavailable("checking the bucket for", hash, e)),
                    Err(_) => Err(self.stuck("checking the bucket for", hash, ANSWER_TIMEOUT)),
                }
            }
            Err(e) => Err(self.unavailable("reading", hash, e)),
        }
    }

    fn shares_metadata_transaction(&self) -> bool {
        false
    }
}

/// Shared by [`crate::Store`] constructors.
pub fn open(config: &S3Config) -> Result<Arc<dyn BlobStore>> {
    Ok(Arc::new(S3BlobStore::new(config)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_round_trip_and_damaged_headers() {
        let blob = StoredBlob::encode(&b"Subject: x\r\n\r\nbody\r\n".repeat(100));
        let object = encode_object(&blob);
        let back = decode_object(&blob.hash, &object).unwrap();
        assert_eq!(
            back.decode_verified().unwrap(),
            blob.decode_verified().unwrap()
        );

        for damage in [0usize, 4, 5] {
            let mut bad = object.clone();
            bad[damage] ^= 0x80;
            assert!(matches!(
                decode_object(&blob.hash, &bad),
                Err(StoreError::Corrupt { .. })
            ));
        }
        // A damaged size is caught by verification, not by the header.
        let mut bad = object.clone();
        bad[HEADER_LEN - 1] ^= 1;
        let read = decode_object(&blob.hash, &bad).unwrap();
        assert!(matches!(
            read.decode_verified(),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(decode_object(&blob.hash, b"TRMB").is_err());
    }

    #[test]
    fn urls() {
        let c = |url: &str| S3Config {
            url: url.into(),
            ..S3Config::default()
        };
        assert_eq!(
            c("s3://mail").bucket_and_prefix().unwrap(),
            ("mail".into(), "".into())
        );
        assert_eq!(
            c("s3://mail/site-a/").bucket_and_prefix().unwrap(),
            ("mail".into(), "site-a".into())
        );
        assert!(c("s3://").bucket_and_prefix().is_err());
        assert!(c("https://mail").bucket_and_prefix().is_err());
    }
}
