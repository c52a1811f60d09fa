//! ACL (RFC 4314 §3): SETACL, DELETEACL, GETACL, LISTRIGHTS and MYRIGHTS. An account shares
//! one of its mailboxes with another account by address; the grantee sees it under
//! `Other Users/<owner>/` (RFC 2342). Identifiers are account addresses only: no "anyone",
//! no groups and no negative rights, which RFC 4314 §2 leaves optional.

use trimaran_core::delivery::retry;
use trimaran_core::store::StoreError;

use crate::parser::MailboxArg;
use crate::response;
use crate::rights::{Rights, Target, LETTERS};
use crate::session::{Flow, IfMissing, Session};

impl Session {
    /// The owner's address of a target.
    fn owner_address(&self, target: &Target) -> String {
        target.shared_by.clone().unwrap_or_else(|| {
            self.account
                .as_ref()
                .map(|a| a.address.clone())
                .unwrap_or_default()
        })
    }

    fn identifier(raw: &[u8]) -> Result<String, &'static str> {
        let id = std::str::from_utf8(raw).map_err(|_| "Identifier is not UTF-8")?;
        if id.starts_with('-') {
            return Err("Negative rights are not supported (RFC 4314 §2)");
        }
        if !id.contains('@') {
            return Err("Rights are granted to accounts, by address");
        }
        Ok(id.to_lowercase())
    }

    /// SETACL (RFC 4314 §3.1), and DELETEACL (§3.2) when `rights` is None.
    pub(crate) async fn set_acl(
        &mut self,
        tag: &str,
        raw: MailboxArg,
        identifier: Vec<u8>,
        rights: Option<Vec<u8>>,
    ) -> Flow {
        // Unknown rights are a client error, whatever the mailbox (RFC 4314 §2.1).
        let change = match &rights {
            Some(r) => {
                let text = String::from_utf8_lossy(r).into_owned();
                let (op, letters) = match text.chars().next() {
                    Some('+') => (Some('+'), &text[1..]),
                    Some('-') => (Some('-'), &text[1..]),
                    _ => (None, &text[..]),
                };
                match Rights::parse(letters) {
                    Ok(parsed) => Some((op, parsed)),
                    Err(c) => {
                        self.bad(tag, &format!("Unknown right '{c}'"));
                        return Flow::Continue;
                    }
                }
            }
            None => None,
        };
        let Some((_, target)) = self.named_mailbox(tag, &raw, IfMissing::Nonexistent).await else {
            return Flow::Continue;
        };
        if !self.require(tag, &target, 'a') {
            return Flow::Continue;
        }
        let grantee = match Self::identifier(&identifier) {
            Ok(g) => g,
            Err(why) => {
                self.no(tag, &format!("[CANNOT] {why}"));
                return Flow::Continue;
            }
        };
        let (owner, mailbox) = (target.owner, target.record.id);
        let meta = self.server.core.store.meta();
        let new = match change {
            None => Rights::NONE,
            Some((None, r)) => r,
            Some((op, r)) => {
                let current = match retry(self.wait(), || meta.mailbox_acl(owner, mailbox)).await {
                    Ok(list) => list
                        .into_iter()
                        .find(|(g, _)| *g == grantee)
                        .map_or(Rights::NONE, |(_, r)| Rights::from_stored(&r)),
                    Err(e) => {
                        self.store_failed(tag, &e);
                        return Flow::Continue;
                    }
                };
                if op == Some('+') {
                    current.union(r)
                } else {
                    current.without(r)
                }
            }
        };
        let letters = (!new.is_empty()).then(|| new.letters());
        match retry(self.wait(), || {
            meta.set_acl(owner, mailbox, &grantee, letters.as_deref())
        })
        .await
        {
            Ok(()) => {
                // Sessions of the grantee look again at their rights on their next command.
                self.server.core.store.changed(owner);
                self.ok(
                    tag,
                    if rights.is_some() {
                        "SETACL completed"
                    } else {
                        "DELETEACL completed"
                    },
                );
            }
            Err(StoreError::NotFound(what)) if what.starts_with("account") => {
                self.no(tag, "[CANNOT] No such account")
            }
            Err(StoreError::Invalid(_)) => {
                self.no(tag, "[CANNOT] The owner always holds every right")
            }
            Err(e) => self.store_failed(tag, &e),
        }
        Flow::Continue
    }

    /// GETACL (RFC 4314 §3.3): the owner first, with every right.
    pub(crate) async fn get_acl(&mut self, tag: &str, raw: MailboxArg) -> Flow {
        let Some((name, target)) = self.named_mailbox(tag, &raw, IfMissing::Nonexistent).await
        else {
            return Flow::Continue;
        };
        if !self.require(tag, &target, 'a') {
            return Flow::Continue;
        }
        let (owner, mailbox) = (target.owner, target.record.id);
        let meta = self.server.core.store.meta();
        let list = match retry(self.wait(), || meta.mailbox_acl(owner, mailbox)).await {
            Ok(l) => l,
            Err(e) => {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        };
        let utf8 = self.utf8;
        let mut line = b"* ACL ".to_vec();
        response::mailbox(&mut line, &name, utf8);
        let entries = std::iter::once((self.owner_address(&target), LETTERS.to_string())).chain(
            list.into_iter()
                .map(|(g, r)| (g, Rights::from_stored(&r).letters())),
        );
        for (who, rights) in entries {
            line.push(b' ');
            response::string(&mut line, who.as_bytes(), utf8);
            line.push(b' ');
            response::string(&mut line, rights.as_bytes(), utf8);
        }
        line.extend_from_slice(b"\r\n");
        self.conn.queue(&line);
        self.ok(tag, "GETACL completed");
        Flow::Continue
    }

    /// LISTRIGHTS (RFC 4314 §3.4): the owner holds everything; anyone else may be granted
    /// each right on its own.
    pub(crate) async fn list_rights(
        &mut self,
        tag: &str,
        raw: MailboxArg,
        identifier: Vec<u8>,
    ) -> Flow {
        let Some((name, target)) = self.named_mailbox(tag, &raw, IfMissing::Nonexistent).await
        else {
            return Flow::Continue;
        };
        if !self.require(tag, &target, 'a') {
            return Flow::Continue;
        }
        let who = String::from_utf8_lossy(&identifier).to_lowercase();
        let utf8 = self.utf8;
        let mut line = b"* LISTRIGHTS ".to_vec();
        response::mailbox(&mut line, &name, utf8);
        line.push(b' ');
        response::string(&mut line, &identifier, utf8);
        if who == self.owner_address(&target) {
            line.push(b' ');
            line.extend_from_slice(LETTERS.as_bytes());
        } else {
            line.extend_from_slice(b" \"\"");
            for c in LETTERS.chars() {
                line.push(b' ');
                line.push(c as u8);
            }
        }
        line.extend_from_slice(b"\r\n");
        self.conn.queue(&line);
        self.ok(tag, "LISTRIGHTS completed");
        Flow::Continue
    }

    /// MYRIGHTS (RFC 4314 §3.5).
    pub(crate) async fn my_rights(&mut self, tag: &str, raw: MailboxArg) -> Flow {
        let Some((name, target)) = self.named_mailbox(tag, &raw, IfMissing::Nonexistent).await
        else {
            return Flow::Continue;
        };
        let utf8 = self.utf8;
        let mut line = b"* MYRIGHTS ".to_vec();
        response::mailbox(&mut line, &name, utf8);
        line.push(b' ');
        response::string(&mut line, target.rights.letters().as_bytes(), utf8);
        line.extend_from_slice(b"\r\n");
        self.conn.queue(&line);
        self.ok(tag, "MYRIGHTS completed");
        Flow::Continue
    }
}
