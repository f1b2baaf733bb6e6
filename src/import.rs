//! `rapport import`: a JSON Lines file into a workspace, in chunks, with a
//! progress bar on stderr and a summary of accepted, duplicate and
//! rejected lines.

use anyhow::Context;
use rapport_domain::{GlobalId, Kind};
use rapport_store::entities::workspace;
use rapport_store::import::{CHUNK, ImportSummary, import_chunk, import_target};
use sea_orm::{DatabaseConnection, EntityTrait};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;
use uuid::Uuid;

pub async fn run(
    db: &DatabaseConnection,
    workspace_id: &str,
    channel_id: Option<&str>,
    file: &Path,
) -> anyhow::Result<()> {
    let id = GlobalId::decode(Kind::Workspace, workspace_id)
        .or_else(|| Uuid::parse_str(workspace_id).ok())
        .with_context(|| format!("{workspace_id:?} is not a workspace ID"))?;
    let ws = workspace::Entity::find_by_id(id)
        .one(db)
        .await?
        .with_context(|| format!("no workspace {workspace_id}"))?;
    let total_bytes = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len()
        .max(1);
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let channel = match channel_id {
        Some(raw) => Some(
            GlobalId::decode(Kind::Channel, raw)
                .or_else(|| Uuid::parse_str(raw).ok())
                .with_context(|| format!("{raw:?} is not a channel ID"))?,
        ),
        None => None,
    };
    let ch = import_target(db, &ws, channel).await.map_err(|e| match e {
        rapport_store::errors::StoreError::NotFound => {
            anyhow::anyhow!(
                "no channel {} in this workspace",
                channel_id.unwrap_or_default()
            )
        }
        e => anyhow::anyhow!(e),
    })?;
    let started = Instant::now();
    let mut summary = ImportSummary::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut chunk_lines = Vec::with_capacity(CHUNK);
    let mut read_bytes = 0u64;
    let mut lines = 0usize;
    let mut bar = Progress::new();
    // Rejections counted but no longer held (see below).
    let mut unlisted = 0usize;
    let flush = async |chunk: &mut Vec<serde_json::Value>,
                       chunk_lines: &mut Vec<usize>,
                       summary: &mut ImportSummary|
           -> anyhow::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut part = import_chunk(db, &ws, &ch, chunk, 0).await?;
        // Report rejections by line number in the file.
        for r in &mut part.rejected {
            r.0 = chunk_lines[r.0];
        }
        // No Redis here: live views catch up on their next read, the
        // worker's periodic rebuild schedules the SLA timers.
        summary.add(part);
        chunk.clear();
        chunk_lines.clear();
        Ok(())
    };
    let mut reader = reader;
    let mut raw = Vec::new();
    for n in 0.. {
        let (size, whole) = read_line(&mut reader, &mut raw, MAX_LINE)
            .with_context(|| format!("reading line {}", n + 1))?;
        if size == 0 {
            break;
        }
        read_bytes += size as u64;
        lines += 1;
        // One bad line is reported with its number; the rest go on.
        if !whole {
            summary
                .rejected
                .push((n + 1, format!("longer than {MAX_LINE} bytes")));
            continue;
        }
        let Ok(line) = std::str::from_utf8(&raw) else {
            summary.rejected.push((n + 1, "not UTF-8 text".into()));
            continue;
        };
        // Windows tools start a UTF-8 file with a byte-order mark.
        let line = if n == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(v) => {
                chunk.push(v);
                chunk_lines.push(n + 1);
            }
            Err(e) => summary.rejected.push((n + 1, format!("not JSON: {e}"))),
        }
        if chunk.len() == CHUNK {
            flush(&mut chunk, &mut chunk_lines, &mut summary).await?;
            bar.show(read_bytes, total_bytes, lines);
        }
        // Only the first rejections are printed: a file of bad lines must
        // not hold them all in memory.
        if summary.rejected.len() > 1000 {
            summary.rejected.sort();
            unlisted += summary.rejected.len() - SHOWN;
            summary.rejected.truncate(SHOWN);
        }
    }
    flush(&mut chunk, &mut chunk_lines, &mut summary).await?;
    bar.done(total_bytes, lines);
    println!(
        "imported {} lines in {:.1}s: {} accepted, {} duplicate, {} rejected",
        lines,
        started.elapsed().as_secs_f64(),
        summary.accepted,
        summary.duplicates,
        summary.rejected.len() + unlisted
    );
    summary.rejected.sort();
    for (line, reason) in summary.rejected.iter().take(SHOWN) {
        println!("  line {line}: {reason}");
    }
    let rejected = summary.rejected.len() + unlisted;
    if rejected > SHOWN {
        println!("  … and {} more", rejected - SHOWN);
    }
    // What was accepted stays imported; a script still learns that part
    // of the file was not.
    if rejected > 0 {
        anyhow::bail!("{rejected} of {lines} lines rejected (the others were imported)");
    }
    Ok(())
}

/// Rejections printed with their line number.
const SHOWN: usize = 20;

/// Progress on stderr: a bar redrawn in place on a terminal; elsewhere (a
/// log, CI) a plain line every few seconds, not thousands of `\r`s.
struct Progress {
    terminal: bool,
    last: std::time::Instant,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            terminal: std::io::stderr().is_terminal(),
            last: std::time::Instant::now(),
        }
    }

    fn show(&mut self, done: u64, total: u64, lines: usize) {
        if self.terminal {
            eprint!("\r{}", progress_line(done, total, lines));
            let _ = std::io::stderr().flush();
        } else if self.last.elapsed() >= std::time::Duration::from_secs(5) {
            self.last = std::time::Instant::now();
            eprintln!("{}", progress_line(done, total, lines));
        }
    }

    fn done(&mut self, total: u64, lines: usize) {
        if self.terminal {
            eprintln!("\r{}", progress_line(total, total, lines));
        } else {
            eprintln!("{}", progress_line(total, total, lines));
        }
    }
}

/// Longest line taken, as a webhook body: a file that is one huge line (a
/// JSON array instead of JSON Lines) is refused line by line, not loaded.
const MAX_LINE: usize = 1 << 20;

/// Reads the next line (without its `\n`) into `buf`, keeping at most
/// `max` bytes: returns the bytes consumed (0 at the end of the file) and
/// whether the line fit.
fn read_line(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    buf.clear();
    let (mut consumed, mut fits) = (0, true);
    loop {
        let available = r.fill_buf()?;
        if available.is_empty() {
            return Ok((consumed, fits));
        }
        let (part, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if fits && buf.len() + part.len() <= max {
            buf.extend_from_slice(part);
        } else {
            fits = false;
            buf.clear();
        }
        let used = done.unwrap_or(available.len());
        r.consume(used);
        consumed += used;
        if done.is_some() {
            return Ok((consumed, fits));
        }
    }
}

fn progress_line(done: u64, total: u64, lines: usize) -> String {
    let pct = (done * 100 / total.max(1)).min(100) as usize;
    let bar = "#".repeat(pct / 5) + &"-".repeat(20 - pct / 5);
    format!("[{bar}] {pct:>3}%  {lines} lines")
}

#[cfg(test)]
mod tests {
    use super::read_line;

    #[test]
    fn lines_are_read_whole_or_refused_past_the_limit() {
        let mut r = std::io::Cursor::new(b"ab\ncdefgh\n\xff\nlast".to_vec());
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf, 4).unwrap(), (3, true));
        assert_eq!(buf, b"ab");
        assert_eq!(read_line(&mut r, &mut buf, 4).unwrap(), (7, false));
        assert_eq!(read_line(&mut r, &mut buf, 4).unwrap(), (2, true));
        assert_eq!(buf, b"\xff");
        assert_eq!(read_line(&mut r, &mut buf, 4).unwrap(), (4, true));
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut r, &mut buf, 4).unwrap(), (0, true));
    }
}
