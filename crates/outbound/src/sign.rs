//! DKIM signatures (RFC 6376) on outgoing mail, with the sending domain's newest key made by
//! `trimaran dkim generate`: rsa-sha256 (RFC 8301) or ed25519-sha256 (RFC 8463).

use std::collections::HashMap;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use trimaran_core::dkim::Algorithm;
use trimaran_core::store::DkimKey;

/// Header fields signed when present (RFC 6376 §5.4.1's recommendations). From is listed
/// once: mail-auth 0.13 would sign the one From twice instead of signing an absent second one,
/// which verifiers reject.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

enum Key {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// The signing keys, one per domain (its newest).
#[derive(Default)]
pub struct Signer {
    keys: HashMap<String, Key>,
}

impl Signer {
    pub fn new(stored: Vec<DkimKey>) -> Signer {
        let mut newest: HashMap<String, DkimKey> = HashMap::new();
        for key in stored {
            let domain = key.domain.to_ascii_lowercase();
            if newest.get(&domain).is_none_or(|k| k.created <= key.created) {
                newest.insert(domain, key);
            }
        }
        let mut keys = HashMap::new();
        for (domain, key) in newest {
            match load(&key) {
                Ok(k) => {
                    keys.insert(domain, k);
                }
                Err(e) => tracing::error!(
                    domain = %key.domain, selector = %key.selector, error = %e,
                    "DKIM key unusable; mail from this domain goes out unsigned"
                ),
            }
        }
        Signer { keys }
    }

    pub fn domains(&self) -> usize {
        self.keys.len()
    }

    /// The DKIM-Signature field for `message` by the key of `domain`, if it has one.
    pub fn signature(&self, domain: &str, message: &[u8]) -> Option<Vec<u8>> {
        let key = self.keys.get(&domain.to_ascii_lowercase())?;
        let signed = match key {
            Key::Rsa(s) => s.sign(message),
            Key::Ed25519(s) => s.sign(message),
        };
        match signed {
            Ok(sig) => Some(unfold_last_semicolon(sig.to_header()).into_bytes()),
            Err(e) => {
                tracing::warn!(domain, error = %e, "DKIM signing failed; sending unsigned");
                None
            }
        }
    }
}

/// mail-auth folds a full last line of `b=` as `...==\r\n\t;`. RFC 6376 §3.7 removes the
/// b= value "including all surrounding whitespace", but common verifiers (dkimpy, and with it
/// many filters) keep that fold and then fail the signature; the `;` goes back on the line.
fn unfold_last_semicolon(header: String) -> String {
    match header.strip_suffix("\r\n\t;\r\n") {
        Some(head) => format!("{head};\r\n"),
        None => header,
    }
}

fn load(key: &DkimKey) -> Result<Key, String> {
    let algorithm = Algorithm::from_tag(&key.algorithm)
        .ok_or_else(|| format!("unknown algorithm {}", key.algorithm))?;
    Ok(match algorithm {
        Algorithm::RsaSha256 => {
            let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.private_key.clone()));
            let k = RsaKey::<Sha256>::from_key_der(der).map_err(|e| e.to_string())?;
            Key::Rsa(signer(k, key))
        }
        Algorithm::Ed25519Sha256 => {
            let k = Ed25519Key::from_pkcs8_der(&key.private_key).map_err(|e| e.to_string())?;
            Key::Ed25519(signer(k, key))
        }
    })
}

/// relaxed/relaxed (RFC 6376 §3.4): survives the header rewrapping and trailing-space changes
/// relays make.
fn signer<T: SigningKey>(k: T, key: &DkimKey) -> DkimSigner<T, Done> {
    DkimSigner::from_key(k)
        .domain(&key.domain)
        .selector(&key.selector)
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// The domain a message is signed for: its From address's (what DMARC aligns with, RFC 7489
/// §3.1.1), else the envelope sender's.
pub fn signing_domain(message: &[u8], sender: &str) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message);
    let from = parsed
        .as_ref()
        .and_then(|m| m.from())
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.to_string());
    from.or_else(|| sender.rsplit_once('@').map(|(_, d)| d.to_string()))
        .map(|d| d.to_ascii_lowercase())
}
