//! Helpers shared by the fuzz targets in `fuzz_targets/`: checks that are independent of the
//! code under test, so that a target can tell a wrong answer from a right one.

pub mod imap_wire;

/// Whether `needle` occurs in `haystack` as one contiguous run of bytes.
pub fn is_subslice(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `part` is a slice borrowed from inside `whole` (same memory, not just equal bytes).
pub fn points_into(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

/// Printable hex of a few bytes, for assertion messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
