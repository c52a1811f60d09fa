//! One writer thread per SQLite database, committing concurrent writes in groups.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every commit costs an fsync of
//! the WAL. Writes are therefore queued to a single thread that takes every job waiting, runs each
//! inside its own SAVEPOINT of one transaction, and commits once: N concurrent deliveries cost one
//! fsync. No job is answered before the COMMIT that makes it durable has returned (G1).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{map_err, open_connection, Journal};
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

pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    thread: JoinHandle<()>,
    /// Set when an I/O error stopped the writer of an unpublished database (see `run`).
    broken: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer thread on an already configured connection.
    pub fn start(path: PathBuf, conn: Connection, journal: Journal) -> Writer {
        Writer::start_bounded(path, conn, journal, WAL_RESTART_FRAMES)
    }

    /// [`Writer::start`], with the WAL started over past `restart_frames` frames.
    fn start_bounded(
        path: PathBuf,
        conn: Connection,
        journal: Journal,
        restart_frames: i64,
    ) -> Writer {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let wal = journal == Journal::Durable;
        let running = Arc::new(AtomicBool::new(wal));
        let wal_large = Arc::new(AtomicBool::new(false));
        match wal.then(|| open_connection(&path, journal)) {
            // Without a WAL there is nothing to copy back.
            None => {}
            Some(Ok(checkpoints)) => {
                let running = running.clone();
                let wal_large = wal_large.clone();
                std::thread::Builder::new()
                    .name("sqlite-checkpoint".into())
                    .spawn(move || checkpoint(checkpoints, running, wal_large, restart_frames))
                    .expect("spawning the SQLite checkpoint thread");
            }
            // The writer then checkpoints by itself, as SQLite does by default.
            Some(Err(e)) => {
                tracing::warn!(error = %e, "no checkpoint connection; the writer checkpoints");
                running.store(false, Ordering::Relaxed);
            }
        }
        let broken = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn({
                let broken = broken.clone();
                move || run(path, journal, conn, queue, running, wal_large, broken)
            })
            .expect("spawning the SQLite writer thread");
        Writer {
            jobs,
            thread,
            broken,
        }
    }

    /// Waits for the jobs sent so far to finish and the thread to close its connection. Fails
    /// when an I/O error stopped the writer of an unpublished database, whose file can then
    /// not be trusted.
    pub fn close(self) -> Result<()> {
        let Writer {
            jobs,
            thread,
            broken,
        } = self;
        drop(jobs);
        thread
            .join()
            .map_err(|_| StoreError::Internal("the SQLite writer thread panicked".into()))?;
        if broken.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable(
                "an I/O error stopped the writes to this database part-way".into(),
            ));
        }
        Ok(())
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

/// WAL frames (pages; 1 GiB) past which the writer makes sure the log starts over (see
/// `checkpoint`). Each start-over stalls the writer for a checkpoint's two fsyncs, 100–200 ms
/// while a bulk write (a restore) keeps the disk busy: at 64 MiB that was 25 stalls in a
/// restore of 100,000 messages, 8% of its time. A server with any pause in its writes starts
/// the log over by itself long before this; the bound is for writes that never pause.
const WAL_RESTART_FRAMES: i64 = 262_144;

/// What a WAL file that has started over is cut back to, in bytes.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// The writer's own settings. With a checkpoint thread, commits no longer stop to copy the
/// WAL into the database (SQLite's default does that in the committing thread every 4 MiB,
/// with its own fsyncs): the copying and its fsyncs happen beside the writes. A larger page
/// cache keeps the index pages a batch of inserts touches between commits. The statement
/// journal behind each job's savepoint stays in memory instead of spilling to a temporary
/// file past 64 KiB (it holds the pages one job changed, until the job ends). None of this
/// changes what a commit guarantees (the WAL is fsynced at each commit, synchronous=FULL).
fn writer_settings(conn: &Connection, checkpointer: bool) {
    let autocheckpoint = if checkpointer { 0 } else { 1000 };
    if let Err(e) = conn.execute_batch(&format!(
        "PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint={autocheckpoint}; \
         PRAGMA temp_store=MEMORY; PRAGMA journal_size_limit={WAL_SIZE_LIMIT};"
    )) {
        tracing::warn!(error = %e, "setting up the SQLite writer connection");
    }
}

/// Copies what is committed in the WAL into the database without waiting for readers or
/// the writer (PASSIVE), until the writer stops.
///
/// Copying is not enough to keep the WAL small: SQLite starts writing the log from its
/// beginning again only when a write transaction begins with every frame already copied.
/// Under a steady stream of writes the writer always begins its next transaction before this
/// thread has caught up, so the log would grow without end (seen: 7 GB of WAL for a 1.8 GB
/// database after 100,000 IMAP APPENDs). Past `WAL_RESTART_FRAMES` this thread asks the
/// writer to copy the rest itself between two transactions, which lets the next one start
/// the log over.
fn checkpoint(
    conn: Connection,
    running: Arc<AtomicBool>,
    wal_large: Arc<AtomicBool>,
    restart_frames: i64,
) {
    while running.load(Ordering::Relaxed) {
        std::thread::sleep(CHECKPOINT_EVERY);
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) if frames > restart_frames => wal_large.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "WAL checkpoint"),
        }
    }
}

fn run(
    path: PathBuf,
    journal: Journal,
    mut conn: Connection,
    queue: mpsc::Receiver<Box<dyn Job>>,
    checkpointer: Arc<AtomicBool>,
    wal_large: Arc<AtomicBool>,
    broken: Arc<AtomicBool>,
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
        if wal_large.swap(false, Ordering::Relaxed) {
            // No transaction of ours is open: this copies what the checkpoint thread has not
            // yet (usually little; the cost is its fsyncs), unless a reader still needs older
            // frames, in which case the next round tries again.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::debug!(error = %e, "WAL checkpoint by the writer");
            }
        }
        if io_trouble && journal == Journal::Unpublished {
            // Its journal was in this connection's memory only: a transaction that could not
            // be rolled back may have left pages of it in the file, and no fresh connection
            // would know. Nothing more is written, and the database is never published.
            broken.store(true, Ordering::Relaxed);
            while let Ok(job) = queue.try_recv() {
                job.finish(Err(StoreError::Unavailable(
                    "an earlier I/O error stopped the writes to this database".into(),
                )));
            }
            break;
        }
        if io_trouble {
            // After an I/O error (disk full, read-only file system) start again from a fresh
            // connection rather than trust the state of this one.
            match open_connection(&path, journal) {
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
    // A job alone in its group needs no savepoint: the transaction is its own, and rolling
    // it back undoes the job and nothing else. A savepoint copies every page the job changes
    // to the statement journal first, which for a bulk write (a restore batch) is a good part
    // of the writer's work.
    let solo = group.len() == 1;
    let mut pending = group.into_iter();
    for mut job in pending.by_ref() {
        // BEGIN itself may have waited on a stalled disk while the caller gave up.
        if job.abandoned() {
            continue;
        }
        if !solo {
            if let Err(e) = conn.execute_batch("SAVEPOINT job") {
                abort = Some(map_err(e));
                job.finish(Err(abort.clone().expect("just set")));
                break;
            }
        }
        // A panicking job must not take the writer thread (and with it every later write) down.
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn)))
            .unwrap_or_else(|_| {
                tracing::error!("a SQLite write job panicked; its work is rolled back");
                false
            });
        ran.push(job);
        if solo {
            if !ok {
                // The job's own error is what it reports (`Job::finish`); the rollback only
                // has to happen. SQLite having rolled back by itself means I/O trouble, as below.
                abort = Some(if conn.is_autocommit() {
                    StoreError::Unavailable(
                        "SQLite rolled the transaction back after an error".into(),
                    )
                } else {
                    StoreError::Internal("write job failed".into())
                });
            }
            break;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers that never pause: the writer begins each transaction right after the last
    /// commit, before the checkpoint thread can have copied everything. Without the writer's
    /// own checkpoint the WAL then only grows (here to the whole 100 MiB written; with it, about 20 MiB: what is written between two
    /// checkpoints).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_a_steady_stream_of_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = open_connection(&path, Journal::Durable).unwrap();
        conn.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let writer = Arc::new(Writer::start_bounded(
            path.clone(),
            conn,
            Journal::Durable,
            256,
        ));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let w = writer.clone();
                tokio::spawn(async move {
                    for _ in 0..800 {
                        w.write(|c| {
                            c.execute("INSERT INTO t VALUES (zeroblob(16384))", [])
                                .map_err(map_err)?;
                            Ok(())
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("w.db-wal"))
            .unwrap()
            .len();
        assert!(wal < 40 << 20, "WAL of {wal} bytes for 100 MiB written");
    }
}
