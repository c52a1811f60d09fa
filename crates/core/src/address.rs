//! Mailbox addresses as Trimaran stores and compares them.

/// Longest address accepted (RFC 5321 §4.5.3.1.3 limits a path to 256 octets).
pub const MAX_ADDRESS_LEN: usize = 254;

/// Normalises an address for lookup: the domain is lower-cased (domains are case-insensitive,
/// RFC 5321 §2.4) and so is the local part. RFC 5321 lets the local part be case-sensitive, but
/// every common server treats it as insensitive and users expect Alice@ and alice@ to be one.
/// Returns None for anything that is not `local@domain` with both parts non-empty.
pub fn normalize(address: &str) -> Option<String> {
    let address = address.trim();
    if address.len() > MAX_ADDRESS_LEN || address.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    let domain = domain.trim_end_matches('.');
    if domain.is_empty() || domain.starts_with('.') || domain.contains("..") {
        return None;
    }
    Some(format!(
        "{}@{}",
        local.to_lowercase(),
        domain.to_lowercase()
    ))
}

/// Normalises a bare domain name.
pub fn normalize_domain(domain: &str) -> Option<String> {
    let d = domain.trim().trim_end_matches('.').to_lowercase();
    let valid = !d.is_empty()
        && d.len() <= 253
        && !d.starts_with('.')
        && !d.contains("..")
        && d.chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    valid.then_some(d)
}

/// Splits off a `+detail` sub-address (RFC 5233), so that `alice+lists@x` reaches `alice@x`.
pub fn without_detail(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let (base, _) = local.split_once('+')?;
    (!base.is_empty()).then(|| format!("{base}@{domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(
            normalize("Alice@Example.TEST").as_deref(),
            Some("alice@example.test")
        );
        assert_eq!(
            normalize("用户@例子.test").as_deref(),
            Some("用户@例子.test")
        );
        assert_eq!(
            normalize("x@example.test.").as_deref(),
            Some("x@example.test")
        );
        assert_eq!(normalize("nope"), None);
        assert_eq!(normalize("@x"), None);
        assert_eq!(normalize("a@"), None);
        assert_eq!(normalize("a b@x"), None);
        assert_eq!(normalize("a@x..y"), None);
    }

    #[test]
    fn domains() {
        assert_eq!(
            normalize_domain("Example.TEST").as_deref(),
            Some("example.test")
        );
        assert_eq!(normalize_domain("bad domain"), None);
        assert_eq!(normalize_domain(""), None);
    }

    #[test]
    fn detail() {
        assert_eq!(without_detail("a+b@x").as_deref(), Some("a@x"));
        assert_eq!(without_detail("a@x"), None);
        assert_eq!(without_detail("+b@x"), None);
    }
}
