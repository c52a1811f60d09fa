//! DKIM signing keys (RFC 6376; Ed25519 per RFC 8463): making them and the DNS record that
//! publishes their public half.

use base64::Engine;
use ring::signature::KeyPair;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};

/// RSA modulus size: RFC 8301 §3.2 requires at least 1024 bits and recommends 2048; larger keys
/// do not fit one DNS TXT string and some resolvers mishandle them.
const RSA_BITS: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    /// The `a=` tag's value (RFC 6376 §3.5, RFC 8463 §3).
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The DNS record's `k=` value (RFC 6376 §3.6.1, RFC 8463 §4).
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }

    const ALL: [Algorithm; 2] = [Algorithm::RsaSha256, Algorithm::Ed25519Sha256];

    pub fn from_tag(tag: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.tag() == tag)
    }

    pub fn from_key_type(key_type: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.key_type() == key_type)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("making the key failed: {0}")]
    KeyGeneration(String),
    #[error("{0:?} is not a valid selector (DNS labels of letters, digits and hyphens)")]
    BadSelector(String),
}

/// A new key pair: the private key as PKCS#8 DER, and the bytes the DNS record's `p=` carries.
pub struct NewKey {
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
}

pub fn generate(algorithm: Algorithm) -> Result<NewKey, DkimError> {
    let failed = |e: &dyn std::fmt::Display| DkimError::KeyGeneration(e.to_string());
    match algorithm {
        Algorithm::RsaSha256 => {
            let key =
                rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_BITS).map_err(|e| failed(&e))?;
            let private_key = key.to_pkcs8_der().map_err(|e| failed(&e))?;
            // RFC 6376 §3.6.1 names an RSAPublicKey, but its own example (Appendix C) and
            // every verifier take the SubjectPublicKeyInfo that `openssl rsa -pubout` gives.
            let public_key = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| failed(&e))?;
            Ok(NewKey {
                private_key: private_key.as_bytes().to_vec(),
                public_key: public_key.as_bytes().to_vec(),
            })
        }
        Algorithm::Ed25519Sha256 => {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 =
                ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| failed(&e))?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|e| failed(&e))?;
            // RFC 8463 §4: p= is the raw 32-byte public key, not a SubjectPublicKeyInfo.
            Ok(NewKey {
                private_key: pkcs8.as_ref().to_vec(),
                public_key: pair.public_key().as_ref().to_vec(),
            })
        }
    }
}

/// Checks a selector: one or more DNS labels (RFC 6376 §3.1), each of letters, digits and
/// inner hyphens, at most 63 bytes.
pub fn check_selector(selector: &str) -> Result<(), DkimError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if selector.len() <= 200 && selector.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(DkimError::BadSelector(selector.to_string()))
    }
}

/// A selector naming the algorithm and the day the key was made, e.g. `rsa-20261203`: keys are
/// rotated by adding one under a new selector, so the name tells the keys apart.
pub fn default_selector(algorithm: Algorithm) -> String {
    let today = time::OffsetDateTime::now_utc().date();
    format!(
        "{}-{:04}{:02}{:02}",
        algorithm.key_type(),
        today.year(),
        u8::from(today.month()),
        today.day()
    )
}

/// The TXT record's value: `v=DKIM1; k=...; p=...` (RFC 6376 §3.6.1).
pub fn txt_value(algorithm: Algorithm, public_key: &[u8]) -> String {
    let p = base64::engine::general_purpose::STANDARD.encode(public_key);
    format!("v=DKIM1; k={}; p={p}", algorithm.key_type())
}

/// The record as a zone-file line. A TXT character-string holds at most 255 bytes (RFC 1035
/// §3.3), so a 2048-bit RSA key's value is split into several, which a verifier joins
/// (RFC 6376 §3.6.2.2).
pub fn zone_line(domain: &str, selector: &str, value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        strings.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};

    #[test]
    fn rsa_keys_publish_their_public_half() {
        let key = generate(Algorithm::RsaSha256).unwrap();
        let private = rsa::RsaPrivateKey::from_pkcs8_der(&key.private_key).unwrap();
        let public = rsa::RsaPublicKey::from_public_key_der(&key.public_key).unwrap();
        assert_eq!(private.to_public_key(), public);
        use rsa::traits::PublicKeyParts;
        assert_eq!(public.size() * 8, RSA_BITS);
        let value = txt_value(Algorithm::RsaSha256, &key.public_key);
        assert!(value.starts_with("v=DKIM1; k=rsa; p=MII"), "{value}");
        let line = zone_line("example.org", "s1", &value);
        assert!(line.starts_with("s1._domainkey.example.org. IN TXT ( \""));
        let joined: String = line
            .split('"')
            .skip(1)
            .step_by(2)
            .inspect(|s| assert!(s.len() <= 255))
            .collect();
        assert_eq!(joined, value);
    }

    #[test]
    fn ed25519_keys_publish_the_raw_public_key() {
        let key = generate(Algorithm::Ed25519Sha256).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&key.private_key).unwrap();
        assert_eq!(pair.public_key().as_ref(), &key.public_key[..]);
        assert_eq!(key.public_key.len(), 32);
        let value = txt_value(Algorithm::Ed25519Sha256, &key.public_key);
        // 32 bytes are 44 base64 characters.
        assert_eq!(value.len(), "v=DKIM1; k=ed25519; p=".len() + 44, "{value}");
        assert_ne!(
            generate(Algorithm::Ed25519Sha256).unwrap().public_key,
            key.public_key
        );
    }

    #[test]
    fn selectors_are_dns_labels() {
        for good in ["s1", "2026-12", "mail.eu", "a"] {
            assert!(check_selector(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-s",
            "s-",
            "a..b",
            "sel ector",
            "s_1",
            "é",
            &"a".repeat(64),
        ] {
            assert!(check_selector(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Algorithm::from_tag("ed25519-sha256"),
            Some(Algorithm::Ed25519Sha256)
        );
        assert_eq!(Algorithm::from_tag("rsa-sha1"), None);
        assert_eq!(Algorithm::from_key_type("rsa"), Some(Algorithm::RsaSha256));
        assert_eq!(Algorithm::from_key_type("dsa"), None);
        let s = default_selector(Algorithm::Ed25519Sha256);
        assert!(
            s.starts_with("ed25519-20") && s.len() == "ed25519-".len() + 8,
            "{s}"
        );
        assert!(check_selector(&s).is_ok());
    }
}
