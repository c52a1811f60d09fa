//! Message content: DATA with dot-unstuffing and end at CRLF.CRLF (RFC 5321 §4.1.1.4, §4.5.2),
//! and the size- and memory-bounded sink that both DATA and BDAT (RFC 3030) fill.
//!
//! Only CRLF "." CRLF ends DATA. A bare LF never starts a line here, so "\n.\n" or "\n.\r\n"
//! cannot end a message early: that difference between servers is what SMTP smuggling abuses.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use trimaran_core::net::{Conn, ReadError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the very beginning).
    LineStart,
    /// A line began with '.'.
    Dot,
    /// A line began with ".\r".
    DotCr,
    /// Inside a line.
    Text,
    /// Inside a line, just after '\r'.
    Cr,
}

pub struct DataDecoder {
    state: State,
}

impl Default for DataDecoder {
    fn default() -> Self {
        DataDecoder {
            state: State::LineStart,
        }
    }
}

impl DataDecoder {
    /// Decodes `input` into `sink`. Returns how many bytes were consumed and whether the end
    /// marker was seen (bytes after it are left for the next command).
    pub fn feed(&mut self, input: &[u8], sink: &mut MessageSink) -> (usize, bool) {
        let mut i = 0;
        // Fast path: copy runs of plain text in one go.
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Text => {
                    let run_end = input[i..]
                        .iter()
                        .position(|&c| c == b'\r')
                        .map(|p| i + p)
                        .unwrap_or(input.len());
                    sink.push(&input[i..run_end]);
                    i = run_end;
                    if i < input.len() {
                        sink.push(b"\r");
                        self.state = State::Cr;
                        i += 1;
                    }
                    continue;
                }
                State::LineStart => {
                    if b == b'.' {
                        self.state = State::Dot;
                    } else {
                        sink.push(&[b]);
                        self.state = if b == b'\r' { State::Cr } else { State::Text };
                    }
                }
                State::Dot => {
                    if b == b'\r' {
                        self.state = State::DotCr;
                    } else {
                        // The leading dot was stuffing: drop it, keep the rest of the line.
                        sink.push(&[b]);
                        self.state = State::Text;
                    }
                }
                State::DotCr => {
                    if b == b'\n' {
                        return (i + 1, true);
                    }
                    // ".\r" then something else: an odd line whose stuffed dot we drop.
                    sink.push(b"\r");
                    self.state = State::Cr;
                    continue; // look at `b` again in state Cr
                }
                State::Cr => {
                    sink.push(&[b]);
                    self.state = match b {
                        b'\n' => State::LineStart,
                        b'\r' => State::Cr,
                        _ => State::Text,
                    };
                }
            }
            i += 1;
        }
        (i, false)
    }
}

/// Why a message's content was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Larger than the configured maximum: a permanent fact (552).
    TooBig,
    /// The server's budget for message bytes in memory is exhausted: our limit, so temporary (452).
    NoMemory,
}

/// Grants of memory are taken in steps of this many KiB.
const GRANT_KIB: u32 = 256;

/// Collects message bytes up to `limit`, charging them to a budget shared by every session so
/// that many large messages at once cannot exhaust the server's memory.
pub struct MessageSink {
    data: Vec<u8>,
    limit: u64,
    overflow: Option<Overflow>,
    budget: Arc<Semaphore>,
    granted: Option<OwnedSemaphorePermit>,
    granted_bytes: usize,
}

impl MessageSink {
    /// `budget` counts KiB.
    pub fn new(limit: u64, budget: Arc<Semaphore>) -> MessageSink {
        MessageSink {
            data: Vec::new(),
            limit,
            overflow: None,
            budget,
            granted: None,
            granted_bytes: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.overflow.is_some() || bytes.is_empty() {
            return;
        }
        let new_len = self.data.len() + bytes.len();
        if new_len as u64 > self.limit {
            self.fail(Overflow::TooBig);
            return;
        }
        while new_len > self.granted_bytes {
            match self.budget.clone().try_acquire_many_owned(GRANT_KIB) {
                Ok(permit) => {
                    match &mut self.granted {
                        Some(p) => p.merge(permit),
                        None => self.granted = Some(permit),
                    }
                    self.granted_bytes += GRANT_KIB as usize * 1024;
                }
                Err(_) => {
                    self.fail(Overflow::NoMemory);
                    return;
                }
            }
        }
        self.data.extend_from_slice(bytes);
    }

    fn fail(&mut self, why: Overflow) {
        self.overflow = Some(why);
        // Keep reading to the end of the message, but hold nothing.
        self.data = Vec::new();
        self.granted = None;
        self.granted_bytes = 0;
    }

    /// Whether the content is still being kept.
    pub fn check(&self) -> Result<(), Overflow> {
        match self.overflow {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The bytes, or why they were not kept. The memory grant goes with the returned guard.
    pub fn finish(self) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Overflow> {
        match self.overflow {
            Some(why) => Err(why),
            None => Ok((self.data, self.granted)),
        }
    }
}

/// Reads DATA content up to and including the terminating "." line.
pub async fn read_data(
    conn: &mut Conn,
    sink: &mut MessageSink,
    timeout: Duration,
) -> Result<(), ReadError> {
    let mut decoder = DataDecoder::default();
    loop {
        let (used, done) = decoder.feed(conn.pending(), sink);
        conn.consume(used);
        if done {
            return Ok(());
        }
        conn.fill(timeout).await?;
    }
}

/// Reads exactly `n` bytes of a BDAT chunk into `sink`.
pub async fn read_chunk(
    conn: &mut Conn,
    mut n: usize,
    sink: &mut MessageSink,
    timeout: Duration,
) -> Result<(), ReadError> {
    loop {
        let pending = conn.pending();
        let take = pending.len().min(n);
        sink.push(&pending[..take]);
        conn.consume(take);
        n -= take;
        if n == 0 {
            return Ok(());
        }
        conn.fill(timeout).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(1 << 20))
    }

    fn decode_chunks(chunks: &[&[u8]]) -> (Vec<u8>, bool, Vec<u8>) {
        let mut d = DataDecoder::default();
        let mut sink = MessageSink::new(1 << 20, budget());
        for (n, chunk) in chunks.iter().enumerate() {
            let (used, done) = d.feed(chunk, &mut sink);
            if done {
                let rest: Vec<u8> = chunk[used..]
                    .iter()
                    .chain(chunks[n + 1..].iter().flat_map(|c| c.iter()))
                    .copied()
                    .collect();
                return (sink.finish().unwrap().0, true, rest);
            }
        }
        (sink.finish().unwrap().0, false, Vec::new())
    }

    #[test]
    fn unstuffs_and_ends() {
        let (msg, done, rest) =
            decode_chunks(&[b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n"]);
        assert!(done);
        assert_eq!(msg, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn end_marker_split_across_reads() {
        let input = b"a\r\nb\r\n.\r\n";
        for split in 0..input.len() {
            let (msg, done, _) = decode_chunks(&[&input[..split], &input[split..]]);
            assert!(done, "split at {split}");
            assert_eq!(msg, b"a\r\nb\r\n", "split at {split}");
        }
    }

    #[test]
    fn empty_message() {
        let (msg, done, _) = decode_chunks(&[b".\r\n"]);
        assert!(done);
        assert!(msg.is_empty());
    }

    #[test]
    fn bare_lf_does_not_end_data() {
        for input in [
            &b"a\n.\nb\r\n.\r\n"[..],
            b"a\n.\r\nb\r\n.\r\n",
            b"a\r\n.\nb\r\n.\r\n",
        ] {
            let (msg, done, _) = decode_chunks(&[input]);
            assert!(done);
            assert!(
                msg.ends_with(b"b\r\n"),
                "{:?}",
                String::from_utf8_lossy(&msg)
            );
        }
    }

    #[test]
    fn binary_and_8bit_pass_through() {
        let (msg, done, _) = decode_chunks(&[b"\x00\xff\xfe caf\xc3\xa9\r\n\r\r\n.\r\n"]);
        assert!(done);
        assert_eq!(msg, b"\x00\xff\xfe caf\xc3\xa9\r\n\r\r\n");
    }

    #[test]
    fn size_limit_keeps_nothing() {
        let mut sink = MessageSink::new(10, budget());
        sink.push(b"0123456789");
        sink.push(b"x");
        sink.push(b"more");
        assert_eq!(sink.finish().unwrap_err(), Overflow::TooBig);
    }

    #[test]
    fn memory_budget_is_shared_and_returned() {
        let shared = Arc::new(Semaphore::new(GRANT_KIB as usize));
        let mut a = MessageSink::new(1 << 30, shared.clone());
        a.push(&[0; 1000]);
        let mut b = MessageSink::new(1 << 30, shared.clone());
        b.push(&[0; 1000]);
        assert_eq!(b.finish().unwrap_err(), Overflow::NoMemory);
        drop(a);
        let mut c = MessageSink::new(1 << 30, shared);
        c.push(&[0; 1000]);
        assert!(c.finish().is_ok());
    }
}
