//! Command-line framing with a hard length bound: a client that never sends LF cannot make us
//! buffer more than the bound.

/// Bytes read from the client and not yet consumed.
#[derive(Default)]
pub struct InBuf {
    buf: Vec<u8>,
    start: usize,
    /// Inside an over-long line: drop bytes until its LF.
    discarding: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A complete line including its LF.
    Line(Vec<u8>),
    /// A line longer than the bound was received and thrown away.
    TooLong,
    /// More input is needed.
    Incomplete,
}

impl InBuf {
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn has_pending(&self) -> bool {
        self.start < self.buf.len()
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Drops everything buffered (after STARTTLS, RFC 3207 §4.2).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.discarding = false;
    }

    /// Space to read into; `extend` commits what was read.
    pub fn append(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next line if complete; at most `max` bytes including CRLF.
    pub fn take_line(&mut self, max: usize) -> Framed {
        let lf = self.pending().iter().position(|&b| b == b'\n');
        match lf {
            Some(lf) => {
                let was_discarding = std::mem::take(&mut self.discarding);
                if was_discarding || lf + 1 > max {
                    self.consume(lf + 1);
                    return Framed::TooLong;
                }
                let line = self.pending()[..=lf].to_vec();
                self.consume(lf + 1);
                Framed::Line(line)
            }
            None => {
                let n = self.pending().len();
                if n >= max || self.discarding {
                    self.discarding = true;
                    self.consume(n);
                }
                Framed::Incomplete
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_lines() {
        let mut b = InBuf::default();
        b.append(b"EHLO x\r\nMAIL FROM:<>\r\nRC");
        assert_eq!(b.take_line(100), Framed::Line(b"EHLO x\r\n".to_vec()));
        assert_eq!(b.take_line(100), Framed::Line(b"MAIL FROM:<>\r\n".to_vec()));
        assert_eq!(b.take_line(100), Framed::Incomplete);
        b.append(b"PT TO:<a@b>\r\n");
        assert_eq!(
            b.take_line(100),
            Framed::Line(b"RCPT TO:<a@b>\r\n".to_vec())
        );
    }

    #[test]
    fn overlong_line_is_dropped_without_buffering() {
        let mut b = InBuf::default();
        for _ in 0..100 {
            b.append(&[b'x'; 1000]);
            assert_eq!(b.take_line(512), Framed::Incomplete);
            assert!(b.pending().len() < 1000);
        }
        b.append(b"xx\r\nNOOP\r\n");
        assert_eq!(b.take_line(512), Framed::TooLong);
        assert_eq!(b.take_line(512), Framed::Line(b"NOOP\r\n".to_vec()));
    }

    #[test]
    fn line_just_over_the_bound() {
        let mut b = InBuf::default();
        let mut line = vec![b'a'; 20];
        line.extend_from_slice(b"\r\n");
        b.append(&line);
        assert_eq!(b.take_line(21), Framed::TooLong);
        b.append(&line);
        assert_eq!(b.take_line(22), Framed::Line(line));
    }
}
