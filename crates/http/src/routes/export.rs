//! `GET /export.zip[?mailbox=NAME]`: the authenticated user's own mail as an eml-zip
//! (DESIGN.md G7), streamed as it is made.
//!
//! The zip is written by [`trimaran_export::emlzip::write_eml_zip`] on a blocking thread into
//! a bounded channel whose other end is the response body: a few chunks in flight at most, no
//! temporary file, and a slow client slows the writer down. When the client goes away the
//! body is dropped, the writer's next send fails and the export stops.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use tokio::sync::mpsc;
use trimaran_core::store::AccountRecord;

use crate::auth;
use crate::listener::Peer;
use crate::HttpServer;

/// Bytes per chunk sent to the client, and chunks waiting in the channel: what one download
/// holds besides the message being written.
const CHUNK: usize = 64 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    mailbox: Option<String>,
}

pub async fn export(
    State(server): State<Arc<HttpServer>>,
    Extension(Peer(peer)): Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    // Credentials first: whoever has none learns nothing, not even whether a mailbox exists.
    let account = match auth::account(&server.core, peer.ip(), &headers).await {
        Ok(account) => account,
        Err(response) => return response,
    };
    // A misspelt parameter is an error rather than a silent export of everything.
    let params = match Query::<Params>::try_from_uri(&uri) {
        Ok(Query(p)) => p,
        Err(e) => return bad_request(format!("{}\n", e.body_text())),
    };
    let mailbox = match params.mailbox {
        None => None,
        Some(name) => match mailbox_of(&server, &account, &name).await {
            Ok(name) => Some(name),
            Err(response) => return response,
        },
    };
    let Ok(place) = server.exports.clone().try_acquire_owned() else {
        tracing::info!(user = %account.address, "HTTPS export refused: too many exports running");
        return auth::unavailable();
    };
    let head = ok_head(&account.address);
    if method == Method::HEAD {
        // The same head as GET, and no export started for it. A body of unknown length that
        // ends at once keeps hyper and axum from announcing Content-Length: 0.
        let (_, rx) = mpsc::channel(1);
        return head
            .body(Body::from_stream(Chunks(rx)))
            .unwrap_or_else(|_| auth::unavailable());
    }
    tracing::info!(%peer, user = %account.address, mailbox = mailbox.as_deref().unwrap_or("*"), "HTTPS export started");
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let rt = tokio::runtime::Handle::current();
    let store = server.core.store.clone();
    tokio::task::spawn_blocking(move || {
        let _place = place;
        let mut out = ChannelWriter::new(tx);
        let written = trimaran_export::emlzip::write_eml_zip(
            &rt,
            &store,
            account.id,
            mailbox.as_deref(),
            &mut out,
        )
        .and_then(|report| {
            out.flush()?;
            Ok(report)
        });
        match written {
            Ok(report) => {
                // Left out of the zip and its manifest, never served (G5); the operator's
                // scrub repairs it.
                for skipped in &report.skipped {
                    tracing::warn!(user = %account.address, "HTTPS export left out {skipped}");
                }
                tracing::info!(user = %account.address, messages = report.messages, "HTTPS export sent");
            }
            Err(_) if out.gone => {
                tracing::info!(%peer, user = %account.address, "HTTPS export stopped: the client went away");
            }
            Err(e) => {
                tracing::warn!(user = %account.address, error = %format!("{e:#}"), "HTTPS export failed");
                // An error instead of the last chunk: hyper closes the connection without
                // ending the chunked body (RFC 9112 §7.1), so the client sees a download cut
                // short, never a truncated zip that looks complete.
                out.abort(io::Error::other("export failed"));
            }
        }
    });
    head.body(Body::from_stream(Chunks(rx)))
        .unwrap_or_else(|_| auth::unavailable())
}

/// The account's own mailbox of that name (INBOX in any case), or 400/404/503.
async fn mailbox_of(
    server: &HttpServer,
    account: &AccountRecord,
    name: &str,
) -> Result<String, Response> {
    // As IMAP CREATE checks a name; names of other users' shared mailboxes are refused here,
    // and would not be found below anyway: only the account's own mailboxes are listed.
    let name =
        trimaran_export::checked_mailbox_name(name).map_err(|e| bad_request(format!("{e:#}\n")))?;
    let core = &server.core;
    let wait = core.config.store_wait();
    let boxes = trimaran_core::delivery::retry(wait, || core.store.meta().mailboxes(account.id))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "HTTPS export: store unavailable");
            auth::unavailable()
        })?;
    if boxes.iter().any(|b| b.name == name) {
        Ok(name)
    } else {
        Err((StatusCode::NOT_FOUND, "No such mailbox.\n").into_response())
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// The 200 response's head. No Content-Length: the size is known only at the end, so hyper
/// sends the body chunked (RFC 9112 §7.1).
fn ok_head(address: &str) -> axum::http::response::Builder {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/zip")
        .header(header::CONTENT_DISPOSITION, disposition(address))
        // Private mail: no shared or browser cache keeps a copy (RFC 9111 §5.2.2.5).
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
}

/// `attachment; filename="<address>.zip"` (RFC 6266 §4.1). An address that is not plain
/// printable ASCII without quotes or backslashes gets a neutral quoted name and its own in
/// `filename*` (RFC 8187 UTF-8 percent-encoding), which RFC 6266 §4.3 has clients prefer.
fn disposition(address: &str) -> HeaderValue {
    let file = format!("{address}.zip");
    let plain = file
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    let value = if plain {
        format!("attachment; filename=\"{file}\"")
    } else {
        let mut encoded = String::new();
        for b in file.bytes() {
            // RFC 8187 §3.2.1 attr-char.
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        format!("attachment; filename=\"export.zip\"; filename*=UTF-8''{encoded}")
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}

/// The blocking writer's end of the channel: buffers up to [`CHUNK`] bytes and sends them,
/// waiting while the channel is full.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    /// The receiver is gone: the client disconnected (or the connection was dropped).
    gone: bool,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            gone: false,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            self.gone = true;
            io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
        })
    }

    fn abort(self, error: io::Error) {
        let _ = self.tx.blocking_send(Err(error));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        // At most a chunk's room per call, so memory stays bounded whatever the caller writes.
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The response body's end of the channel.
struct Chunks(mpsc::Receiver<io::Result<Bytes>>);

impl futures_core::Stream for Chunks {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_names_the_address() {
        assert_eq!(
            disposition("alice@example.test"),
            "attachment; filename=\"alice@example.test.zip\""
        );
        assert_eq!(
            disposition("jörg@example.test"),
            "attachment; filename=\"export.zip\"; filename*=UTF-8''j%C3%B6rg%40example.test.zip"
        );
        assert_eq!(
            disposition("\"odd\\\"@example.test"),
            "attachment; filename=\"export.zip\"; filename*=UTF-8''%22odd%5C%22%40example.test.zip"
        );
    }

    #[test]
    fn writer_sends_bounded_chunks_and_stops_when_the_reader_is_gone() {
        let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let reader = std::thread::spawn(move || {
            let mut sizes = Vec::new();
            while let Some(chunk) = rx.blocking_recv() {
                sizes.push(chunk.unwrap().len());
                if sizes.len() == 3 {
                    return sizes; // the client goes away
                }
            }
            sizes
        });
        let mut out = ChannelWriter::new(tx);
        let big = vec![7u8; 10 * CHUNK];
        let err = loop {
            if let Err(e) = out.write_all(&big) {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(out.gone);
        assert_eq!(reader.join().unwrap(), vec![CHUNK; 3]);
    }

    #[test]
    fn flush_sends_what_is_buffered() {
        let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let mut out = ChannelWriter::new(tx);
        out.write_all(b"PK").unwrap();
        out.flush().unwrap();
        out.flush().unwrap();
        drop(out);
        assert_eq!(&rx.blocking_recv().unwrap().unwrap()[..], b"PK");
        assert!(rx.blocking_recv().is_none());
    }
}
