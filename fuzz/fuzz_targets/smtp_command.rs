//! The SMTP command parser (`trimaran_smtp::parser::parse_command`, through smtp-proto) on
//! arbitrary command lines, framed as the session frames them (up to and including LF).
//!
//! Checked, beyond "no panic": the same line always gives the same answer; a refusal is a 5xx
//! reply whose wire form is printable ASCII lines ending in CRLF (client bytes echoed in a
//! reply cannot inject a line); no accepted argument carries CR or LF; an address, once
//! normalised as the session does (`trimaran_core::address::normalize`), has no control
//! character or space, one local part and one domain, and normalises to itself; a host as the
//! session keeps it (`printable`) is short printable ASCII; and a plain address or host,
//! written back as a command, parses to the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_proto::Request;
use trimaran_core::address::normalize;
use trimaran_fuzz::hex;
use trimaran_smtp::parser::{parse_command, printable};

fuzz_target!(|data: &[u8]| {
    let line = match data.iter().position(|&b| b == b'\n') {
        Some(lf) => data[..=lf].to_vec(),
        None => [data, b"\r\n"].concat(),
    };
    check(&line);
});

fn clean(what: &str, s: &str, line: &[u8]) {
    assert!(
        !s.bytes().any(|b| b == b'\r' || b == b'\n'),
        "{what} {s:?} carries CR or LF; line {}",
        hex(line)
    );
}

/// An address as MAIL and RCPT keep it.
fn check_address(address: &str, line: &[u8]) {
    clean("address", address, line);
    let Some(n) = normalize(address) else {
        return;
    };
    assert!(
        !n.chars().any(|c| c.is_control() || c == ' '),
        "normalised address {n:?} has a control character or space; line {}",
        hex(line)
    );
    let (local, domain) = n.rsplit_once('@').expect("normalised address has no @");
    assert!(!local.is_empty() && !domain.is_empty());
    assert_eq!(
        normalize(&n).as_deref(),
        Some(n.as_str()),
        "normalising {address:?} twice gives another address; line {}",
        hex(line)
    );
}

/// RFC 5321 §4.1.2 Dot-string "@" Domain made of atext: an address that needs no quoting.
fn plain(s: &str) -> bool {
    let dot_atom = |part: &str| {
        part.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
        })
    };
    matches!(s.split_once('@'), Some((local, domain)) if dot_atom(local) && dot_atom(domain))
}

fn check(line: &[u8]) {
    let got = parse_command(line);
    assert_eq!(
        format!("{got:?}"),
        format!("{:?}", parse_command(line)),
        "parse is not deterministic"
    );
    let request = match got {
        Ok(r) => r,
        Err(reply) => {
            assert!(
                (500..600).contains(&reply.code),
                "a syntax refusal is not 5xx: {}",
                reply.code
            );
            let mut wire = Vec::new();
            reply.encode(&mut wire);
            assert!(wire.ends_with(b"\r\n"), "reply does not end in CRLF");
            for l in wire.split(|&b| b == b'\n') {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                assert!(
                    l.iter().all(|&b| (0x20..0x7f).contains(&b)),
                    "reply line {l:?} is not printable ASCII; line {}",
                    hex(line)
                );
            }
            return;
        }
    };
    let again = |wire: String| {
        let r = parse_command(wire.as_bytes());
        assert!(r.is_ok(), "{wire:?} is refused: {r:?}");
        r.unwrap()
    };
    match &request {
        Request::Ehlo { host } | Request::Helo { host } | Request::Lhlo { host } => {
            clean("host", host, line);
            let kept = printable(host);
            assert!(kept.len() <= 64 && kept.bytes().all(|b| (0x20..0x7f).contains(&b)));
            if plain(host) {
                let Request::Ehlo { host: h } = again(format!("EHLO {host}\r\n")) else {
                    panic!("EHLO is not EHLO")
                };
                assert_eq!(&h, host);
            }
        }
        Request::Mail { from } => {
            check_address(&from.address, line);
            if plain(&from.address) || from.address.is_empty() {
                let Request::Mail { from: f } = again(format!("MAIL FROM:<{}>\r\n", from.address))
                else {
                    panic!("MAIL is not MAIL")
                };
                assert_eq!(f.address, from.address);
            }
        }
        Request::Rcpt { to } => {
            check_address(&to.address, line);
            if plain(&to.address) {
                let Request::Rcpt { to: t } = again(format!("RCPT TO:<{}>\r\n", to.address)) else {
                    panic!("RCPT is not RCPT")
                };
                assert_eq!(t.address, to.address);
            }
        }
        Request::Auth {
            initial_response, ..
        } => clean("initial response", initial_response, line),
        Request::Vrfy { value } | Request::Expn { value } => clean("argument", value, line),
        _ => {}
    }
}
