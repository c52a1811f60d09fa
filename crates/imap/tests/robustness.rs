//! No input from the network may panic the IMAP parser or the FETCH builders: pseudo-random
//! command lines, and pseudo-random (often broken) MIME messages rendered every way a client
//! can ask for them.

use trimaran_imap::fetch::{envelope, section, structure};
use trimaran_imap::parser::{parse_command, Section, SectionText};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, so a failure can be replayed.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[(self.next() % words.len() as u64) as usize]
    }
}

#[test]
fn random_command_lines_never_panic() {
    const WORDS: &[&str] = &[
        "a1",
        "UID",
        "FETCH",
        "STORE",
        "SEARCH",
        "SELECT",
        "APPEND",
        "LIST",
        "STATUS",
        "COPY",
        "MOVE",
        "LOGIN",
        "AUTHENTICATE",
        "ENABLE",
        "ID",
        "EXPUNGE",
        "(",
        ")",
        "[",
        "]",
        "<",
        ">",
        "{",
        "}",
        "{3}\r\nabc",
        "{5+}\r\nab",
        "~{2}\r\n\0\0",
        "\"",
        "\"x\\\"y\"",
        "\\",
        "*",
        "%",
        "$",
        ":",
        ",",
        "1",
        "0",
        "4294967296",
        "18446744073709551616",
        "1:*",
        "BODY[",
        "BODY.PEEK[",
        "1.2.HEADER.FIELDS",
        "MIME",
        "TEXT",
        "HEADER",
        "<0.10>",
        "+FLAGS",
        "FLAGS.SILENT",
        "\\Seen",
        "NIL",
        "RETURN",
        "CHARSET",
        "UTF-8",
        "OR",
        "NOT",
        "SINCE",
        "1-Jan-2026",
        "é",
        "\u{0}",
        "\r",
        "\n",
        " ",
        "  ",
        "CHANGEDSINCE",
        "VANISHED",
        "QRESYNC",
        "UNCHANGEDSINCE",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200_000 {
        let mut line = String::new();
        for _ in 0..(rng.next() % 10) {
            line.push_str(rng.pick(WORDS));
            if !rng.next().is_multiple_of(3) {
                line.push(' ');
            }
        }
        line.push_str("\r\n");
        let _ = parse_command(line.as_bytes());
    }
    // Deep nesting is refused, not recursed into without bound.
    let deep = format!(
        "a SEARCH {}ALL{}\r\n",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    assert!(parse_command(deep.as_bytes()).is_err());
    let nots = format!("a SEARCH {}ALL\r\n", "NOT ".repeat(10_000));
    assert!(parse_command(nots.as_bytes()).is_err());
}

const PIECES: &[&str] = &[
    "From: A <a@x.test>\r\n",
    "To: undisclosed-recipients:;\r\n",
    "Cc: \"Q, R\" <q@x>, (comment) s@y, <@route:t@z>\r\n",
    "Subject: =?UTF-8?B?7ZWc6riA?=\r\n",
    "Content-Type: multipart/mixed; boundary=\"b\"\r\n",
    "Content-Type: multipart/alternative; boundary=b\r\n",
    "Content-Type: message/rfc822\r\n",
    "Content-Type: text/plain; charset=euc-kr\r\n",
    "Content-Transfer-Encoding: base64\r\n",
    "Content-Transfer-Encoding: quoted-printable\r\n",
    "Content-Transfer-Encoding: x-unknown\r\n",
    "Content-Disposition: attachment; filename=\"a.txt\"\r\n",
    "\r\n",
    "--b\r\n",
    "--b--\r\n",
    "aGVsbG8=\r\n",
    "=C3=A9=\r\n",
    "body line\r\n",
    "\n",
    "\u{0}\u{ff}",
    " folded continuation\r\n",
];

#[test]
fn random_messages_render_without_panicking() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let sections = [
        None,
        Some(SectionText::Header),
        Some(SectionText::Text),
        Some(SectionText::Mime),
        Some(SectionText::HeaderFields(vec![
            "From".into(),
            "Subject".into(),
        ])),
        Some(SectionText::HeaderFieldsNot(vec!["To".into()])),
    ];
    for _ in 0..20_000 {
        let mut raw = String::new();
        for _ in 0..(rng.next() % 25) {
            raw.push_str(rng.pick(PIECES));
        }
        let raw = raw.into_bytes();
        let meta = trimaran_core::message::parse(&raw);
        let mut out = Vec::new();
        let form = structure::Form {
            extended: true,
            utf8: rng.next().is_multiple_of(2),
            rev2: rng.next().is_multiple_of(2),
        };
        structure::write(&mut out, &meta, &raw, form);
        structure::write(&mut out, &meta, &raw, structure::Form::default());
        envelope::write(&mut out, section::message_header(&meta, &raw), false);
        for _ in 0..4 {
            let part: Vec<u32> = (0..rng.next() % 4)
                .map(|_| (rng.next() % 4 + 1) as u32)
                .collect();
            let text = sections[(rng.next() % sections.len() as u64) as usize].clone();
            let _ = section::body_section(
                &meta,
                &raw,
                &Section {
                    part: part.clone(),
                    text,
                },
            );
            let _ = section::binary_section(&meta, &raw, &part);
        }
    }
}
