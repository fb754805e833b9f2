use super::*;

const SMALL: Limits = Limits {
    max_bytes: 1 << 20,
    segment_bytes: 100,
};

fn payloads(range: std::ops::Range<u32>) -> Vec<Bytes> {
    range.map(|i| Bytes::from(format!("message {i}"))).collect()
}

fn texts(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.payload.to_vec()).unwrap())
        .collect()
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(SEGMENT_SUFFIX)
        })
        .count()
}

const NO_LINGER: Duration = Duration::ZERO;

#[tokio::test]
async fn delivers_in_order_across_segments_and_acks_free_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, mut reader) = open(dir.path(), SMALL).unwrap();
    writer.append(payloads(0..10)).await.unwrap();
    writer.append(payloads(10..25)).await.unwrap();
    assert!(segment_files(dir.path()) > 1);

    let first = reader.next_batch(20, NO_LINGER).await.unwrap();
    let second = reader.next_batch(20, NO_LINGER).await.unwrap();
    assert_eq!(first.len(), 20);
    assert_eq!(
        [texts(&first), texts(&second)].concat(),
        (0..25).map(|i| format!("message {i}")).collect::<Vec<_>>()
    );
    assert_eq!(second.last().unwrap().seq, 25);
    reader.handle().ack(25).unwrap();
    assert_eq!(
        segment_files(dir.path()),
        1,
        "only the current segment stays"
    );
    assert_eq!(reader.handle().stats().pending, 0);
}

#[tokio::test]
async fn a_reopened_buffer_replays_only_what_was_not_acked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut writer, mut reader) = open(dir.path(), SMALL).unwrap();
        writer.append(payloads(0..10)).await.unwrap();
        let batch = reader.next_batch(4, NO_LINGER).await.unwrap();
        reader.handle().ack(batch.last().unwrap().seq).unwrap();
        // Handed out but never acked: must come again.
        reader.next_batch(3, NO_LINGER).await.unwrap();
    }
    let (mut writer, mut reader) = open(dir.path(), SMALL).unwrap();
    writer.append(payloads(10..12)).await.unwrap();
    let replayed = reader.next_batch(100, NO_LINGER).await.unwrap();
    assert_eq!(replayed.first().unwrap().seq, 5);
    assert_eq!(replayed.last().unwrap().seq, 12, "numbering continues");
    assert_eq!(texts(&replayed)[0], "message 4");
    assert_eq!(texts(&replayed)[7], "message 11");
}

#[tokio::test]
async fn numbering_continues_after_everything_was_acked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut writer, mut reader) = open(dir.path(), SMALL).unwrap();
        writer.append(payloads(0..30)).await.unwrap();
        let all = reader.next_batch(100, NO_LINGER).await.unwrap();
        reader.handle().ack(all.last().unwrap().seq).unwrap();
    }
    let (mut writer, mut reader) = open(dir.path(), SMALL).unwrap();
    assert_eq!(reader.available(), 0);
    writer.append(payloads(30..31)).await.unwrap();
    let next = reader.next_batch(100, NO_LINGER).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].seq, 31);
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_appending_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let big = Limits {
        max_bytes: 1 << 20,
        segment_bytes: 1 << 20,
    };
    {
        let (mut writer, _reader) = open(dir.path(), big).unwrap();
        writer.append(payloads(0..3)).await.unwrap();
    }
    // A crash in the middle of the next append.
    let segment = dir.path().join(format!("{:020}{SEGMENT_SUFFIX}", 1));
    let mut torn = Vec::new();
    record::encode(4, b"half written", &mut torn);
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&torn[..torn.len() - 3]).unwrap();
    drop(file);

    let (mut writer, mut reader) = open(dir.path(), big).unwrap();
    writer.append(payloads(3..5)).await.unwrap();
    let all = reader.next_batch(100, NO_LINGER).await.unwrap();
    assert_eq!(
        texts(&all),
        [
            "message 0",
            "message 1",
            "message 2",
            "message 3",
            "message 4"
        ]
    );
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
}

#[tokio::test]
async fn when_full_the_oldest_undelivered_records_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Limits {
        max_bytes: 300,
        segment_bytes: 100,
    };
    let (mut writer, mut reader) = open(dir.path(), tiny).unwrap();
    for i in 0..40 {
        writer.append(payloads(i..i + 1)).await.unwrap();
    }
    let stats = reader.handle().stats();
    assert!(stats.bytes_on_disk <= 300 + 100, "{stats:?}");
    assert!(stats.dropped > 0, "{stats:?}");
    let rest = reader.next_batch(100, NO_LINGER).await.unwrap();
    assert_eq!(rest.last().unwrap().seq, 40, "the newest data is kept");
    assert_eq!(
        rest.len() as u64 + stats.dropped,
        40,
        "every record delivered or counted"
    );
    let seqs: Vec<u64> = rest.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test]
async fn a_partial_batch_waits_for_the_linger_then_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, mut reader) = open(dir.path(), SMALL).unwrap();
    writer.append(payloads(0..2)).await.unwrap();
    let started = Instant::now();
    let batch = reader
        .next_batch(100, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);
    assert!(started.elapsed() >= Duration::from_millis(100));

    let waiting = tokio::spawn(async move {
        let batch = reader.next_batch(3, Duration::from_secs(60)).await.unwrap();
        batch.len()
    });
    writer.append(payloads(2..5)).await.unwrap();
    assert_eq!(waiting.await.unwrap(), 3, "a full batch does not wait");
}
