//! HTTP Basic authentication (RFC 7617), checked exactly as IMAP LOGIN checks a password:
//! [`trimaran_core::auth::authenticate`], through the login throttle every protocol shares, so
//! guessing over HTTPS counts against the same limits as guessing over IMAP, POP3 or SMTP.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use trimaran_core::auth::{authenticate, Login};
use trimaran_core::store::AccountRecord;
use trimaran_core::Core;

/// The challenge of every 401 (RFC 9110 §11.6.1 requires one). RFC 7617 §2.1: `charset`
/// tells clients to send UTF-8, the only encoding we read.
pub const CHALLENGE: &str = r#"Basic realm="Trimaran", charset="UTF-8""#;

/// As IMAP's first failure waits: a client cannot try passwords back to back at full speed.
const FAILURE_PAUSE: Duration = Duration::from_millis(300);

/// How long a client should wait after a store failure (RFC 9110 §10.2.3 Retry-After).
const UNAVAILABLE_RETRY_SECONDS: u64 = 30;

/// What the Authorization field holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// No field, or a scheme other than Basic: answered with our challenge.
    Absent,
    /// Basic, but not a base64 `user-id:password`, or the field given twice.
    Malformed,
    Basic {
        user: Vec<u8>,
        password: Vec<u8>,
    },
}

pub(crate) fn credentials(headers: &HeaderMap) -> Credentials {
    let mut fields = headers.get_all(header::AUTHORIZATION).iter();
    let Some(field) = fields.next() else {
        return Credentials::Absent;
    };
    if fields.next().is_some() {
        return Credentials::Malformed;
    }
    let field = field.as_bytes();
    // RFC 9110 §11.4: auth-scheme [ 1*SP token68 ]; §11.1: the scheme is case-insensitive.
    let (scheme, rest) = match field.iter().position(|&b| b == b' ') {
        Some(i) => field.split_at(i),
        None => (field, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Credentials::Absent;
    }
    let token = rest.trim_ascii();
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token) else {
        return Credentials::Malformed;
    };
    // RFC 7617 §2: the user-id cannot contain a colon, so the first one ends it; the password
    // may contain any.
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return Credentials::Malformed;
    };
    Credentials::Basic {
        user: decoded[..colon].to_vec(),
        password: decoded[colon + 1..].to_vec(),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    // Answers about credentials are for this request alone (RFC 9111 §5.2.2.5).
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 401 with the Basic challenge.
pub(crate) fn challenge() -> Response {
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "Log in with your mail address and password.\n",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    response
}

/// 503 with Retry-After: our fault, temporary (DESIGN.md G2).
pub(crate) fn unavailable() -> Response {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporary failure; try again later.\n",
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(UNAVAILABLE_RETRY_SECONDS),
    );
    response
}

/// The account whose address and password the request carries, or the response to give
/// instead. Nothing else about the request decides whose data it may see.
pub(crate) async fn account(
    core: &Core,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Result<AccountRecord, Response> {
    let (user, password) =
        match credentials(headers) {
            Credentials::Basic { user, password } => (user, password),
            Credentials::Absent => return Err(challenge()),
            Credentials::Malformed => return Err(text(
                StatusCode::BAD_REQUEST,
                "Malformed Authorization field: expected Basic with base64 of address:password.\n",
            )),
        };
    // As IMAP LOGIN: a user name that is not UTF-8 names no account.
    let Ok(user) = String::from_utf8(user) else {
        tokio::time::sleep(FAILURE_PAUSE).await;
        return Err(challenge());
    };
    match authenticate(core, peer, &user, password).await {
        Ok(Login::Accepted(account)) => Ok(account),
        Ok(Login::Rejected) => {
            tracing::info!(%peer, "HTTPS authentication failed");
            tokio::time::sleep(FAILURE_PAUSE).await;
            Err(challenge())
        }
        Ok(Login::Throttled) => {
            tracing::info!(%peer, "HTTPS login refused: too many failed logins from this address");
            // RFC 6585 §4; the throttle's window is the longest the refusal can last.
            let mut response = text(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed logins from this address; try again later.\n",
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(core.config.login_throttle.window),
            );
            Err(response)
        }
        Err(e) => {
            tracing::warn!(error = %e, "HTTPS login: store unavailable");
            Err(unavailable())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn basic(user: &[u8], password: &[u8]) -> Credentials {
        Credentials::Basic {
            user: user.to_vec(),
            password: password.to_vec(),
        }
    }

    #[test]
    fn reads_basic_credentials() {
        // RFC 7617 §2's example.
        assert_eq!(
            credentials(&with(&["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="])),
            basic(b"Aladdin", b"open sesame")
        );
        // Scheme in any case, extra spaces; a password may hold colons, and be empty.
        assert_eq!(
            credentials(&with(&["bAsIc   YTpiOmM="])),
            basic(b"a", b"b:c")
        );
        assert_eq!(credentials(&with(&["Basic YTo="])), basic(b"a", b""));
        // Not UTF-8: still read here; the caller refuses it.
        assert_eq!(credentials(&with(&["Basic /zpw"])), basic(b"\xff", b"p"));
    }

    #[test]
    fn absent_or_other_schemes_get_the_challenge() {
        assert_eq!(credentials(&HeaderMap::new()), Credentials::Absent);
        assert_eq!(credentials(&with(&["Bearer abc"])), Credentials::Absent);
        assert_eq!(credentials(&with(&["Basicx YTpi"])), Credentials::Absent);
    }

    #[test]
    fn malformed_basic_is_a_bad_request() {
        for bad in ["Basic", "Basic !!!", "Basic YWJj", "Basic YTpi YTpi"] {
            assert_eq!(credentials(&with(&[bad])), Credentials::Malformed, "{bad}");
        }
        assert_eq!(
            credentials(&with(&["Basic YTpi", "Basic YTpi"])),
            Credentials::Malformed
        );
    }
}
