//! One writer thread per SQLite database, committing concurrent writes in groups.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every commit costs an fsync of
//! the WAL. Writes are therefore queued to a single thread that takes every job waiting, runs each
//! inside its own SAVEPOINT of one transaction, and commits once: N concurrent deliveries cost one
//! fsync. No job is answered before the COMMIT that makes it durable has returned (G1).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{map_err, open_connection};
use crate::error::{Result, StoreError};

/// Most jobs in one transaction: bounds the latency a job can add to the others in its group.
const MAX_GROUP: usize = 512;

trait Job: Send {
    /// Whether the caller has stopped waiting (timed out); such a job is not run, so that a
    /// client told "try again later" does not also find its message delivered.
    fn abandoned(&self) -> bool;
    /// Runs the job's statements; false when it failed (its savepoint is then rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Reports the outcome once the group's commit is known.
    fn finish(self: Box<Self>, commit: Result<()>);
}

struct TypedJob<F, R> {
    work: Option<F>,
    outcome: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
}

impl<F, R> Job for TypedJob<F, R>
where
    F: FnOnce(&Connection) -> Result<R> + Send,
    R: Send,
{
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let work = self.work.take().expect("a job runs once");
        let outcome = work(conn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<()>) {
        let result = match (self.outcome, commit) {
            // The job's own error wins: its work was rolled back either way.
            (Some(Err(e)), _) => Err(e),
            (_, Err(e)) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (None, Ok(())) => Err(StoreError::Internal("write job was never run".into())),
        };
        let _ = self.reply.send(result);
    }
}

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer thread on an already configured connection.
    pub fn start(path: PathBuf, conn: Connection) -> Writer {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let running = Arc::new(AtomicBool::new(true));
        match open_connection(&path) {
            Ok(checkpoints) => {
                let running = running.clone();
                std::thread::Builder::new()
                    .name("sqlite-checkpoint".into())
                    .spawn(move || checkpoint(checkpoints, running))
                    .expect("spawning the SQLite checkpoint thread");
            }
            // The writer then checkpoints by itself, as SQLite does by default.
            Err(e) => {
                tracing::warn!(error = %e, "no checkpoint connection; the writer checkpoints");
                running.store(false, Ordering::Relaxed);
            }
        }
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(path, conn, queue, running))
            .expect("spawning the SQLite writer thread");
        Writer { jobs }
    }

    /// Runs `work` inside the next group transaction and returns its result once committed.
    pub async fn write<F, R>(&self, work: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(TypedJob {
            work: Some(work),
            outcome: None,
            reply,
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("SQLite writer dropped a job".into()))?
    }
}

/// How often the checkpoint thread copies committed WAL frames into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The writer's own settings. With a checkpoint thread, commits no longer stop to copy the
/// WAL into the database (SQLite's default does that in the committing thread every 4 MiB,
/// with its own fsyncs): the copying and its fsyncs happen beside the writes. A larger page
/// cache keeps the index pages a batch of inserts touches between commits. Neither changes
/// what a commit guarantees (the WAL is fsynced at each commit, synchronous=FULL).
fn writer_settings(conn: &Connection, checkpointer: bool) {
    let autocheckpoint = if checkpointer { 0 } else { 1000 };
    if let Err(e) = conn.execute_batch(&format!(
        "PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint={autocheckpoint};"
    )) {
        tracing::warn!(error = %e, "setting up the SQLite writer connection");
    }
}

/// Copies what is committed in the WAL into the database without waiting for readers or
/// the writer (PASSIVE), until the writer stops.
fn checkpoint(conn: Connection, running: Arc<AtomicBool>) {
    while running.load(Ordering::Relaxed) {
        std::thread::sleep(CHECKPOINT_EVERY);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "WAL checkpoint");
        }
    }
}

fn run(
    path: PathBuf,
    mut conn: Connection,
    queue: mpsc::Receiver<Box<dyn Job>>,
    checkpointer: Arc<AtomicBool>,
) {
    writer_settings(&conn, checkpointer.load(Ordering::Relaxed));
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        group.retain(|job| !job.abandoned());
        if group.is_empty() {
            continue;
        }
        let io_trouble = commit_group(&conn, group);
        if io_trouble {
            // After an I/O error (disk full, read-only file system) start again from a fresh
            // connection rather than trust the state of this one.
            match open_connection(&path) {
                Ok(fresh) => {
                    writer_settings(&fresh, checkpointer.load(Ordering::Relaxed));
                    conn = fresh
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reopening the SQLite writer connection failed")
                }
            }
        }
    }
    checkpointer.store(false, Ordering::Relaxed);
}

/// Runs one group; returns true when the connection hit an I/O-level failure.
fn commit_group(conn: &Connection, group: Vec<Box<dyn Job>>) -> bool {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let err = map_err(e);
        let io = err.is_retryable();
        for job in group {
            job.finish(Err(err.clone()));
        }
        return io;
    }
    let mut ran: Vec<Box<dyn Job>> = Vec::with_capacity(group.len());
    let mut abort: Option<StoreError> = None;
    let mut pending = group.into_iter();
    for mut job in pending.by_ref() {
        // BEGIN itself may have waited on a stalled disk while the caller gave up.
        if job.abandoned() {
            continue;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            abort = Some(map_err(e));
            job.finish(Err(abort.clone().expect("just set")));
            break;
        }
        // A panicking job must not take the writer thread (and with it every later write) down.
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn)))
            .unwrap_or_else(|_| {
                tracing::error!("a SQLite write job panicked; its savepoint is rolled back");
                false
            });
        ran.push(job);
        let end = if ok {
            conn.execute_batch("RELEASE job")
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")
        };
        if let Err(e) = end {
            abort = Some(map_err(e));
            break;
        }
        // SQLite may roll the whole transaction back by itself after an I/O error, disk full or
        // busy error. Running further jobs would then commit each of them on its own, outside
        // this group, so stop here.
        if conn.is_autocommit() {
            abort = Some(StoreError::Unavailable(
                "SQLite rolled the transaction back after an error".into(),
            ));
            break;
        }
    }
    let commit = match abort {
        Some(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
        None => conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            map_err(e)
        }),
    };
    let io = matches!(&commit, Err(e) if e.is_retryable());
    for job in ran {
        job.finish(commit.clone());
    }
    for job in pending {
        job.finish(Err(commit.clone().err().unwrap_or_else(|| {
            StoreError::Unavailable("write group aborted".into())
        })));
    }
    io
}
