//! Store-and-forward between the bus and a sink's database.
//!
//! rumqttd keeps nothing on disk and skips a slow subscriber ahead, so a
//! sink must never make the bus wait for its database. Its consumer appends
//! every message here (fsynced per batch) the moment it arrives; the sink's
//! writer reads from here at whatever pace the database allows, and acks
//! what it has committed. What is not acked survives a database outage, a
//! crash and a restart, and is replayed in order.
//!
//! Layout of a buffer directory:
//! - `<first seq, 20 digits>.seg`: append-only segment files of records
//!   (see [`record`]); sequence numbers are consecutive across segments.
//! - `acked`: the highest sequence number the sink has committed. Losing an
//!   update only means replaying records the database will recognise.
//! - `id`: random identity of this buffer, stored with the sink's progress
//!   in the database, so a new buffer never inherits an old one's position.
//!
//! When the buffer is full (`max_bytes`), the oldest segment is deleted, and
//! its undelivered records are counted and logged as dropped: the newest data
//! matters most to a plant, and the disk must not fill up.

mod record;

use bytes::Bytes;
use record::Decoded;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const SEGMENT_SUFFIX: &str = ".seg";
const READ_BUFFER: usize = 64 << 10;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes on disk before the oldest segment is dropped.
    pub max_bytes: u64,
    /// A segment is closed and a new one started beyond this size.
    pub segment_bytes: u64,
}

#[derive(Debug, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub payload: Bytes,
}

/// Numbers for status output and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub bytes_on_disk: u64,
    /// Records written but not yet acked.
    pub pending: u64,
    /// Records deleted by the size cap before they were delivered.
    pub dropped: u64,
}

/// A buffer's shared side, usable while another task reads: its numbers,
/// and acking what has been delivered.
#[derive(Clone)]
pub struct BufferHandle(Arc<Shared>);

impl BufferHandle {
    pub fn stats(&self) -> Stats {
        self.0.stats()
    }

    /// This buffer's identity, stored with the sink's progress.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// Marks everything up to `seq` as delivered and deletes segments
    /// holding nothing else.
    pub fn ack(&self, seq: u64) -> io::Result<()> {
        let shared = &self.0;
        shared.acked.fetch_max(seq, Ordering::Relaxed);
        let tmp = shared.dir.join("acked.tmp");
        std::fs::write(&tmp, format!("{seq}\n"))?;
        std::fs::rename(&tmp, shared.dir.join("acked"))?;
        let mut segments = shared.segments();
        while segments.len() > 1 && segments[0].last_seq <= seq {
            let done = segments.pop_front().expect("more than one segment");
            std::fs::remove_file(shared.segment_path(done.first_seq))?;
        }
        Ok(())
    }
}

struct Segment {
    first_seq: u64,
    /// `first_seq - 1` while the segment holds no record.
    last_seq: u64,
    bytes: u64,
}

struct Shared {
    dir: PathBuf,
    id: String,
    segments: Mutex<VecDeque<Segment>>,
    /// Highest sequence number written and fsynced (0: none ever).
    durable: watch::Sender<u64>,
    acked: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    fn segments(&self) -> MutexGuard<'_, VecDeque<Segment>> {
        self.segments.lock().expect("buffer segment list lock")
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        self.dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
    }

    fn stats(&self) -> Stats {
        let bytes_on_disk = self.segments().iter().map(|s| s.bytes).sum();
        Stats {
            bytes_on_disk,
            pending: self
                .durable
                .borrow()
                .saturating_sub(self.acked.load(Ordering::Relaxed)),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Opens (or creates) the buffer in `dir`, repairing a record torn by a
/// crash, and returns its two ends.
pub fn open(dir: &Path, limits: Limits) -> anyhow::Result<(BufferWriter, BufferReader)> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let id = read_or_create_id(dir).with_context(|| format!("buffer {}", dir.display()))?;
    let acked = read_acked(dir).with_context(|| format!("buffer {}", dir.display()))?;
    let mut segments = scan_segments(dir).with_context(|| format!("buffer {}", dir.display()))?;
    // Fully delivered segments are garbage.
    while segments.len() > 1 && segments[0].last_seq <= acked {
        let first = segments.pop_front().expect("non-empty");
        std::fs::remove_file(dir.join(format!("{:020}{SEGMENT_SUFFIX}", first.first_seq)))?;
    }
    let last_written = segments.back().map_or(0, |s| s.last_seq).max(acked);
    let (durable, durable_rx) = watch::channel(last_written);
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        id,
        segments: Mutex::new(segments),
        durable,
        acked: AtomicU64::new(acked),
        dropped: AtomicU64::new(0),
    });
    let pending = last_written - acked;
    if pending > 0 {
        tracing::info!(buffer = %dir.display(), pending, "buffer holds undelivered messages; replaying them first");
    }
    let writer = BufferWriter {
        inner: Some(WriterInner {
            shared: shared.clone(),
            file: None,
            next_seq: last_written + 1,
            limits,
        }),
    };
    let reader = BufferReader {
        shared,
        durable: durable_rx,
        position: acked + 1,
        open: None,
    };
    Ok((writer, reader))
}

/// The bus side: appends messages durably.
pub struct BufferWriter {
    /// Moved onto the blocking pool for each append (fsync blocks).
    inner: Option<WriterInner>,
}

struct WriterInner {
    shared: Arc<Shared>,
    /// The segment being appended to; `None` until the first append, and
    /// after a failed write (the next append starts a new segment).
    file: Option<File>,
    next_seq: u64,
    limits: Limits,
}

impl BufferWriter {
    /// Appends `payloads` as consecutive records and fsyncs them; only then
    /// can the reader see them.
    pub async fn append(&mut self, payloads: Vec<Bytes>) -> io::Result<()> {
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("buffer writer lost after a panic"))?;
        let (inner, result) = tokio::task::spawn_blocking(move || {
            let result = inner.append(&payloads);
            (inner, result)
        })
        .await
        .map_err(io::Error::other)?;
        self.inner = Some(inner);
        result
    }
}

impl WriterInner {
    fn append(&mut self, payloads: &[Bytes]) -> io::Result<()> {
        if payloads.is_empty() {
            return Ok(());
        }
        let mut encoded =
            Vec::with_capacity(payloads.iter().map(|p| p.len() + record::HEADER_LEN).sum());
        for (seq, payload) in (self.next_seq..).zip(payloads) {
            record::encode(seq, payload, &mut encoded);
        }
        let file = self.current_segment()?;
        let written_before = file.metadata()?.len();
        if let Err(error) = file.write_all(&encoded).and_then(|()| file.sync_data()) {
            // Never leave a partial record for later ones to follow: they
            // would be unreadable behind it after a restart.
            let _ = file.set_len(written_before);
            self.file = None;
            return Err(error);
        }
        let last = self.next_seq + payloads.len() as u64 - 1;
        self.next_seq = last + 1;
        {
            let mut segments = self.shared.segments();
            let current = segments.back_mut().expect("current segment is listed");
            current.last_seq = last;
            current.bytes += encoded.len() as u64;
        }
        self.enforce_cap();
        self.shared.durable.send_replace(last);
        Ok(())
    }

    /// The segment to append to, starting a new one when the current is
    /// full (or broken).
    fn current_segment(&mut self) -> io::Result<&mut File> {
        let full = {
            let segments = self.shared.segments();
            segments
                .back()
                .is_none_or(|s| s.bytes >= self.limits.segment_bytes)
        };
        if self.file.is_none() || full {
            self.file = Some(self.start_segment()?);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }

    fn start_segment(&mut self) -> io::Result<File> {
        let path = self.shared.segment_path(self.next_seq);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // Only records from `next_seq` on can be in a file of that name, and
        // none of them was written successfully: whatever is there is junk.
        file.set_len(0)?;
        File::open(&self.shared.dir)?.sync_all()?;
        let mut segments = self.shared.segments();
        match segments.back_mut() {
            Some(back) if back.first_seq == self.next_seq => back.bytes = 0,
            _ => segments.push_back(Segment {
                first_seq: self.next_seq,
                last_seq: self.next_seq - 1,
                bytes: 0,
            }),
        }
        Ok(file)
    }

    fn enforce_cap(&self) {
        let mut segments = self.shared.segments();
        let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
        while total > self.limits.max_bytes && segments.len() > 1 {
            let oldest = segments.pop_front().expect("more than one segment");
            total -= oldest.bytes;
            let acked = self.shared.acked.load(Ordering::Relaxed);
            let lost = oldest
                .last_seq
                .saturating_sub(acked.max(oldest.first_seq - 1));
            let dropped = self.shared.dropped.fetch_add(lost, Ordering::Relaxed) + lost;
            if let Err(error) = std::fs::remove_file(self.shared.segment_path(oldest.first_seq)) {
                tracing::warn!(%error, "cannot delete buffer segment");
            }
            if lost > 0 {
                tracing::error!(
                    buffer = %self.shared.dir.display(), lost, dropped_total = dropped,
                    max_bytes = self.limits.max_bytes,
                    "buffer full: oldest undelivered messages dropped"
                );
            }
        }
    }
}

/// The sink side: reads records in order, acks what is committed.
pub struct BufferReader {
    shared: Arc<Shared>,
    durable: watch::Receiver<u64>,
    /// Sequence number of the next record to hand out.
    position: u64,
    open: Option<OpenSegment>,
}

struct OpenSegment {
    first_seq: u64,
    input: BufReader<File>,
}

impl BufferReader {
    /// Records written and not yet handed out.
    pub fn available(&self) -> u64 {
        (*self.durable.borrow() + 1).saturating_sub(self.position)
    }

    /// The buffer's shared side, for the task that acks and for metrics.
    pub fn handle(&self) -> BufferHandle {
        BufferHandle(self.shared.clone())
    }

    /// Waits for a first record, then up to `linger` for `max` of them;
    /// returns at most `max`. A backlog returns full batches at once.
    /// Empty only when the writer is gone and everything was handed out.
    pub async fn next_batch(&mut self, max: usize, linger: Duration) -> io::Result<Vec<Record>> {
        let max = max.max(1) as u64;
        while self.available() == 0 {
            if self.durable.changed().await.is_err() {
                return Ok(Vec::new());
            }
        }
        let deadline = Instant::now() + linger;
        while self.available() < max {
            tokio::select! {
                changed = self.durable.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.read(max)
    }

    /// Reads up to `max` records, as far as is durable now.
    fn read(&mut self, max: u64) -> io::Result<Vec<Record>> {
        let durable = *self.durable.borrow();
        let mut batch = Vec::with_capacity(self.available().min(max) as usize);
        while (batch.len() as u64) < max && self.position <= durable {
            if self.open.is_none() {
                self.open_segment_at_position()?;
            }
            let open = self.open.as_mut().expect("just opened");
            match record::decode(&mut open.input)? {
                Decoded::Record { seq, .. } if seq < self.position => {}
                Decoded::Record { seq, payload } => {
                    self.position = seq + 1;
                    batch.push(Record { seq, payload });
                }
                // This segment is exhausted: the next record is in the next one.
                Decoded::End if self.next_segment_start() == Some(self.position) => {
                    self.open = None;
                }
                Decoded::End => self.skip_damaged("record missing")?,
                Decoded::Torn(reason) => self.skip_damaged(reason)?,
            }
        }
        Ok(batch)
    }

    fn open_segment_at_position(&mut self) -> io::Result<()> {
        let first_seq = {
            let segments = self.shared.segments();
            let oldest = segments.front().map_or(self.position, |s| s.first_seq);
            // Records before the oldest segment were dropped by the cap.
            self.position = self.position.max(oldest);
            segments
                .iter()
                .rev()
                .find(|s| s.first_seq <= self.position)
                .map(|s| s.first_seq)
                .ok_or_else(|| io::Error::other("buffer has no segment to read"))?
        };
        let file = File::open(self.shared.segment_path(first_seq))?;
        self.open = Some(OpenSegment {
            first_seq,
            input: BufReader::with_capacity(READ_BUFFER, file),
        });
        Ok(())
    }

    fn next_segment_start(&self) -> Option<u64> {
        let current = self.open.as_ref()?.first_seq;
        self.shared
            .segments()
            .iter()
            .find(|s| s.first_seq > current)
            .map(|s| s.first_seq)
    }

    /// A segment damaged after it was written (disk error, tampering):
    /// carry on with the next one, loudly.
    fn skip_damaged(&mut self, reason: &str) -> io::Result<()> {
        let resume = self
            .next_segment_start()
            .unwrap_or(*self.durable.borrow() + 1);
        let lost = resume - self.position;
        tracing::error!(
            buffer = %self.shared.dir.display(), reason, lost, at = self.position,
            "buffer segment damaged; skipping the rest of it"
        );
        self.shared.dropped.fetch_add(lost, Ordering::Relaxed);
        self.position = resume;
        self.open = None;
        Ok(())
    }
}

fn read_or_create_id(dir: &Path) -> io::Result<String> {
    let path = dir.join("id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) => Err(io::Error::other(format!("{} is empty", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = format!("{:016x}", rand::random::<u64>());
            let mut file = File::create(&path)?;
            file.write_all(id.as_bytes())?;
            file.sync_all()?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

fn read_acked(dir: &Path) -> io::Result<u64> {
    match std::fs::read_to_string(dir.join("acked")) {
        Ok(text) => text.trim().parse().map_err(|_| {
            io::Error::other(format!("acked: {:?} is not a sequence number", text.trim()))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Lists the segments in order and checks every record, cutting a segment
/// at its first torn record (a crash mid-append leaves one at the end).
fn scan_segments(dir: &Path) -> io::Result<VecDeque<Segment>> {
    let mut starts: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            name.to_str()?.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()
        })
        .collect();
    starts.sort_unstable();
    let mut segments = VecDeque::with_capacity(starts.len());
    for first_seq in starts {
        let path = dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"));
        let mut input = BufReader::with_capacity(READ_BUFFER, File::open(&path)?);
        let mut segment = Segment {
            first_seq,
            last_seq: first_seq - 1,
            bytes: 0,
        };
        loop {
            match record::decode(&mut input)? {
                Decoded::Record { seq, payload } if seq == segment.last_seq + 1 => {
                    segment.last_seq = seq;
                    segment.bytes += (record::HEADER_LEN + payload.len()) as u64;
                }
                Decoded::End => break,
                torn => {
                    let size = std::fs::metadata(&path)?.len();
                    tracing::warn!(
                        segment = %path.display(), ?torn, kept = segment.bytes, cut = size - segment.bytes,
                        "buffer segment ends in a torn record (crash mid-write?); cutting it off"
                    );
                    OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .set_len(segment.bytes)?;
                    break;
                }
            }
        }
        segments.push_back(segment);
    }
    Ok(segments)
}

#[cfg(test)]
mod tests;
