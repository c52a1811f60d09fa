//! STAT (RFC 1939 §5): count and size of the messages not marked deleted.

use crate::session::Session;

impl Session {
    pub(crate) fn stat(&mut self) {
        let Some(drop) = &self.maildrop else { return };
        let live = drop.messages.iter().filter(|m| !m.deleted);
        let (count, octets) = live.fold((0usize, 0u64), |(c, o), m| (c + 1, o + m.size));
        self.ok(&format!("{count} {octets}"));
    }
}
