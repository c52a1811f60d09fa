//! IDLE (RFC 2177, RFC 9051 §6.3.13): changes are reported as they happen until DONE.
//! Writes in this process wake the session at once, and so do other processes' on the same
//! PostgreSQL (their notices arrive through LISTEN). The session also looks every second, for
//! a change whose notice was lost (a dropped notice connection, a writer that gave up waiting
//! for its notice).

use std::time::{Duration, Instant};

use trimaran_core::net::LineEvent;

use crate::session::{Flow, Session};

/// How often an idling session looks for changes nobody told it about.
const POLL: Duration = Duration::from_secs(1);

impl Session {
    pub(crate) async fn idle(&mut self, tag: &str) -> Flow {
        self.conn.queue(b"+ idling\r\n");
        if let Err(e) = self.sync(true, true).await {
            if self.selected.is_none() && self.account.is_some() {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        }
        let started = Instant::now();
        let limit = self.autologout();
        let mut stopping = self.server.gate.stopping();
        let mut notices = self.server.core.store.watch();
        // A shared mailbox changes with its owner's account.
        let me = self.watched_account();
        loop {
            if self.conn.flush().await.is_err() {
                return Flow::Close;
            }
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                // RFC 9051 §5.4: the client must re-issue IDLE at least every 30 minutes.
                self.untagged("BYE Autologout; idle for too long");
                return Flow::Close;
            }
            let max = self.server.core.config.imap.max_command_line;
            enum Event {
                Line(Result<LineEvent, trimaran_core::net::ReadError>),
                Notice,
                Poll,
                Stop,
            }
            let event = tokio::select! {
                line = self.conn.read_line(max, left) => Event::Line(line),
                _ = crate::session::notice_for(&mut notices, me) => Event::Notice,
                _ = tokio::time::sleep(POLL) => Event::Poll,
                _ = stopping.wait_for(|s| *s) => Event::Stop,
            };
            match event {
                Event::Line(Ok(LineEvent::Line(l))) => {
                    let text = String::from_utf8_lossy(&l);
                    if text.trim().eq_ignore_ascii_case("DONE") {
                        let _ = self.sync(false, true).await;
                        self.ok(tag, "IDLE terminated");
                    } else {
                        self.bad(tag, "Expected DONE");
                    }
                    return Flow::Continue;
                }
                Event::Line(Ok(LineEvent::TooLong)) => {
                    self.bad(tag, "Expected DONE");
                    return Flow::Continue;
                }
                Event::Line(Err(_)) => return Flow::Close,
                // A shared mailbox's rights are read again before showing anything of it
                // (RFC 4314); losing them ends the IDLE with NO.
                Event::Notice => {
                    if !self.refresh_rights(tag).await {
                        return Flow::Continue;
                    }
                    let _ = self.sync(true, true).await;
                }
                Event::Poll => {
                    if !self.refresh_rights(tag).await {
                        return Flow::Continue;
                    }
                    let _ = self.sync(false, true).await;
                }
                Event::Stop => {
                    self.untagged("BYE [UNAVAILABLE] Server shutting down");
                    return Flow::Close;
                }
            }
        }
    }
}
