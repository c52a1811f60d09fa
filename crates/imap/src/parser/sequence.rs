//! Sequence sets (RFC 9051 §9 `sequence-set`), including `*` and SEARCHRES's `$` (RFC 5182).

use super::lexer::{Lexer, Result};
use super::ParseError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Num(u32),
    /// The largest number in use (RFC 9051 §9 `seq-number`).
    Star,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeqSet {
    Ranges(Vec<(Bound, Bound)>),
    /// The result of the last SEARCH ... RETURN (SAVE) (RFC 5182 §2.1).
    Saved,
}

/// Most ranges one set may have; a longer set is an abuse, not a request.
const MAX_RANGES: usize = 100_000;

impl SeqSet {
    pub fn parse(lx: &mut Lexer<'_>) -> Result<SeqSet> {
        if lx.eat(b'$') {
            return Ok(SeqSet::Saved);
        }
        let mut ranges = Vec::new();
        loop {
            let a = bound(lx)?;
            let b = if lx.eat(b':') { bound(lx)? } else { a };
            ranges.push((a, b));
            if ranges.len() > MAX_RANGES {
                return Err(ParseError::Syntax("sequence set too long".into()));
            }
            if !lx.eat(b',') {
                return Ok(SeqSet::Ranges(ranges));
            }
        }
    }

    /// Whether `n` is in the set, `*` being `max` (RFC 9051 §9: "a:b" includes both ends,
    /// in either order).
    pub fn contains(ranges: &[(Bound, Bound)], n: u32, max: u32) -> bool {
        ranges.iter().any(|&(a, b)| {
            let (a, b) = (resolve(a, max), resolve(b, max));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            (lo..=hi).contains(&n)
        })
    }
}

pub fn resolve(b: Bound, max: u32) -> u32 {
    match b {
        Bound::Num(n) => n,
        Bound::Star => max,
    }
}

fn bound(lx: &mut Lexer<'_>) -> Result<Bound> {
    if lx.eat(b'*') {
        Ok(Bound::Star)
    } else {
        lx.nz_number().map(Bound::Num)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets() {
        let mut lx = Lexer::new(b"1:3,5,7:*,9:8");
        let SeqSet::Ranges(r) = SeqSet::parse(&mut lx).unwrap() else {
            panic!()
        };
        for (n, want) in [
            (1, true),
            (4, false),
            (5, true),
            (6, false),
            (8, true),
            (100, true),
        ] {
            assert_eq!(SeqSet::contains(&r, n, 100), want, "{n}");
        }
        assert!(SeqSet::parse(&mut Lexer::new(b"0")).is_err());
        assert!(SeqSet::parse(&mut Lexer::new(b"4294967296")).is_err());
    }
}
