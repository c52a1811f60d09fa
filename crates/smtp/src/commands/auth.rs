//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms, on submission listeners
//! and only under TLS.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use trimaran_core::auth::{authenticate, Login};

use crate::reply::{common, Reply};
use crate::session::{Authenticated, Flow, Session};
use trimaran_core::net::LineEvent;

enum Step {
    Reply(Reply),
    Close,
}

impl Session {
    pub(crate) async fn auth(&mut self, mechanism: u64, initial: String) -> Flow {
        if !self.kind.is_submission() {
            self.error(common::bad_sequence(
                "AUTH is offered on the submission ports only",
            ));
            return Flow::Continue;
        }
        if !self.conn.tls {
            self.error(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
            return Flow::Continue;
        }
        if self.helo.is_none() || !self.esmtp {
            self.error(common::bad_sequence("Send EHLO first"));
            return Flow::Continue;
        }
        if self.auth.is_some() {
            self.error(common::bad_sequence("Already authenticated"));
            return Flow::Continue;
        }
        if self.tx.is_some() {
            self.error(common::bad_sequence(
                "AUTH not allowed during a mail transaction",
            ));
            return Flow::Continue;
        }
        let credentials = match mechanism {
            AUTH_PLAIN => self.plain(initial).await,
            AUTH_LOGIN => self.login(initial).await,
            _ => {
                self.error(Reply::new(
                    504,
                    "5.5.4",
                    "Unrecognized authentication mechanism",
                ));
                return Flow::Continue;
            }
        };
        let (user, password) = match credentials {
            Ok(c) => c,
            Err(Step::Reply(r)) => {
                self.error(r);
                return Flow::Continue;
            }
            Err(_) => return Flow::Close,
        };
        self.check_credentials(user, password).await
    }

    async fn plain(&mut self, initial: String) -> Result<(String, Vec<u8>), Step> {
        let response = match initial.as_str() {
            "" => self.challenge("").await?,
            // RFC 4954 §4: "=" is an empty initial response.
            "=" => Vec::new(),
            ir => decode(ir)?,
        };
        // authzid NUL authcid NUL passwd (RFC 4616 §2)
        let mut fields = response.splitn(3, |&b| b == 0);
        let (Some(authz), Some(authc), Some(password)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(Step::Reply(Reply::new(
                501,
                "5.5.2",
                "Malformed PLAIN response",
            )));
        };
        let user = String::from_utf8(authc.to_vec())
            .map_err(|_| Step::Reply(Reply::new(501, "5.5.2", "User name is not UTF-8")))?;
        if !authz.is_empty() && authz != authc {
            return Err(Step::Reply(Reply::new(
                535,
                "5.7.8",
                "Authorization identity not permitted",
            )));
        }
        Ok((user, password.to_vec()))
    }

    async fn login(&mut self, initial: String) -> Result<(String, Vec<u8>), Step> {
        let user = match initial.as_str() {
            "" => self.challenge("VXNlcm5hbWU6").await?,
            ir => decode(ir)?,
        };
        let user = String::from_utf8(user)
            .map_err(|_| Step::Reply(Reply::new(501, "5.5.2", "User name is not UTF-8")))?;
        let password = self.challenge("UGFzc3dvcmQ6").await?;
        Ok((user, password))
    }

    /// Sends a 334 challenge and reads the client's base64 answer.
    async fn challenge(&mut self, text: &str) -> Result<Vec<u8>, Step> {
        self.reply(Reply::new(334, "", text));
        let max = self.server.core.config.smtp.max_command_line;
        match self.conn.read_line(max, self.command_timeout()).await {
            Ok(LineEvent::Line(line)) => {
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if line == "*" {
                    return Err(Step::Reply(Reply::new(
                        501,
                        "5.0.0",
                        "Authentication cancelled",
                    )));
                }
                decode(line)
            }
            Ok(LineEvent::TooLong) => Err(Step::Reply(Reply::new(
                500,
                "5.5.6",
                "Authentication exchange line too long",
            ))),
            Err(_) => Err(Step::Close),
        }
    }

    async fn check_credentials(&mut self, user: String, password: Vec<u8>) -> Flow {
        let core = &self.server.core;
        let account = match authenticate(core, self.conn.peer.ip(), &user, password).await {
            Ok(Login::Accepted(a)) => Some(a),
            Ok(Login::Rejected) => None,
            Ok(Login::Throttled) => {
                tracing::info!(peer = %self.conn.peer, "AUTH refused: too many failed logins from this address");
                // RFC 4954 §6: 454 is a temporary failure; the client may try later.
                self.reply(Reply::new(
                    454,
                    "4.7.0",
                    "Too many failed logins, try again later",
                ));
                return Flow::Close;
            }
            Err(e) => {
                tracing::warn!(error = %e, "account lookup for AUTH failed");
                self.reply(Reply::new(454, "4.7.0", "Temporary authentication failure"));
                return Flow::Continue;
            }
        };
        match account {
            Some(a) => {
                tracing::info!(peer = %self.conn.peer, user = %a.address, "authenticated");
                self.auth = Some(Authenticated {
                    account: a.id,
                    address: a.address,
                });
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
                Flow::Continue
            }
            _ => {
                self.auth_failures += 1;
                tracing::info!(peer = %self.conn.peer, failures = self.auth_failures, "authentication failed");
                // Slow down guessing: each failure costs the client more time.
                tokio::time::sleep(Duration::from_millis(300 * self.auth_failures as u64)).await;
                if self.auth_failures >= self.server.core.config.smtp.max_auth_failures {
                    self.reply(Reply::new(421, "4.7.0", "Too many authentication failures"));
                    return Flow::Close;
                }
                self.error(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
                Flow::Continue
            }
        }
    }
}

fn decode(text: &str) -> Result<Vec<u8>, Step> {
    B64.decode(text.trim())
        .map_err(|_| Step::Reply(Reply::new(501, "5.5.2", "Cannot decode base64 response")))
}
