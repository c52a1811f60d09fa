//! The POP3 command parser and the two response encoders that carry message bytes
//! (`trimaran_pop3::parser::{parse, multiline, top}`), on arbitrary bytes.
//!
//! Checked, beyond "no panic":
//! - `parse` gives the same answer twice, ignores the case of the keyword (RFC 1939 §3), never
//!   accepts message number 0, and an accepted command written back in canonical form parses to
//!   the same command.
//! - `multiline` can be read back by a client (RFC 1939 §3: lines end in CRLF, a leading "."
//!   is doubled, "." alone ends the response): the client gets the content, with bare LF made
//!   CRLF and a last CRLF added, and the response cannot end early.
//! - `top` is the header block and at most the asked number of body lines, and grows with it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trimaran_fuzz::hex;
use trimaran_pop3::parser::{multiline, parse, top, Command};

fuzz_target!(|data: &[u8]| {
    // As the session does: the line must be UTF-8, and CR/LF at its end are not part of it.
    if let Ok(text) = std::str::from_utf8(data) {
        check_parse(text.trim_end_matches(['\r', '\n']));
        check_parse(text);
    }
    check_multiline(data);
    let lines = data.first().map_or(0, |&b| (b % 8) as usize);
    check_top(data, lines);
});

fn check_parse(line: &str) {
    let got = parse(line);
    assert_eq!(got, parse(line), "parse is not deterministic");
    // The keyword is case-insensitive; arguments are not touched.
    let (keyword, rest) = line.split_at(line.find(' ').unwrap_or(line.len()));
    for k in [keyword.to_ascii_uppercase(), keyword.to_ascii_lowercase()] {
        assert_eq!(
            parse(&format!("{k}{rest}")),
            got,
            "keyword case changed the answer"
        );
    }
    let Ok(cmd) = got else {
        return;
    };
    let wire = match &cmd {
        Command::Capa => "CAPA".to_string(),
        Command::Stls => "STLS".to_string(),
        Command::Utf8 => "UTF8".to_string(),
        Command::Stat => "STAT".to_string(),
        Command::Noop => "NOOP".to_string(),
        Command::Rset => "RSET".to_string(),
        Command::Quit => "QUIT".to_string(),
        Command::User(name) => {
            assert!(!name.is_empty(), "empty USER name");
            format!("USER {name}")
        }
        Command::Pass(p) => format!("PASS {p}"),
        Command::Auth { mechanism, initial } => {
            // RFC 4422 §3.1: 1 to 20 of A-Z, 0-9, "-", "_"; RFC 5034 §4: a non-empty
            // initial response.
            assert!((1..=20).contains(&mechanism.len()), "mechanism length");
            assert!(mechanism
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
            assert!(
                initial.as_ref().is_none_or(|i| !i.is_empty()),
                "empty initial response"
            );
            match initial {
                Some(i) => format!("AUTH {mechanism} {i}"),
                None => format!("AUTH {mechanism}"),
            }
        }
        Command::List(n) | Command::Uidl(n) => {
            let name = if matches!(cmd, Command::List(_)) {
                "LIST"
            } else {
                "UIDL"
            };
            match n {
                Some(n) => {
                    assert!(*n > 0, "message number 0");
                    format!("{name} {n}")
                }
                None => name.to_string(),
            }
        }
        Command::Retr(n) | Command::Dele(n) => {
            assert!(*n > 0, "message number 0");
            let name = if matches!(cmd, Command::Retr(_)) {
                "RETR"
            } else {
                "DELE"
            };
            format!("{name} {n}")
        }
        Command::Top(n, lines) => {
            assert!(*n > 0, "message number 0");
            format!("TOP {n} {lines}")
        }
    };
    assert_eq!(
        parse(&wire).as_ref(),
        Ok(&cmd),
        "round trip through {wire:?} changed the command"
    );
}

/// What a client makes of `content`: bare LF completed to CRLF, a CRLF added at the end of
/// non-empty content that does not end a line.
fn normalised(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 2);
    for (i, &b) in content.iter().enumerate() {
        if b == b'\n' && (i == 0 || content[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    if !content.is_empty() && !content.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A client reading a multi-line response: lines to CRLF, "." alone ends, one leading "." of
/// any other line is dropped. Returns the content and how many bytes were read.
fn client_read(wire: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut content = Vec::new();
    let mut at = 0;
    loop {
        let end = wire[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let line = &wire[at..end];
        at = end + 2;
        if line == b"." {
            return Some((content, at));
        }
        content.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        content.extend_from_slice(b"\r\n");
    }
}

fn check_multiline(content: &[u8]) {
    let mut wire = b"+OK\r\n".to_vec();
    let start = wire.len();
    multiline(content, &mut wire);
    let (got, used) = client_read(&wire[start..])
        .unwrap_or_else(|| panic!("multi-line response has no end: {}", hex(&wire[start..])));
    assert_eq!(
        used,
        wire.len() - start,
        "multi-line response ends before its last byte"
    );
    assert_eq!(
        got,
        normalised(content),
        "client reads other content than was sent"
    );
}

fn check_top(message: &[u8], lines: usize) {
    let all = top(message, lines);
    assert!(
        message.starts_with(all),
        "TOP is not a prefix of the message"
    );
    let none = top(message, 0);
    assert!(all.starts_with(none), "TOP n does not start with TOP 0");
    // TOP 0 is the header block: up to and including the first blank line (LF or CRLF; one
    // at the very start means an empty header), or the whole message when there is none.
    let header_end = (0..message.len())
        .filter(|&i| i == 0 || message[i - 1] == b'\n')
        .find_map(|i| match &message[i..] {
            [b'\n', ..] => Some(i + 1),
            [b'\r', b'\n', ..] => Some(i + 2),
            _ => None,
        })
        .unwrap_or(message.len());
    assert_eq!(none.len(), header_end, "TOP 0 is not the header block");
    let body_lines = all[none.len()..].iter().filter(|&&b| b == b'\n').count();
    assert!(body_lines <= lines, "TOP {lines} gave {body_lines} lines");
    if all.len() < message.len() {
        assert_eq!(body_lines, lines, "TOP {lines} stopped early");
    }
    let more = top(message, lines + 1);
    assert!(more.starts_with(all), "TOP n+1 does not extend TOP n");
}
