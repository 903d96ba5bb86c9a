//! `tollgate backup`: a consistent copy of the SQLite database, taken while
//! the server runs, with SQLite's online backup API.
//!
//! The copy is one snapshot: the source connection holds a read transaction
//! from the first page to the last, so the steps all read the same state of
//! the database, and (WAL) the server's writes go on meanwhile instead of
//! restarting the backup at every commit. The copy is written to a temporary
//! file beside the destination and renamed into place when complete, so
//! PATH never holds half a database; it is switched to a rollback journal,
//! which makes it one self-contained file (tollgate turns WAL on again when
//! it opens a restored copy).

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Pages copied per step (1 MiB with the default page size): the progress
/// callback runs between steps.
const PAGES_PER_STEP: i32 = 256;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{} exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("there is no database at {}", .0.display())]
    NoDatabase(PathBuf),
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{what}: {err}")]
    Io {
        what: String,
        #[source]
        err: std::io::Error,
    },
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> BackupError {
    move |err| BackupError::Io { what, err }
}

/// How far a backup is: pages copied of pages in all.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub copied: u64,
    pub total: u64,
}

/// What a finished backup wrote.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    pub bytes: u64,
    pub pages: u64,
}

/// Copies the database at `source` to `dest` (refused when `dest` exists,
/// unless `force`), calling `progress` after each step of a database larger
/// than one step.
pub fn backup_sqlite(
    source: &Path,
    dest: &Path,
    force: bool,
    mut progress: impl FnMut(Progress),
) -> Result<Written, BackupError> {
    if !force && std::fs::symlink_metadata(dest).is_ok() {
        return Err(BackupError::Exists(dest.to_owned()));
    }
    if !source.is_file() {
        return Err(BackupError::NoDatabase(source.to_owned()));
    }
    // Read-write without create: a reader of a WAL database maps its -shm
    // file, and a mistyped path must not make an empty database.
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(Duration::from_secs(10))?;
    // The snapshot: a read transaction, started by the first read.
    src.execute_batch("BEGIN")?;
    src.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;

    let tmp = temporary_beside(dest);
    let _ = std::fs::remove_file(&tmp);
    let result = copy_into(&src, &tmp, &mut progress).and_then(|pages| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(format!("cannot sync {}", tmp.display())))?;
        std::fs::rename(&tmp, dest)
            .map_err(io(format!("cannot move the copy to {}", dest.display())))?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename itself is durable once the directory is synced.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        let bytes = std::fs::metadata(dest)
            .map_err(io(format!("cannot read {}", dest.display())))?
            .len();
        Ok(Written { bytes, pages })
    });
    if result.is_err() {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = tmp.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
    let _ = src.execute_batch("COMMIT");
    result
}

/// `.NAME.backup-PID` in the destination's directory (a rename within one
/// file system is atomic).
fn temporary_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tollgate.db".into());
    dest.with_file_name(format!(".{name}.backup-{}", std::process::id()))
}

/// Runs the backup into a new file at `tmp`; returns the pages copied.
fn copy_into(
    src: &Connection,
    tmp: &Path,
    progress: &mut impl FnMut(Progress),
) -> Result<u64, BackupError> {
    let mut dst = Connection::open(tmp)?;
    let pages = {
        let backup = Backup::new(src, &mut dst)?;
        loop {
            let step = backup.step(PAGES_PER_STEP)?;
            let p = backup.progress();
            let total = p.pagecount.max(0) as u64;
            if total > PAGES_PER_STEP as u64 {
                progress(Progress {
                    copied: total.saturating_sub(p.remaining.max(0) as u64),
                    total,
                });
            }
            match step {
                StepResult::Done => break total,
                StepResult::More => {}
                // The destination is ours alone; the source is only read.
                // Either is rare and passes.
                StepResult::Busy | StepResult::Locked => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {}
            }
        }
    };
    // One file, no -wal beside it: a copy can be moved and opened anywhere.
    dst.query_row("PRAGMA journal_mode = DELETE", [], |r| {
        r.get::<_, String>(0)
    })?;
    dst.close().map_err(|(_, e)| e)?;
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_a_database_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        let c = Connection::open(&src).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE t (x BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
             INSERT INTO t SELECT zeroblob(8000) FROM n;",
        )
        .unwrap();
        let dest = dir.path().join("copy.db");
        let mut steps = Vec::new();
        let w = backup_sqlite(&src, &dest, false, |p| steps.push(p)).unwrap();
        assert!(steps.len() > 1, "{steps:?}");
        assert_eq!(steps.last().map(|p| p.copied), Some(w.pages));
        assert_eq!(w.bytes, std::fs::metadata(&dest).unwrap().len());
        let copy = Connection::open(&dest).unwrap();
        let n: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 400);
        let mode: String = copy
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        drop(copy);

        let e = backup_sqlite(&src, &dest, false, |_| {}).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        backup_sqlite(&src, &dest, true, |_| {}).unwrap();
        let e = backup_sqlite(
            &dir.path().join("none.db"),
            &dir.path().join("x"),
            false,
            |_| {},
        )
        .unwrap_err();
        assert!(matches!(e, BackupError::NoDatabase(_)), "{e}");
        assert!(!dir.path().join("none.db").exists());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".backup-"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }

    #[test]
    fn the_copy_is_the_state_when_it_began_despite_writes_between_steps() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        let c = Connection::open(&src).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE t (x BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
             INSERT INTO t SELECT zeroblob(8000) FROM n;",
        )
        .unwrap();
        // Another connection (the server's) commits after every step.
        let mut steps = 0;
        let w = backup_sqlite(&src, &dir.path().join("copy.db"), false, |_| {
            steps += 1;
            c.execute("INSERT INTO t VALUES (zeroblob(8000))", [])
                .unwrap();
        })
        .unwrap();
        // No restart: each step went on from the last.
        assert_eq!(steps as u64, w.pages.div_ceil(PAGES_PER_STEP as u64));
        let copy = Connection::open(dir.path().join("copy.db")).unwrap();
        let n: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 300);
        let live: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(live, 300 + steps);
    }
}
