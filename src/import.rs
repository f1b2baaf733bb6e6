//! `rapport import`: a JSON Lines file into a workspace, in chunks, with a
//! progress bar on stderr and a summary of accepted, duplicate and
//! rejected lines.

use anyhow::Context;
use rapport_domain::{GlobalId, Kind};
use rapport_store::entities::workspace;
use rapport_store::import::{CHUNK, ImportSummary, import_channel, import_chunk};
use sea_orm::{DatabaseConnection, EntityTrait};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;
use uuid::Uuid;

pub async fn run(db: &DatabaseConnection, workspace_id: &str, file: &Path) -> anyhow::Result<()> {
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
    let ch = import_channel(db, &ws).await?;
    let started = Instant::now();
    let mut summary = ImportSummary::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut chunk_lines = Vec::with_capacity(CHUNK);
    let mut read_bytes = 0u64;
    let mut lines = 0usize;
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
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        read_bytes += line.len() as u64 + 1;
        lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(v) => {
                chunk.push(v);
                chunk_lines.push(n + 1);
            }
            Err(e) => summary.rejected.push((n + 1, format!("not JSON: {e}"))),
        }
        if chunk.len() == CHUNK {
            flush(&mut chunk, &mut chunk_lines, &mut summary).await?;
            progress(read_bytes, total_bytes, lines);
        }
    }
    flush(&mut chunk, &mut chunk_lines, &mut summary).await?;
    progress(total_bytes, total_bytes, lines);
    eprintln!();
    println!(
        "imported {} lines in {:.1}s: {} accepted, {} duplicate, {} rejected",
        lines,
        started.elapsed().as_secs_f64(),
        summary.accepted,
        summary.duplicates,
        summary.rejected.len()
    );
    summary.rejected.sort();
    for (line, reason) in summary.rejected.iter().take(20) {
        println!("  line {line}: {reason}");
    }
    if summary.rejected.len() > 20 {
        println!("  … and {} more", summary.rejected.len() - 20);
    }
    Ok(())
}

fn progress(done: u64, total: u64, lines: usize) {
    let pct = (done * 100 / total).min(100) as usize;
    let bar = "#".repeat(pct / 5) + &"-".repeat(20 - pct / 5);
    eprint!("\r[{bar}] {pct:>3}%  {lines} lines");
    let _ = std::io::stderr().flush();
}
