//! POP3 command lines (RFC 1939 §3): a keyword of 3–4 letters, case-insensitive, and arguments
//! separated by single spaces.

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Capa,
    User(String),
    Pass(String),
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    Stls,
    Utf8,
    Stat,
    List(Option<usize>),
    Retr(usize),
    Dele(usize),
    Top(usize, usize),
    Uidl(Option<usize>),
    Noop,
    Rset,
    Quit,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    Unknown,
    Syntax(&'static str),
}

/// Parses one line without its CRLF.
fn sasl_mech(m: &str) -> bool {
    (1..=20).contains(&m.len())
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn parse(line: &str) -> Result<Command, ParseError> {
    let (keyword, rest) = match line.split_once(' ') {
        Some((k, r)) => (k, Some(r)),
        None => (line, None),
    };
    let args: Vec<&str> = rest.map(|r| r.split(' ').collect()).unwrap_or_default();
    let number = |s: &str| -> Result<usize, ParseError> {
        // Message numbers are decimal, starting at 1 (RFC 1939 §5).
        match s.parse::<usize>() {
            Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(ParseError::Syntax(
                "message numbers are positive decimal integers",
            )),
        }
    };
    let no_args = |c: Command| {
        if rest.is_none() {
            Ok(c)
        } else {
            Err(ParseError::Syntax("no arguments expected"))
        }
    };
    match keyword.to_ascii_uppercase().as_str() {
        "CAPA" => no_args(Command::Capa),
        "STLS" => no_args(Command::Stls),
        "UTF8" => no_args(Command::Utf8),
        "STAT" => no_args(Command::Stat),
        "NOOP" => no_args(Command::Noop),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        // A user name or password may contain spaces: take the rest of the line.
        "USER" => match rest {
            Some(r) if !r.is_empty() => Ok(Command::User(r.to_string())),
            _ => Err(ParseError::Syntax("USER name")),
        },
        "PASS" => match rest {
            Some(r) => Ok(Command::Pass(r.to_string())),
            None => Err(ParseError::Syntax("PASS password")),
        },
        // RFC 5034 §4: "AUTH" SP sasl-mech [SP initial-response], with one space each and
        // a mechanism name of 1 to 20 letters, digits, "-" or "_" (RFC 4422 §3.1).
        "AUTH" => match args.as_slice() {
            [m] if sasl_mech(m) => Ok(Command::Auth {
                mechanism: m.to_ascii_uppercase(),
                initial: None,
            }),
            [m, ir] if sasl_mech(m) && !ir.is_empty() => Ok(Command::Auth {
                mechanism: m.to_ascii_uppercase(),
                initial: Some(ir.to_string()),
            }),
            _ => Err(ParseError::Syntax("AUTH mechanism [initial-response]")),
        },
        "LIST" => match args.as_slice() {
            [] => Ok(Command::List(None)),
            [n] => Ok(Command::List(Some(number(n)?))),
            _ => Err(ParseError::Syntax("LIST [msg]")),
        },
        "UIDL" => match args.as_slice() {
            [] => Ok(Command::Uidl(None)),
            [n] => Ok(Command::Uidl(Some(number(n)?))),
            _ => Err(ParseError::Syntax("UIDL [msg]")),
        },
        "RETR" => match args.as_slice() {
            [n] => Ok(Command::Retr(number(n)?)),
            _ => Err(ParseError::Syntax("RETR msg")),
        },
        "DELE" => match args.as_slice() {
            [n] => Ok(Command::Dele(number(n)?)),
            _ => Err(ParseError::Syntax("DELE msg")),
        },
        "TOP" => match args.as_slice() {
            [n, lines] => Ok(Command::Top(
                number(n)?,
                lines
                    .parse()
                    .map_err(|_| ParseError::Syntax("TOP msg lines"))?,
            )),
            _ => Err(ParseError::Syntax("TOP msg lines")),
        },
        _ => Err(ParseError::Unknown),
    }
}

/// Writes `content` as a multi-line response body (RFC 1939 §3): every line ends in CRLF (a
/// bare LF is completed), a line starting with "." gets another, and "." ends the response.
pub fn multiline(content: &[u8], out: &mut Vec<u8>) {
    out.reserve(content.len() + content.len() / 32 + 5);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in content {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// The header block and the first `lines` lines of the body (TOP, RFC 1939 §7).
pub fn top(message: &[u8], lines: usize) -> &[u8] {
    // RFC 1939 §7 TOP: the header, the empty line, then `lines` lines of the body. The header
    // ends at its first empty line, whatever the line endings: searching for "\r\n\r\n"
    // first would skip a bare-LF header's end and cut at a blank line inside the body.
    let mut header_end = message.len();
    let mut at = 0;
    while at < message.len() {
        let next = message[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |p| at + p + 1);
        if matches!(&message[at..next], b"\n" | b"\r\n") {
            header_end = next;
            break;
        }
        at = next;
    }
    let body = &message[header_end..];
    let mut end = 0;
    for _ in 0..lines {
        match body[end..].iter().position(|&b| b == b'\n') {
            Some(p) => end += p + 1,
            None => {
                end = body.len();
                break;
            }
        }
    }
    &message[..header_end + end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse("stat"), Ok(Command::Stat));
        assert_eq!(parse("LIST 2"), Ok(Command::List(Some(2))));
        assert_eq!(parse("TOP 1 0"), Ok(Command::Top(1, 0)));
        assert_eq!(parse("USER a b@c"), Ok(Command::User("a b@c".into())));
        assert_eq!(
            parse("PASS secret with spaces"),
            Ok(Command::Pass("secret with spaces".into()))
        );
        assert_eq!(
            parse("AUTH plain AGEAYg=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGEAYg==".into())
            })
        );
        for bad in [
            "AUTH",
            "AUTH ",
            "AUTH  PLAIN",
            "AUTH PLAIN ",
            "AUTH PLAIN  AGEAYg==",
            "AUTH PL@IN",
            "AUTH ABCDEFGHIJKLMNOPQRSTU",
        ] {
            assert_eq!(
                parse(bad),
                Err(ParseError::Syntax("AUTH mechanism [initial-response]")),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse("AUTH X-OAUTH_2"),
            Ok(Command::Auth {
                mechanism: "X-OAUTH_2".into(),
                initial: None
            })
        );
        assert_eq!(
            parse("RETR 0"),
            Err(ParseError::Syntax(
                "message numbers are positive decimal integers"
            ))
        );
        assert!(parse("RETR -1").is_err());
        assert!(parse("RETR 99999999999999999999999").is_err());
        assert_eq!(
            parse("STAT x"),
            Err(ParseError::Syntax("no arguments expected"))
        );
        assert_eq!(parse("XYZZY"), Err(ParseError::Unknown));
    }

    #[test]
    fn multiline_stuffs_dots_and_terminates() {
        let mut out = Vec::new();
        multiline(b"a\r\n.b\r\nbare\nend", &mut out);
        assert_eq!(out, b"a\r\n..b\r\nbare\r\nend\r\n.\r\n");
        let mut out = Vec::new();
        multiline(b"", &mut out);
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn top_lines() {
        let m = b"Subject: x\r\n\r\none\r\ntwo\r\nthree\r\n";
        assert_eq!(top(m, 0), b"Subject: x\r\n\r\n");
        assert_eq!(top(m, 2), b"Subject: x\r\n\r\none\r\ntwo\r\n");
        assert_eq!(top(m, 10), &m[..]);
        // A bare-LF header ends at its own blank line, not at a CRLF one in the body.
        let mixed = b"Subject: x\nFrom: y\n\nfirst\r\n\r\nsecond\r\n";
        assert_eq!(top(mixed, 0), b"Subject: x\nFrom: y\n\n");
        assert_eq!(top(mixed, 1), b"Subject: x\nFrom: y\n\nfirst\r\n");
        // A blank first line is an empty header (found by fuzzing an older oracle).
        assert_eq!(top(b"\r\n\r\n", 0), b"\r\n");
        // No blank line at all: all of it is header.
        assert_eq!(top(b"Subject: x\r\n", 3), b"Subject: x\r\n");
    }
}

#[cfg(test)]
mod robustness {
    //! Whatever a client sends, the parser answers or refuses; it never panics.

    use super::{multiline, parse, top};

    #[test]
    fn parser_and_encoders_never_panic() {
        let mut state: u64 = 0x9090;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const WORDS: &[&str] = &[
            "USER",
            "PASS",
            "LIST",
            "RETR",
            "TOP",
            "UIDL",
            "DELE",
            "AUTH",
            "CAPA",
            " ",
            "0",
            "1",
            "18446744073709551616",
            "-1",
            "\r",
            "\n",
            ".",
            "é",
            "PLAIN",
            "=",
        ];
        for _ in 0..200_000 {
            let mut line = String::new();
            for _ in 0..(next() % 6) {
                line.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
                if next().is_multiple_of(2) {
                    line.push(' ');
                }
            }
            let _ = parse(&line);
            let bytes = line.as_bytes();
            let mut out = Vec::new();
            multiline(bytes, &mut out);
            assert!(out.ends_with(b".\r\n"));
            let _ = top(bytes, (next() % 5) as usize);
        }
    }
}
