//! Progress of a long run: a bar with rate and ETA on a terminal, a plain line every few
//! seconds otherwise (logs, cron mail).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    what: &'static str,
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    bytes: u64,
    started: Instant,
    last_line: Instant,
    quiet: bool,
}

impl Progress {
    /// `total` messages to go through; `quiet` prints nothing.
    pub fn new(what: &'static str, total: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            // With no total known, a counter with its rate instead of a bar.
            let (bar, template) = if total > 0 {
                (
                    ProgressBar::new(total),
                    "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} messages, {msg}, ETA {eta}",
                )
            } else {
                (
                    ProgressBar::new_spinner(),
                    "{prefix} [{elapsed_precise}] {spinner} {pos} messages, {msg}",
                )
            };
            bar.set_style(
                ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(what);
            bar
        });
        let now = Instant::now();
        Progress {
            what,
            bar,
            total,
            done: 0,
            bytes: 0,
            started: now,
            last_line: now,
            quiet,
        }
    }

    pub fn add(&mut self, messages: u64, bytes: u64) {
        self.done += messages;
        self.bytes += bytes;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!(
                "{} ({:.0} messages/s, {}/s)",
                human_bytes(self.bytes),
                self.done as f64 / secs,
                human_bytes((self.bytes as f64 / secs) as u64)
            ));
        } else if !self.quiet && self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let of = if self.total > 0 {
            format!("/{}", self.total)
        } else {
            String::new()
        };
        let eta = if rate > 0.0 && self.total > self.done {
            format!(", ETA {:.0} s", (self.total - self.done) as f64 / rate)
        } else {
            String::new()
        };
        format!(
            "{}: {}{of} messages, {} in {:.1} s ({:.0} messages/s, {}/s{eta})",
            self.what,
            self.done,
            human_bytes(self.bytes),
            secs,
            rate,
            human_bytes((self.bytes as f64 / secs) as u64),
        )
    }

    /// Ends the bar and prints the final figures.
    pub fn finish(self) -> String {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.line()
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
