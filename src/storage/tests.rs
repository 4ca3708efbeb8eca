//! Storage tests: round trips, crash tails at every byte, damage, random restarts, identity.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes
        .map(|i| {
            if i % 4 == 0 {
                Entry::noop(term, i)
            } else {
                Entry::command(term, i, format!("cmd-{term}-{i}").into_bytes())
            }
        })
        .collect()
}

fn hs(term: u64, vote: NodeId) -> HardState {
    HardState { term, vote }
}

fn wal_path(dir: &Path) -> PathBuf {
    dir.join(WAL_FILE_NAME)
}

fn wal_len(dir: &Path) -> u64 {
    fs::metadata(wal_path(dir)).unwrap().len()
}

fn reopen(dir: &Path) -> (Storage, RecoveredState) {
    Storage::open(dir, 1).unwrap_or_else(|e| panic!("reopen failed: {e}"))
}

/// A fresh data dir holding node 1's identity file and the first `cut` bytes of `wal`.
fn copy_cut(src: &Path, wal: &[u8], cut: usize) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    fs::copy(src.join(ID_FILE_NAME), dst.path().join(ID_FILE_NAME)).unwrap();
    fs::write(wal_path(dst.path()), &wal[..cut]).unwrap();
    dst
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn expect_corrupt(dir: &Path, offset: u64) {
    match Storage::open(dir, 1) {
        Err(e @ StorageError::Corrupt { .. }) => {
            let text = e.to_string();
            let StorageError::Corrupt {
                path, offset: got, ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(path, wal_path(dir));
            assert_eq!(got, offset, "{text}");
            assert!(
                text.contains(&wal_path(dir).display().to_string()),
                "{text}"
            );
            assert!(text.contains(&format!("offset {offset}")), "{text}");
            assert!(text.contains("refuses to start"), "{text}");
        }
        Err(e) => panic!("expected Corrupt at {offset}, got {e}"),
        Ok(_) => panic!("expected Corrupt at {offset}, open succeeded"),
    }
}

// 1.
#[test]
fn round_trip_hard_state_and_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("data");
    let (mut s, rec) = Storage::open(&dir, 1).unwrap();
    assert_eq!(rec, RecoveredState::default());
    assert_eq!((s.last_index(), s.hard_state()), (0, HardState::default()));
    assert_eq!(s.dir(), dir.as_path());

    s.save(Some(&hs(1, 1)), &[]).unwrap();
    s.save(None, &entries(1, 1..=3)).unwrap();
    s.save(Some(&hs(2, 3)), &entries(2, 4..=7)).unwrap();
    s.save(None, &[]).unwrap(); // no-op
    assert_eq!((s.last_index(), s.hard_state()), (7, hs(2, 3)));
    drop(s);

    let (s, rec) = reopen(&dir);
    let mut want = entries(1, 1..=3);
    want.extend(entries(2, 4..=7));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs(2, 3));
    assert_eq!((s.last_index(), s.hard_state()), (7, hs(2, 3)));
    assert_eq!(s.recovery().records, 4);
    assert_eq!(s.recovery().dropped_tail, None);
    assert_eq!(s.recovery().bytes, wal_len(&dir));
    let id: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join(ID_FILE_NAME)).unwrap()).unwrap();
    assert_eq!(
        (id["node_id"].as_u64(), id["format"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        id["incarnation"].as_u64(),
        Some(s.incarnation()),
        "a data dir identity"
    );
    assert_ne!(s.incarnation(), 0);
}

// 2.
#[test]
fn conflict_truncation_is_recorded_by_appending() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    s.save(Some(&hs(1, 1)), &entries(1, 1..=10)).unwrap();
    let before = fs::read(wal_path(dir)).unwrap();

    s.save(Some(&hs(2, 2)), &entries(2, 6..=8)).unwrap();
    assert_eq!(s.last_index(), 8);
    let after = fs::read(wal_path(dir)).unwrap();
    assert!(after.len() > before.len());
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "old bytes were rewritten"
    );
    drop(s);

    let (s, rec) = reopen(dir);
    let mut want = entries(1, 1..=5);
    want.extend(entries(2, 6..=8));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs(2, 2));
    assert_eq!(s.last_index(), 8);
    // HardState, Entries, then HardState, Truncate, Entries.
    assert_eq!(s.recovery().records, 5);

    // Replacing the very first entry works too.
    let mut s = s;
    s.save(None, &entries(3, 1..=2)).unwrap();
    drop(s);
    let (_, rec) = reopen(dir);
    assert_eq!(rec.entries, entries(3, 1..=2));
}

/// Saves a history whose last save is `last` on node 1, returning (dir, wal before, wal after,
/// state before the last save).
fn history(
    last: impl FnOnce(&mut Storage),
) -> (tempfile::TempDir, Vec<u8>, Vec<u8>, RecoveredState) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Storage::open(tmp.path(), 1).unwrap();
    s.save(Some(&hs(1, 1)), &entries(1, 1..=4)).unwrap();
    s.save(None, &entries(1, 5..=6)).unwrap();
    s.save(Some(&hs(2, 0)), &entries(2, 7..=9)).unwrap();
    let mut before_entries = entries(1, 1..=6);
    before_entries.extend(entries(2, 7..=9));
    let before_state = RecoveredState {
        hard_state: hs(2, 0),
        snapshot: None,
        entries: before_entries,
    };
    let before = fs::read(wal_path(tmp.path())).unwrap();
    last(&mut s);
    drop(s);
    let after = fs::read(wal_path(tmp.path())).unwrap();
    assert!(after.len() > before.len());
    (tmp, before, after, before_state)
}

// 3.
#[test]
fn torn_tail_at_every_byte_of_the_last_record() {
    let (src, before, after, want) = history(|s| {
        s.save(None, &entries(2, 10..=12)).unwrap();
    });
    for cut in before.len() + 1..after.len() {
        let tmp = copy_cut(src.path(), &after, cut);
        let dir = tmp.path();
        let (mut s, rec) = Storage::open(dir, 1).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(rec, want, "cut {cut}");
        let tail = s.recovery().dropped_tail.clone().expect("torn tail taken");
        assert_eq!(tail.offset, before.len() as u64, "cut {cut}");
        assert_eq!(tail.bytes, (cut - before.len()) as u64, "cut {cut}");
        assert_eq!(wal_len(dir), before.len() as u64, "tail cut off");
        assert_eq!(s.last_index(), 9);

        // New records follow the good data.
        s.save(Some(&hs(3, 1)), &entries(3, 10..=11)).unwrap();
        drop(s);
        let (s, rec) = reopen(dir);
        let mut want_after = want.entries.clone();
        want_after.extend(entries(3, 10..=11));
        assert_eq!(rec.entries, want_after, "cut {cut}");
        assert_eq!(rec.hard_state, hs(3, 1));
        assert_eq!(s.recovery().dropped_tail, None);
    }
}

// 3, with a last save made of several records (HardState, Truncate, Entries): they are one
// batch, so a cut anywhere in it drops all of it (none of it was acknowledged).
#[test]
fn a_torn_multi_record_save_is_dropped_whole() {
    let (src, before, after, want) = history(|s| {
        s.save(Some(&hs(3, 2)), &entries(3, 8..=10)).unwrap();
    });
    for cut in before.len() + 1..after.len() {
        let tmp = copy_cut(src.path(), &after, cut);
        let (s, rec) = Storage::open(tmp.path(), 1).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(rec, want, "cut {cut}");
        assert!(s.recovery().dropped_tail.is_some(), "cut {cut}");
        assert_eq!(wal_len(tmp.path()), before.len() as u64, "cut {cut}");
    }
}

// The pages of the last write reached the disk out of order at a power loss: any of its bytes
// may be zeros while later ones hold data. None of it was acknowledged, so recovery drops it
// and keeps every earlier batch.
#[test]
fn a_last_batch_whose_pages_landed_out_of_order_is_dropped_as_unsynced() {
    let (src, before, after, want) = history(|s| {
        s.save(Some(&hs(3, 2)), &entries(3, 10..=40)).unwrap();
    });
    let last = before.len()..after.len();
    let mut rng = Rng(0x5eed);
    for round in 0..200 {
        let mut bytes = after.clone();
        // Zero one or more "pages" (runs of 1 to 64 bytes here: the batch is small) anywhere
        // in the last batch, header included.
        for _ in 0..1 + rng.below(3) {
            let start = last.start + rng.below(last.len() as u64) as usize;
            let len = 1 + rng.below(64) as usize;
            let end = (start + len).min(last.end);
            bytes[start..end].fill(0);
        }
        if bytes == after {
            continue;
        }
        let tmp = copy_cut(src.path(), &bytes, bytes.len());
        let (s, rec) =
            Storage::open(tmp.path(), 1).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(rec, want, "round {round}");
        let tail = s.recovery().dropped_tail.clone().expect("dropped");
        assert_eq!(tail.offset, before.len() as u64, "round {round}");
    }
}

// The case: zeros and garbage after the last complete batch.
#[test]
fn zeros_and_garbage_after_the_last_batch_are_dropped() {
    let (src, _, after, _) = history(|s| {
        s.save(None, &entries(2, 10..=12)).unwrap();
    });
    let dir = src.path();
    let mut f = OpenOptions::new().append(true).open(wal_path(dir)).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    let mut rng = Rng(7);
    let garbage: Vec<u8> = (0..5000).map(|_| rng.next() as u8).collect();
    f.write_all(&garbage).unwrap();
    drop(f);
    let (s, rec) = reopen(dir);
    assert_eq!(rec.entries.len(), 12);
    let tail = s.recovery().dropped_tail.clone().unwrap();
    assert_eq!(tail.offset, after.len() as u64);
    assert_eq!(tail.bytes, 4096 + 5000);
    assert!(
        tail.reason.contains("no complete batch follows"),
        "{}",
        tail.reason
    );
}

// 4.
#[test]
fn zero_filled_tail_is_dropped() {
    let (src, _, after, _) = history(|s| {
        s.save(None, &entries(2, 10..=12)).unwrap();
    });
    let dir = src.path();
    let mut f = OpenOptions::new().append(true).open(wal_path(dir)).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);

    let (mut s, rec) = reopen(dir);
    assert_eq!(rec.entries.len(), 12);
    assert_eq!(rec.hard_state, hs(2, 0));
    let tail = s.recovery().dropped_tail.clone().unwrap();
    assert_eq!((tail.offset, tail.bytes), (after.len() as u64, 4096));
    assert_eq!(wal_len(dir), after.len() as u64);
    s.save(None, &entries(2, 13..=13)).unwrap();
    drop(s);
    assert_eq!(reopen(dir).1.entries.len(), 13);

    // A log that is nothing but zeros (grown, never written) is an empty log.
    let tmp = tempfile::tempdir().unwrap();
    drop(Storage::open(tmp.path(), 1).unwrap());
    fs::write(wal_path(tmp.path()), [0u8; 4096]).unwrap();
    let (s, rec) = reopen(tmp.path());
    assert_eq!(rec, RecoveredState::default());
    assert_eq!(s.recovery().dropped_tail.as_ref().unwrap().bytes, 4096);
}

// 3/4: a bad last record followed only by zeros is the same unfinished write.
#[test]
fn bad_last_record_followed_by_zeros_is_torn() {
    let (src, before, after, want) = history(|s| {
        s.save(None, &entries(2, 10..=12)).unwrap();
    });
    let dir = src.path();
    flip_byte(&wal_path(dir), before.len() as u64 + 20);
    let mut f = OpenOptions::new().append(true).open(wal_path(dir)).unwrap();
    f.write_all(&[0u8; 100]).unwrap();
    drop(f);
    let (s, rec) = reopen(dir);
    assert_eq!(rec, want);
    assert_eq!(
        s.recovery().dropped_tail.as_ref().unwrap().bytes,
        (after.len() - before.len() + 100) as u64
    );
}

// 5. A bad batch followed by a complete one had been synced: damage, never dropped.
#[test]
fn damage_mid_file_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    let mut offsets = vec![wal_len(dir)];
    for i in 0..4 {
        s.save(None, &entries(1, i * 3 + 1..=i * 3 + 3)).unwrap();
        offsets.push(wal_len(dir));
    }
    drop(s);
    let good = fs::read(wal_path(dir)).unwrap();
    let body = batch::BATCH_HEADER_LEN as u64;

    // Payload of the first batch's record.
    flip_byte(&wal_path(dir), offsets[0] + body + record::HEADER_LEN + 5);
    expect_corrupt(dir, offsets[0]);

    // Each header field of a middle batch (magic, length, body crc, header crc), and a record
    // header inside it.
    for field in [1, 5, 9, 13, body + 1, body + 5] {
        fs::write(wal_path(dir), &good).unwrap();
        flip_byte(&wal_path(dir), offsets[2] + field);
        expect_corrupt(dir, offsets[2]);
    }

    // The file is left untouched for the operator.
    fs::write(wal_path(dir), &good).unwrap();
    flip_byte(&wal_path(dir), offsets[1] + 30);
    let damaged = fs::read(wal_path(dir)).unwrap();
    expect_corrupt(dir, offsets[1]);
    assert_eq!(fs::read(wal_path(dir)).unwrap(), damaged);

    // A flipped byte in the LAST batch cannot be told from an unfinished write: it is dropped
    // as unsynced (docs/STORAGE.md says why that is the one case recovery cannot tell).
    fs::write(wal_path(dir), &good).unwrap();
    flip_byte(&wal_path(dir), offsets[3] + 30);
    assert_eq!(reopen(dir).1.entries, entries(1, 1..=9));

    // Undamaged, it opens.
    fs::write(wal_path(dir), &good).unwrap();
    assert_eq!(reopen(dir).1.entries, entries(1, 1..=12));
}

// A log written by raftd before batches is read, and rewritten in the batched format.
#[test]
fn a_log_of_the_old_format_is_read_and_converted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    drop(Storage::open(dir, 1).unwrap());
    let mut old = Vec::new();
    record::encode(&RecordRef::HardState { term: 4, vote: 2 }, &mut old).unwrap();
    let first = entries(1, 1..=5);
    record::encode(&RecordRef::Entries { entries: &first }, &mut old).unwrap();
    record::encode(&RecordRef::Truncate { from: 4 }, &mut old).unwrap();
    let again = entries(4, 4..=6);
    record::encode(&RecordRef::Entries { entries: &again }, &mut old).unwrap();
    fs::write(wal_path(dir), &old).unwrap();
    let mut want = entries(1, 1..=3);
    want.extend(entries(4, 4..=6));
    let (mut s, rec) = reopen(dir);
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs(4, 2));
    let now = fs::read(wal_path(dir)).unwrap();
    assert_eq!(&now[..8], &batch::FILE_MAGIC);
    s.save(None, &entries(4, 7..=7)).unwrap();
    drop(s);
    want.extend(entries(4, 7..=7));
    assert_eq!(reopen(dir).1.entries, want);
}

#[test]
fn records_that_contradict_the_log_are_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    drop(Storage::open(dir, 1).unwrap());
    let mut buf = Vec::new();
    let first = entries(1, 1..=2);
    record::encode(&RecordRef::Entries { entries: &first }, &mut buf).unwrap();
    let gap_at = buf.len() as u64;
    let gap = entries(1, 4..=4);
    record::encode(&RecordRef::Entries { entries: &gap }, &mut buf).unwrap();
    fs::write(wal_path(dir), &buf).unwrap();
    expect_corrupt(dir, gap_at);

    buf.truncate(gap_at as usize);
    record::encode(&RecordRef::Truncate { from: 9 }, &mut buf).unwrap();
    fs::write(wal_path(dir), &buf).unwrap();
    expect_corrupt(dir, gap_at);
}

/// xorshift64: deterministic, no dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// 6.
#[test]
fn restart_recovers_exactly_what_was_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    let mut want = RecoveredState::default();
    let mut truncations = 0;
    for step in 0..300 {
        let hard_state = if rng.below(3) == 0 {
            let term = want.hard_state.term + rng.below(2);
            Some(hs(term, rng.below(4)))
        } else {
            None
        };
        let last = want.entries.len() as u64;
        let batch = match rng.below(4) {
            0 => Vec::new(),
            1 if last > 0 => {
                // Conflict: replace from somewhere in the last few entries.
                truncations += 1;
                let from = last - rng.below(last.min(5));
                let term = want.hard_state.term.max(1) + 1;
                let n = rng.below(4);
                (from..from + n)
                    .map(|i| {
                        let len = rng.below(40) as usize;
                        Entry::command(term, i, vec![rng.next() as u8; len])
                    })
                    .collect()
            }
            _ => {
                let n = 1 + rng.below(5);
                entries(want.hard_state.term.max(1), last + 1..=last + n)
            }
        };
        if batch.is_empty() && hard_state.is_none() {
            continue;
        }
        s.save(hard_state.as_ref(), &batch).unwrap();
        if let Some(h) = hard_state {
            want.hard_state = h;
        }
        if let Some(first) = batch.first() {
            want.entries.truncate(first.index as usize - 1);
            want.entries.extend(batch.iter().cloned());
        }
        assert_eq!(s.hard_state(), want.hard_state, "step {step}");
        assert_eq!(s.last_index(), want.entries.len() as u64, "step {step}");
        if rng.below(5) == 0 {
            drop(s);
            let (reopened, rec) = reopen(dir);
            assert_eq!(rec, want, "step {step}");
            assert_eq!(reopened.last_index(), want.entries.len() as u64);
            assert_eq!(reopened.recovery().dropped_tail, None);
            s = reopened;
        }
    }
    drop(s);
    assert_eq!(reopen(dir).1, want);
    assert!(truncations > 10, "the sequence exercised truncation");
}

// 7.
#[test]
fn wrong_node_and_bad_identity_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    s.save(Some(&hs(1, 1)), &entries(1, 1..=2)).unwrap();
    drop(s);

    let err = Storage::open(dir, 2).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StorageError::WrongNode { found: 1, expected: 2, ref path } if *path == dir.join(ID_FILE_NAME)),
        "{text}"
    );
    assert!(
        text.contains("node 1") && text.contains("--data-dir"),
        "{text}"
    );
    // The refused open changed nothing.
    assert_eq!(reopen(dir).1.entries.len(), 2);

    for garbage in [
        &b"\x00\xffnot json"[..],
        b"",
        b"{\"node_id\":1}",
        b"{\"node_id\":1,\"format\":9}",
    ] {
        fs::write(dir.join(ID_FILE_NAME), garbage).unwrap();
        let err = Storage::open(dir, 1).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StorageError::Identity { .. }), "{text}");
        assert!(
            text.contains(&dir.join(ID_FILE_NAME).display().to_string()),
            "{text}"
        );
    }

    // A log whose identity file was deleted is not silently adopted.
    fs::remove_file(dir.join(ID_FILE_NAME)).unwrap();
    let err = Storage::open(dir, 1).unwrap_err();
    assert!(matches!(err, StorageError::Identity { .. }), "{err}");
}

#[test]
fn a_data_dir_is_used_by_one_storage_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = Storage::open(tmp.path(), 1).unwrap();
    let err = Storage::open(tmp.path(), 1).unwrap_err();
    assert!(matches!(err, StorageError::InUse { .. }), "{err}");
    drop(s);
    reopen(tmp.path());
}

// 8.
#[test]
fn non_contiguous_saves_are_rejected_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    s.save(Some(&hs(1, 1)), &entries(1, 1..=3)).unwrap();
    let len = wal_len(dir);

    let gap_after_log = s.save(Some(&hs(2, 2)), &entries(1, 5..=6));
    assert!(matches!(
        gap_after_log,
        Err(StorageError::NonContiguous {
            expected: 4,
            got: 5
        })
    ));
    let mut gap_inside = entries(1, 4..=5);
    gap_inside.extend(entries(1, 7..=7));
    assert!(matches!(
        s.save(None, &gap_inside),
        Err(StorageError::NonContiguous {
            expected: 6,
            got: 7
        })
    ));
    assert!(matches!(
        s.save(None, &[Entry::noop(1, 0)]),
        Err(StorageError::NonContiguous { got: 0, .. })
    ));
    assert_eq!(wal_len(dir), len);
    assert_eq!((s.last_index(), s.hard_state()), (3, hs(1, 1)));

    // Still usable afterwards.
    s.save(None, &entries(1, 4..=4)).unwrap();
    drop(s);
    let (_, rec) = reopen(dir);
    assert_eq!(rec.entries, entries(1, 1..=4));
    assert_eq!(rec.hard_state, hs(1, 1));
}

/// Group commit: several `Ready`s' writes in one `save_batch` land as if saved one by one (a
/// later write's conflict truncation included), with one append to the file.
#[test]
fn a_batch_of_writes_is_saved_as_the_writes_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    s.save(Some(&hs(1, 1)), &entries(1, 1..=2)).unwrap();
    let first = entries(1, 3..=5);
    let replacement = entries(2, 4..=6);
    s.save_batch([
        (Some(hs(2, 2)), first.as_slice()),
        (None, &[][..]),
        (Some(hs(2, 2)), replacement.as_slice()),
    ])
    .unwrap();
    assert_eq!((s.last_index(), s.hard_state()), (6, hs(2, 2)));
    drop(s);

    let (s, rec) = reopen(dir);
    let mut want = entries(1, 1..=3);
    want.extend(entries(2, 4..=6));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs(2, 2));
    // The first save's 2 records, then: the new hard state (once: unchanged the second
    // time), the first entries, the truncation and the replacement.
    assert_eq!(s.recovery().records, 2 + 4);
}

/// A batch with one write storage must refuse is refused whole: nothing of it is written.
#[test]
fn a_batch_with_a_refused_write_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    s.save(Some(&hs(1, 1)), &entries(1, 1..=2)).unwrap();
    let len = wal_len(dir);
    let good = entries(1, 3..=4);
    let gap = entries(1, 6..=6);
    assert!(matches!(
        s.save_batch([(Some(hs(2, 2)), good.as_slice()), (None, gap.as_slice())]),
        Err(StorageError::NonContiguous {
            expected: 5,
            got: 6
        })
    ));
    assert_eq!(wal_len(dir), len);
    assert_eq!((s.last_index(), s.hard_state()), (2, hs(1, 1)));
    drop(s);
    let (_, rec) = reopen(dir);
    assert_eq!(rec.entries, entries(1, 1..=2));
    assert_eq!(rec.hard_state, hs(1, 1));
}
