//! DATA decoding (`trimaran_smtp::parser::data::DataDecoder` into a `MessageSink`), on arbitrary
//! bytes cut into arbitrary chunks as the network would deliver them.
//!
//! Checked against a reference written here from RFC 5321 §4.1.1.4 and §4.5.2: only CRLF "."
//! CRLF (or "." CRLF at the very start) ends the content, a leading "." of any other line is
//! dropped, nothing else changes; the bytes after the end are left unread. The answer does not
//! depend on where the chunks are cut, the size limit is enforced exactly, and the decoder never
//! claims more bytes than it was given.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tokio::sync::Semaphore;
use trimaran_fuzz::hex;
use trimaran_smtp::parser::data::{DataDecoder, MessageSink, Overflow};

fuzz_target!(|data: &[u8]| {
    // First byte: how to cut; second: the size limit. The rest is what the client sends.
    let [cut, limit, stream @ ..] = data else {
        return;
    };
    let limit = match limit {
        0..=63 => u64::MAX,
        n => u64::from(*n) * 4,
    };
    let want = reference(stream);
    let whole = decode(stream, &[usize::MAX], limit);
    let mut sizes: Vec<usize> = stream
        .iter()
        .take(32)
        .map(|&b| usize::from(b ^ cut) % 7 + 1)
        .collect();
    if sizes.is_empty() {
        sizes.push(1);
    }
    let chunked = decode(stream, &sizes, limit);
    let bytewise = decode(stream, &[1], limit);
    assert_eq!(whole, chunked, "chunking changed the result");
    assert_eq!(whole, bytewise, "byte-by-byte feeding changed the result");

    let (content, used) = whole;
    match want {
        Some((expected, end)) => {
            assert_eq!(used, Some(end), "end marker found at another place");
            if expected.len() as u64 > limit {
                assert_eq!(content, Err(Overflow::TooBig), "limit not enforced");
            } else {
                assert_eq!(
                    content.as_deref(),
                    Ok(expected.as_slice()),
                    "decoded content differs from the reference; input {}",
                    hex(stream)
                );
            }
        }
        None => assert_eq!(used, None, "end marker found where there is none"),
    }
});

/// The content and the offset just past the end marker, or None without an end marker.
fn reference(stream: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut line_start = 0;
    loop {
        // Lines end at CRLF only; a bare CR or LF is text.
        let rest = &stream[line_start..];
        let line_len = rest.windows(2).position(|w| w == b"\r\n");
        if rest.starts_with(b".\r\n") {
            return Some((out, line_start + 3));
        }
        let line = match line_len {
            Some(n) => &rest[..n + 2],
            None => rest,
        };
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        line_start += line_len? + 2;
    }
}

type Decoded = (Result<Vec<u8>, Overflow>, Option<usize>);

/// Feeds `stream` in chunks of the given sizes (cycled); the content (when the end was seen)
/// and where the end marker ended.
fn decode(stream: &[u8], sizes: &[usize], limit: u64) -> Decoded {
    let budget = Arc::new(Semaphore::new(1 << 20));
    let mut decoder = DataDecoder::default();
    let mut sink = MessageSink::new(limit, budget);
    let mut at = 0;
    let mut end = None;
    for &size in sizes.iter().cycle() {
        if at >= stream.len() {
            break;
        }
        let chunk = &stream[at..stream.len().min(at.saturating_add(size))];
        let (used, done) = decoder.feed(chunk, &mut sink);
        assert!(used <= chunk.len(), "decoder used more than it was given");
        if let Some(over) = sink.check().err() {
            assert_eq!(over, Overflow::TooBig);
            assert_eq!(sink.len(), 0, "an overflowing sink still holds data");
        } else {
            assert!(sink.len() as u64 <= limit, "sink holds more than its limit");
        }
        at += used;
        if done {
            end = Some(at);
            break;
        }
        assert_eq!(used, chunk.len(), "decoder left bytes before the end");
    }
    if end.is_none() {
        // Nothing to compare without an end: the content is not complete.
        return (Ok(Vec::new()), None);
    }
    (sink.finish().map(|(bytes, _permit)| bytes), end)
}
