//! Access rights (RFC 4314 ACL) and where other accounts' shared mailboxes appear: the "Other
//! Users" namespace (RFC 2342 §5), as `Other Users/<owner address>/<mailbox>`.

use trimaran_core::store::{AccountId, MailboxRecord};

/// The namespace prefix for mailboxes shared by other accounts, without its delimiter.
pub const OTHER_USERS: &str = "Other Users";

/// RFC 4314 §2.1 rights, in the order GETACL and MYRIGHTS print them.
pub const LETTERS: &str = "lrswipkxtea";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rights(u16);

impl Rights {
    pub const ALL: Rights = Rights((1 << LETTERS.len()) - 1);
    pub const NONE: Rights = Rights(0);

    fn bit(c: char) -> Option<u16> {
        LETTERS.find(c).map(|i| 1 << i)
    }

    /// A rights string from a client; Err names the first character that is not a right.
    /// The obsolete "c" and "d" of RFC 2086 stand for "kx" and "xte" (RFC 4314 §2.1.1).
    pub fn parse(s: &str) -> Result<Rights, char> {
        let mut bits = 0;
        for c in s.chars() {
            bits |= match c {
                'c' => Self::bit('k').unwrap_or(0) | Self::bit('x').unwrap_or(0),
                'd' => Self::parse("xte").map(|r| r.0).unwrap_or(0),
                c => Self::bit(c).ok_or(c)?,
            };
        }
        Ok(Rights(bits))
    }

    /// Rights as stored: unknown letters are ignored.
    pub fn from_stored(s: &str) -> Rights {
        Rights(s.chars().filter_map(Self::bit).fold(0, |a, b| a | b))
    }

    pub fn has(self, c: char) -> bool {
        Self::bit(c).is_some_and(|b| self.0 & b != 0)
    }

    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    pub fn without(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn letters(self) -> String {
        LETTERS.chars().filter(|&c| self.has(c)).collect()
    }
}

/// A mailbox a command names, with whose it is and what this session may do with it.
#[derive(Clone, Debug)]
pub struct Target {
    pub owner: AccountId,
    pub record: MailboxRecord,
    pub rights: Rights,
    /// The owner's address when the mailbox is another account's.
    pub shared_by: Option<String>,
}

/// `Other Users/<owner>/<mailbox>` split into (owner, mailbox); None for personal names.
pub fn split_shared(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(OTHER_USERS)?.strip_prefix('/')?;
    let (owner, mailbox) = rest.split_once('/')?;
    (!owner.is_empty() && !mailbox.is_empty()).then_some((owner, mailbox))
}

pub fn shared_name(owner: &str, mailbox: &str) -> String {
    format!("{OTHER_USERS}/{owner}/{mailbox}")
}

/// Whether a personal mailbox name would hide the shared namespace.
pub fn in_shared_namespace(name: &str) -> bool {
    name == OTHER_USERS || name.starts_with(&format!("{OTHER_USERS}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_parse_print_and_obsolete_letters() {
        assert_eq!(Rights::parse("rl").unwrap().letters(), "lr");
        assert_eq!(Rights::parse("lrc").unwrap().letters(), "lrkx");
        assert_eq!(Rights::parse("d").unwrap().letters(), "xte");
        assert_eq!(Rights::parse("lrz"), Err('z'));
        assert_eq!(Rights::ALL.letters(), LETTERS);
        assert!(Rights::parse("").unwrap().is_empty());
        assert_eq!(Rights::from_stored("lr?").letters(), "lr");
    }

    #[test]
    fn shared_names() {
        assert_eq!(
            split_shared("Other Users/bob@x.test/Team/2026"),
            Some(("bob@x.test", "Team/2026"))
        );
        assert_eq!(split_shared("Other Users/bob@x.test"), None);
        assert_eq!(split_shared("Other UsersX/a/b"), None);
        assert!(in_shared_namespace("Other Users"));
        assert!(!in_shared_namespace("Other Users2"));
    }
}
