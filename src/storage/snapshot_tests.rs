//! Snapshot and compaction tests: round trips, crashes between the steps, stale temp files,
//! damaged snapshots, ordering rules, bounded disk usage.

use std::fs;
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

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta { index, term }
}

fn wal_path(dir: &Path) -> PathBuf {
    dir.join(WAL_FILE_NAME)
}

fn snap_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE_NAME)
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// The names of the files in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn reopen(dir: &Path) -> (Storage, RecoveredState) {
    Storage::open(dir, 1).unwrap_or_else(|e| panic!("reopen failed: {e}"))
}

fn state_data(index: u64) -> Vec<u8> {
    format!("state machine after {index}").into_bytes()
}

/// Saves term 1, entries 1..=`n` in batches of 10.
fn fill(s: &mut Storage, n: u64) {
    s.save(Some(&hs(1, 1)), &[]).unwrap();
    let mut next = s.last_index() + 1;
    while next <= n {
        let end = (next + 9).min(n);
        s.save(None, &entries(1, next..=end)).unwrap();
        next = end + 1;
    }
}

fn expect_corrupt(dir: &Path, path: &Path, offset: Option<u64>) -> String {
    match Storage::open(dir, 1) {
        Err(e @ StorageError::Corrupt { .. }) => {
            let text = e.to_string();
            let StorageError::Corrupt {
                path: got_path,
                offset: got,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(got_path, path, "{text}");
            if let Some(offset) = offset {
                assert_eq!(got, offset, "{text}");
            }
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("refuses to start"), "{text}");
            assert!(text.contains("restore the data dir"), "{text}");
            text
        }
        Err(e) => panic!("expected Corrupt in {}, got {e}", path.display()),
        Ok(_) => panic!("expected Corrupt in {}, open succeeded", path.display()),
    }
}

#[test]
fn round_trip_snapshot_and_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, rec) = Storage::open(dir, 1).unwrap();
    assert_eq!(rec.snapshot, None);
    assert_eq!(s.snapshot_meta(), None);
    fill(&mut s, 100);

    s.save_snapshot(
        meta(60, 1),
        &state_data(60),
        &entries(1, 61..=100),
        hs(2, 3),
    )
    .unwrap();
    assert_eq!(s.last_index(), 100);
    assert_eq!(s.snapshot_meta(), Some(meta(60, 1)));
    assert_eq!(s.hard_state(), hs(2, 3));
    assert_eq!(s.wal_bytes(), file_len(&wal_path(dir)));
    assert_eq!(
        s.disk_usage(),
        file_len(&wal_path(dir)) + file_len(&snap_path(dir))
    );
    assert_eq!(
        file_len(&snap_path(dir)),
        snapshot::SNAPSHOT_HEADER_LEN + state_data(60).len() as u64
    );

    // Saves go on after the tail, including conflicts right after the snapshot.
    s.save(None, &entries(2, 101..=110)).unwrap();
    s.save(Some(&hs(3, 1)), &entries(3, 105..=107)).unwrap();
    assert_eq!(s.last_index(), 107);
    drop(s);

    let (s, rec) = reopen(dir);
    assert_eq!(
        rec.snapshot,
        Some(Snapshot {
            membership: Default::default(),
            meta: meta(60, 1),
            data: bytes::Bytes::from(state_data(60)),
        })
    );
    let mut want = entries(1, 61..=100);
    want.extend(entries(2, 101..=104));
    want.extend(entries(3, 105..=107));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs(3, 1));
    assert_eq!(s.last_index(), 107);
    assert_eq!(s.snapshot_meta(), Some(meta(60, 1)));
    assert!(!s.recovery().finished_compaction);
    assert_eq!(s.recovery().dropped_tail, None);
    assert_eq!(s.recovery().bytes, file_len(&wal_path(dir)));
    // HardState, marker, Entries(61..=100), Entries(101..=110), HardState, Truncate, Entries.
    assert_eq!(s.recovery().records, 7);

    // Replacing the first entry after the snapshot is fine; anything at or below is refused.
    let mut s = s;
    let err = s.save(None, &entries(3, 60..=61)).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::CompactedIndex {
                index: 60,
                snapshot_index: 60
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("compacted up to index 60"),
        "{err}"
    );
    s.save(None, &entries(4, 61..=62)).unwrap();
    assert_eq!(s.last_index(), 62);
    drop(s);
    let (_, rec) = reopen(dir);
    assert_eq!(rec.entries, entries(4, 61..=62));
}

#[test]
fn empty_tail_and_snapshot_past_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    fill(&mut s, 20);

    // Compacting everything.
    s.save_snapshot(meta(20, 1), b"all", &[], hs(1, 1)).unwrap();
    assert_eq!(s.last_index(), 20);
    s.save(None, &entries(1, 21..=22)).unwrap();

    // A leader's snapshot past the end of the log replaces it.
    s.save_snapshot(meta(500, 7), b"leader", &[], hs(7, 2))
        .unwrap();
    assert_eq!(s.last_index(), 500);
    let err = s.save(None, &entries(7, 502..=502)).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::NonContiguous {
                expected: 501,
                got: 502
            }
        ),
        "{err}"
    );
    s.save(None, &entries(7, 501..=503)).unwrap();
    drop(s);

    let (s, rec) = reopen(dir);
    assert_eq!(rec.snapshot.as_ref().unwrap().meta, meta(500, 7));
    assert_eq!(rec.snapshot.unwrap().data.as_ref(), b"leader");
    assert_eq!(rec.entries, entries(7, 501..=503));
    assert_eq!(rec.hard_state, hs(7, 2));
    assert_eq!(s.last_index(), 503);
}

#[test]
fn compaction_shrinks_the_log_and_moves_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    fill(&mut s, 1000);
    let before = file_len(&wal_path(dir));
    assert_eq!(s.wal_bytes(), before);

    s.save_snapshot(
        meta(990, 1),
        &state_data(990),
        &entries(1, 991..=1000),
        hs(1, 1),
    )
    .unwrap();
    let after = file_len(&wal_path(dir));
    assert!(after * 20 < before, "log {before} -> {after} bytes");
    assert_eq!(s.wal_bytes(), after);

    // The lock is held on the new file: nobody else can open the dir.
    let err = Storage::open(dir, 1).unwrap_err();
    assert!(matches!(err, StorageError::InUse { .. }), "{err}");

    // Appends go to the new file.
    s.save(None, &entries(1, 1001..=1001)).unwrap();
    assert!(file_len(&wal_path(dir)) > after);
    assert_eq!(s.wal_bytes(), file_len(&wal_path(dir)));
    drop(s);
    let (_, rec) = reopen(dir);
    assert_eq!(rec.entries, entries(1, 991..=1001));
    // Nothing else is left in the dir.
    assert_eq!(
        file_names(dir),
        [WAL_FILE_NAME, ID_FILE_NAME, SNAPSHOT_FILE_NAME]
    );
}

/// A dir with entries 1..=100 in the log, and the snapshot file written as if `save_snapshot`
/// crashed right after step (a).
fn crashed_before_compaction(
    history: impl FnOnce(&mut Storage),
    snap: SnapshotMeta,
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Storage::open(tmp.path(), 1).unwrap();
    history(&mut s);
    drop(s);
    assert!(snapshot::write(tmp.path(), snap, &state_data(snap.index)).is_ok());
    tmp
}

#[test]
fn crash_between_snapshot_file_and_compaction() {
    let tmp = crashed_before_compaction(|s| fill(s, 100), meta(60, 1));
    let dir = tmp.path();
    let old_len = file_len(&wal_path(dir));

    let (mut s, rec) = reopen(dir);
    assert_eq!(rec.snapshot.as_ref().unwrap().meta, meta(60, 1));
    assert_eq!(*rec.snapshot.unwrap().data, state_data(60));
    assert_eq!(rec.entries, entries(1, 61..=100));
    assert_eq!(rec.hard_state, hs(1, 1));
    assert_eq!(s.last_index(), 100);
    assert!(s.recovery().finished_compaction);
    // Open finished the compaction.
    assert!(file_len(&wal_path(dir)) < old_len);
    assert_eq!(s.wal_bytes(), file_len(&wal_path(dir)));
    assert_eq!(s.recovery().bytes, s.wal_bytes());

    s.save(Some(&hs(2, 2)), &entries(2, 95..=120)).unwrap();
    drop(s);
    let (s, rec) = reopen(dir);
    assert!(!s.recovery().finished_compaction);
    let mut want = entries(1, 61..=94);
    want.extend(entries(2, 95..=120));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs(2, 2));
}

#[test]
fn crash_before_compaction_after_conflicts_and_earlier_compactions() {
    // The old log replaced a suffix before the snapshot was taken.
    let tmp = crashed_before_compaction(
        |s| {
            fill(s, 100);
            s.save(Some(&hs(2, 2)), &entries(2, 50..=70)).unwrap();
        },
        meta(60, 2),
    );
    let (_, rec) = reopen(tmp.path());
    assert_eq!(rec.entries, entries(2, 61..=70));
    assert_eq!(rec.hard_state, hs(2, 2));

    // The old log was itself compacted (its marker is below the new snapshot).
    let tmp = crashed_before_compaction(
        |s| {
            fill(s, 50);
            s.save_snapshot(meta(30, 1), b"old", &entries(1, 31..=50), hs(1, 1))
                .unwrap();
            s.save(None, &entries(1, 51..=100)).unwrap();
        },
        meta(80, 1),
    );
    let (s, rec) = reopen(tmp.path());
    assert!(s.recovery().finished_compaction);
    assert_eq!(rec.snapshot.unwrap().meta, meta(80, 1));
    assert_eq!(rec.entries, entries(1, 81..=100));

    // A leader's snapshot past the end of the log.
    let tmp = crashed_before_compaction(|s| fill(s, 40), meta(60, 3));
    let (mut s, rec) = reopen(tmp.path());
    assert_eq!(rec.entries, vec![]);
    assert_eq!(s.last_index(), 60);
    s.save(None, &entries(3, 61..=62)).unwrap();
    drop(s);
    assert_eq!(reopen(tmp.path()).1.entries, entries(3, 61..=62));

    // A leader's snapshot that conflicts with the log at its index: the log's suffix is not
    // resurrected, and later saves are not lost behind it.
    let tmp = crashed_before_compaction(|s| fill(s, 100), meta(60, 3));
    let (mut s, rec) = reopen(tmp.path());
    assert_eq!(rec.entries, vec![]);
    assert_eq!(s.last_index(), 60);
    s.save(None, &entries(3, 61..=62)).unwrap();
    drop(s);
    assert_eq!(reopen(tmp.path()).1.entries, entries(3, 61..=62));
}

#[test]
fn stale_tmp_files_are_ignored_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    fill(&mut s, 30);
    s.save_snapshot(meta(20, 1), b"twenty", &entries(1, 21..=30), hs(1, 1))
        .unwrap();
    drop(s);

    // A crash mid-(a): half a snapshot. A crash mid-(b): half a log.
    fs::write(dir.join(SNAPSHOT_TMP_FILE_NAME), b"RAFTSNAP\0\0").unwrap();
    fs::write(dir.join(WAL_TMP_FILE_NAME), b"\x00\x00\x01garbage").unwrap();
    let (s, rec) = reopen(dir);
    assert_eq!(rec.snapshot.unwrap().data.as_ref(), b"twenty");
    assert_eq!(rec.entries, entries(1, 21..=30));
    assert!(!dir.join(SNAPSHOT_TMP_FILE_NAME).exists());
    assert!(!dir.join(WAL_TMP_FILE_NAME).exists());
    assert_eq!(s.recovery().removed_tmp_files.len(), 2);
    drop(s);

    // A complete, newer snapshot that was never renamed (crash before the rename) is not used.
    let other = tempfile::tempdir().unwrap();
    assert!(snapshot::write(other.path(), meta(30, 1), b"thirty").is_ok());
    fs::copy(snap_path(other.path()), dir.join(SNAPSHOT_TMP_FILE_NAME)).unwrap();
    let (s, rec) = reopen(dir);
    assert_eq!(rec.snapshot.unwrap().meta, meta(20, 1));
    assert_eq!(s.snapshot_meta(), Some(meta(20, 1)));
    assert_eq!(
        s.recovery().removed_tmp_files,
        [dir.join(SNAPSHOT_TMP_FILE_NAME)]
    );
    drop(s);
    let (s, _) = reopen(dir);
    assert!(s.recovery().removed_tmp_files.is_empty());

    // Stale temp files do not get in the way of the next snapshot either.
    let mut s = s;
    fs::write(dir.join(SNAPSHOT_TMP_FILE_NAME), b"junk").unwrap();
    fs::write(dir.join(WAL_TMP_FILE_NAME), b"junk").unwrap();
    s.save_snapshot(meta(25, 1), b"25", &entries(1, 26..=30), hs(1, 1))
        .unwrap();
    drop(s);
    let (_, rec) = reopen(dir);
    assert_eq!(rec.snapshot.unwrap().data.as_ref(), b"25");
    assert_eq!(rec.entries, entries(1, 26..=30));
}

#[test]
fn damaged_snapshot_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    fill(&mut s, 30);
    s.save_snapshot(meta(20, 1), &[7u8; 1000], &entries(1, 21..=30), hs(1, 1))
        .unwrap();
    drop(s);
    let good = fs::read(snap_path(dir)).unwrap();
    let path = snap_path(dir);
    let restore = || fs::write(snap_path(dir), &good).unwrap();

    // A flipped data byte: left as found for the operator.
    let mut bytes = good.clone();
    bytes[500] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let text = expect_corrupt(dir, &path, Some(snapshot::SNAPSHOT_HEADER_LEN));
    assert!(text.contains("checksum"), "{text}");
    assert_eq!(fs::read(&path).unwrap(), bytes);

    // Truncated data; truncated header; empty file.
    for cut in [good.len() - 1, 100, 43, 10, 0] {
        fs::write(&path, &good[..cut]).unwrap();
        expect_corrupt(dir, &path, None);
    }
    // Extra bytes.
    let mut longer = good.clone();
    longer.push(0);
    fs::write(&path, &longer).unwrap();
    expect_corrupt(dir, &path, Some(28));

    // Each header field, including magic and version; the header checksum catches them.
    for at in [0usize, 8, 15, 25, 30, 37, 42] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        expect_corrupt(dir, &path, None);
    }

    restore();
    assert_eq!(reopen(dir).1.entries, entries(1, 21..=30));
}

#[test]
fn log_that_contradicts_the_snapshot_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    fill(&mut s, 30);
    s.save_snapshot(meta(20, 1), b"20", &entries(1, 21..=30), hs(1, 1))
        .unwrap();
    drop(s);
    let good = fs::read(snap_path(dir)).unwrap();
    let good_wal = fs::read(wal_path(dir)).unwrap();
    // The marker is the second record of the first batch, after the hard state.
    let mut hs_record = Vec::new();
    record::encode(&RecordRef::HardState { term: 1, vote: 1 }, &mut hs_record).unwrap();
    let body_at = batch::FILE_HEADER_LEN as usize + batch::BATCH_HEADER_LEN;
    let marker_at = Some((body_at + hs_record.len()) as u64);

    // The snapshot file is gone: the log's first 20 entries are lost.
    fs::remove_file(snap_path(dir)).unwrap();
    let text = expect_corrupt(dir, &wal_path(dir), marker_at);
    assert!(text.contains("no snapshot file"), "{text}");

    // An older snapshot than the log's marker.
    assert!(snapshot::write(dir, meta(10, 1), b"10").is_ok());
    let text = expect_corrupt(dir, &wal_path(dir), marker_at);
    assert!(text.contains("covers only up to index 10"), "{text}");

    // Same index, another term.
    assert!(snapshot::write(dir, meta(20, 2), b"20").is_ok());
    expect_corrupt(dir, &wal_path(dir), marker_at);

    // The log is gone but the snapshot is there: the vote is lost.
    fs::write(snap_path(dir), &good).unwrap();
    fs::remove_file(wal_path(dir)).unwrap();
    let text = expect_corrupt(dir, &wal_path(dir), Some(0));
    assert!(text.contains("missing"), "{text}");
    assert!(!wal_path(dir).exists(), "a refused open creates nothing");

    // A second marker, or a marker after entries (in a batch whose checksum is good).
    let mut marker = Vec::new();
    record::encode(&RecordRef::Snapshot { index: 20, term: 1 }, &mut marker).unwrap();
    let after_marker = body_at + hs_record.len() + marker.len();
    let mut body = batch::start();
    body.extend_from_slice(&good_wal[body_at..after_marker]);
    body.extend_from_slice(&marker);
    body.extend_from_slice(&good_wal[after_marker..]);
    batch::seal(&mut body).unwrap();
    let mut bad = batch::FILE_MAGIC.to_vec();
    bad.extend_from_slice(&body);
    fs::write(wal_path(dir), &bad).unwrap();
    expect_corrupt(dir, &wal_path(dir), Some(after_marker as u64));

    fs::write(wal_path(dir), &good_wal).unwrap();
    assert_eq!(reopen(dir).1.entries, entries(1, 21..=30));
}

#[test]
fn snapshot_index_never_goes_backwards() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    fill(&mut s, 100);
    s.save_snapshot(meta(60, 1), b"60", &entries(1, 61..=100), hs(1, 1))
        .unwrap();
    let snap_before = fs::read(snap_path(dir)).unwrap();
    let wal_before = fs::read(wal_path(dir)).unwrap();

    let err = s
        .save_snapshot(meta(50, 1), b"50", &entries(1, 51..=100), hs(1, 1))
        .unwrap_err();
    assert!(
        matches!(err, StorageError::SnapshotBackwards { current, requested }
            if current == meta(60, 1) && requested == meta(50, 1)),
        "{err}"
    );
    assert!(err.to_string().contains("never go backwards"), "{err}");
    let err = s
        .save_snapshot(meta(60, 2), b"60", &entries(1, 61..=100), hs(2, 1))
        .unwrap_err();
    assert!(
        matches!(err, StorageError::SnapshotBackwards { .. }),
        "{err}"
    );

    // A tail that does not start right after the snapshot.
    for tail in [entries(1, 62..=100), entries(1, 60..=100), {
        let mut gap = entries(1, 61..=70);
        gap.extend(entries(1, 72..=80));
        gap
    }] {
        let err = s
            .save_snapshot(meta(60, 1), b"60", &tail, hs(1, 1))
            .unwrap_err();
        assert!(matches!(err, StorageError::NonContiguous { .. }), "{err}");
    }
    // Nothing was written by any of them, and the storage still works.
    assert_eq!(fs::read(snap_path(dir)).unwrap(), snap_before);
    assert_eq!(fs::read(wal_path(dir)).unwrap(), wal_before);
    assert_eq!(s.snapshot_meta(), Some(meta(60, 1)));
    assert_eq!(s.last_index(), 100);

    // The same snapshot again is fine (idempotent), as is a newer one.
    s.save_snapshot(meta(60, 1), b"60", &entries(1, 61..=100), hs(1, 1))
        .unwrap();
    s.save_snapshot(meta(90, 1), b"90", &entries(1, 91..=100), hs(1, 1))
        .unwrap();
    drop(s);
    let (s, rec) = reopen(dir);
    assert_eq!(s.snapshot_meta(), Some(meta(90, 1)));
    assert_eq!(rec.entries, entries(1, 91..=100));
    let mut s = s;
    assert!(s
        .save_snapshot(meta(80, 1), b"80", &entries(1, 81..=100), hs(1, 1))
        .is_err());
}

#[test]
fn repeated_snapshots_keep_disk_usage_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    s.save(Some(&hs(1, 1)), &[]).unwrap();
    let data = vec![0xabu8; 20_000];
    let mut round_bytes = 0;
    for round in 0..50u64 {
        let start = s.disk_usage();
        let first = round * 1000 + 1;
        for batch in 0..10 {
            let from = first + batch * 100;
            s.save(None, &entries(1, from..=from + 99)).unwrap();
        }
        let last = first + 999;
        if round == 0 {
            round_bytes = s.disk_usage() - start + data.len() as u64;
        }
        // Keep the last 10 entries, as a node keeps a few for slow followers.
        s.save_snapshot(
            meta(last - 10, 1),
            &data,
            &entries(1, last - 9..=last),
            hs(1, 1),
        )
        .unwrap();
        let on_disk: u64 = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            s.disk_usage() < 2 * round_bytes && on_disk < 2 * round_bytes,
            "round {round}: {} bytes used ({on_disk} in the dir), one round is {round_bytes}",
            s.disk_usage()
        );
        assert_eq!(
            s.disk_usage(),
            file_len(&wal_path(dir)) + file_len(&snap_path(dir))
        );
    }
    drop(s);
    let (s, rec) = reopen(dir);
    assert_eq!(rec.entries, entries(1, 49_991..=50_000));
    assert_eq!(s.last_index(), 50_000);
}

#[test]
fn restore_then_persist_again_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    fill(&mut s, 100);
    s.save_snapshot(
        meta(60, 1),
        &state_data(60),
        &entries(1, 61..=100),
        hs(1, 1),
    )
    .unwrap();
    drop(s);

    let (mut s, rec) = reopen(dir);
    assert_eq!(rec.entries, entries(1, 61..=100));
    s.save(Some(&hs(2, 1)), &entries(2, 101..=150)).unwrap();
    s.save_snapshot(
        meta(140, 2),
        &state_data(140),
        &entries(2, 141..=150),
        hs(2, 1),
    )
    .unwrap();
    s.save(None, &entries(2, 151..=155)).unwrap();
    drop(s);

    let (mut s, rec) = reopen(dir);
    assert_eq!(rec.snapshot.as_ref().unwrap().meta, meta(140, 2));
    assert_eq!(*rec.snapshot.unwrap().data, state_data(140));
    assert_eq!(rec.entries, entries(2, 141..=155));
    assert_eq!(rec.hard_state, hs(2, 1));
    assert_eq!(s.last_index(), 155);

    // Once more, with a reopen straight after the snapshot.
    s.save_snapshot(meta(155, 2), &state_data(155), &[], hs(3, 0))
        .unwrap();
    drop(s);
    let (mut s, rec) = reopen(dir);
    assert_eq!(rec.entries, vec![]);
    assert_eq!(rec.hard_state, hs(3, 0));
    assert_eq!(s.last_index(), 155);
    s.save(None, &entries(3, 156..=160)).unwrap();
    drop(s);
    let (_, rec) = reopen(dir);
    assert_eq!(rec.snapshot.unwrap().meta, meta(155, 2));
    assert_eq!(rec.entries, entries(3, 156..=160));
}

#[test]
fn torn_tail_after_compaction_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    fill(&mut s, 30);
    s.save_snapshot(meta(20, 1), b"20", &entries(1, 21..=30), hs(1, 1))
        .unwrap();
    let before = fs::read(wal_path(dir)).unwrap();
    s.save(None, &entries(1, 31..=33)).unwrap();
    drop(s);
    let after = fs::read(wal_path(dir)).unwrap();
    for cut in (before.len() + 1..after.len()).step_by(7) {
        let copy = tempfile::tempdir().unwrap();
        for name in [ID_FILE_NAME, SNAPSHOT_FILE_NAME] {
            fs::copy(dir.join(name), copy.path().join(name)).unwrap();
        }
        fs::write(wal_path(copy.path()), &after[..cut]).unwrap();
        let (s, rec) = reopen(copy.path());
        assert_eq!(rec.entries, entries(1, 21..=30), "cut {cut}");
        assert!(s.recovery().dropped_tail.is_some());
        assert_eq!(s.last_index(), 30);
    }
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

/// Random saves, conflicts, snapshots (own and past the log), interrupted compactions and
/// restarts against a model.
#[test]
fn random_history_with_snapshots_recovers_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    let mut snap: Option<Snapshot> = None;
    let mut hard = HardState::default();
    let mut log: Vec<Entry> = Vec::new(); // after the snapshot
    let snap_index = |snap: &Option<Snapshot>| snap.as_ref().map_or(0, |s| s.meta.index);
    for step in 0..400 {
        let base = snap_index(&snap);
        let last = base + log.len() as u64;
        match rng.below(10) {
            0..=4 => {
                let n = 1 + rng.below(5);
                let term = hard.term.max(1);
                let batch = entries(term, last + 1..=last + n);
                s.save(None, &batch).unwrap();
                log.extend(batch);
            }
            5 if !log.is_empty() => {
                let from = last - rng.below(log.len().min(4) as u64);
                hard = hs(hard.term + 1, rng.below(3));
                let batch = entries(hard.term, from..=from + rng.below(3));
                s.save(Some(&hard), &batch).unwrap();
                log.truncate((from - base - 1) as usize);
                log.extend(batch);
            }
            6 | 7 if !log.is_empty() => {
                let keep = rng.below(log.len() as u64) as usize;
                let at = &log[log.len() - keep - 1];
                let m = meta(at.index, at.term);
                let data = vec![rng.next() as u8; rng.below(300) as usize];
                let tail = log.split_off(log.len() - keep);
                if rng.below(4) == 0 {
                    // Crash after step (a).
                    drop(s);
                    assert!(snapshot::write(dir, m, &data).is_ok());
                    s = reopen(dir).0;
                    assert!(s.recovery().finished_compaction, "step {step}");
                } else {
                    s.save_snapshot(m, &data, &tail, hard).unwrap();
                }
                snap = Some(Snapshot {
                    membership: Default::default(),
                    meta: m,
                    data: bytes::Bytes::from(data),
                });
                log = tail;
            }
            8 => {
                // A leader's snapshot past the log.
                let m = meta(last + 1 + rng.below(5), hard.term.max(1));
                let data = vec![rng.next() as u8; 10];
                s.save_snapshot(m, &data, &[], hard).unwrap();
                snap = Some(Snapshot {
                    membership: Default::default(),
                    meta: m,
                    data: bytes::Bytes::from(data),
                });
                log.clear();
            }
            _ => {
                drop(s);
                let (reopened, rec) = reopen(dir);
                assert_eq!(rec.snapshot, snap, "step {step}");
                assert_eq!(rec.entries, log, "step {step}");
                assert_eq!(rec.hard_state, hard, "step {step}");
                s = reopened;
            }
        }
        assert_eq!(
            s.last_index(),
            snap_index(&snap) + log.len() as u64,
            "step {step}"
        );
        assert_eq!(s.snapshot_meta(), snap.as_ref().map(|s| s.meta));
    }
    drop(s);
    let (_, rec) = reopen(dir);
    assert_eq!(
        rec,
        RecoveredState {
            hard_state: hard,
            snapshot: snap,
            entries: log,
        }
    );
}

/// A snapshot prepared on another thread (written and synced under a temporary name) and then
/// installed is the same as one saved in one go; a prepared one that is never installed is
/// ignored and removed by the next start, and the node's log meanwhile stays usable.
#[test]
fn prepared_snapshot_installs_or_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut s, _) = reopen(d);
    fill(&mut s, 50);
    let prepared = std::thread::scope(|scope| {
        scope
            .spawn(|| prepare_snapshot(d, meta(30, 1), &state_data(30)).unwrap())
            .join()
            .unwrap()
    });
    // The log keeps growing while the snapshot is being prepared.
    s.save(None, &entries(1, 51..=60)).unwrap();
    assert_eq!(prepared.meta(), meta(30, 1));
    s.save_prepared_snapshot(&prepared, &entries(1, 31..=60), hs(1, 1))
        .unwrap();
    assert!(!d.join(SNAPSHOT_PREPARED_FILE_NAME).exists());
    drop(s);
    let (s, rec) = reopen(d);
    let snap = rec.snapshot.expect("snapshot");
    assert_eq!(
        (snap.meta, snap.data.to_vec()),
        (meta(30, 1), state_data(30))
    );
    assert_eq!(rec.entries, entries(1, 31..=60));
    assert_eq!(s.last_index(), 60);

    // Prepared but never installed (a crash, or a newer snapshot came from the leader).
    prepare_snapshot(d, meta(40, 1), &state_data(40)).unwrap();
    drop(s);
    let (s, rec) = reopen(d);
    assert_eq!(rec.snapshot.map(|x| x.meta), Some(meta(30, 1)));
    assert!(!d.join(SNAPSHOT_PREPARED_FILE_NAME).exists());
    let p = prepare_snapshot(d, meta(40, 1), &state_data(40)).unwrap();
    s.discard_prepared_snapshot(p);
    assert!(!d.join(SNAPSHOT_PREPARED_FILE_NAME).exists());
}

/// A snapshot streamed into its file as it is encoded gives the same file as one prepared
/// from bytes in memory, and its data comes back mapped from that file; it installs like any
/// prepared snapshot. An encoder that fails leaves no file behind, and says it was the
/// encoder; a file that cannot be written says it was the storage.
#[test]
fn a_streamed_snapshot_is_the_file_a_prepared_one_would_be() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut s, _) = reopen(d);
    fill(&mut s, 40);
    let data = state_data(30);
    prepare_snapshot(d, meta(30, 1), &data).unwrap();
    let whole = fs::read(d.join(SNAPSHOT_PREPARED_FILE_NAME)).unwrap();
    // In pieces, as an encoder writes.
    let (prepared, mapped) =
        prepare_snapshot_streamed(d, meta(30, 1), |w: &mut dyn std::io::Write| {
            for piece in data.chunks(7) {
                w.write_all(piece)?;
            }
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    assert_eq!(
        fs::read(d.join(SNAPSHOT_PREPARED_FILE_NAME)).unwrap(),
        whole
    );
    assert_eq!(&mapped[..], &data[..]);
    assert_eq!(prepared.meta(), meta(30, 1));

    s.save_prepared_snapshot(&prepared, &entries(1, 31..=40), hs(1, 1))
        .unwrap();
    // The mapping outlives the rename.
    assert_eq!(&mapped[..], &data[..]);
    drop(s);
    let (_, rec) = reopen(d);
    assert_eq!(rec.snapshot.map(|x| x.data.to_vec()), Some(data.clone()));

    let failed = prepare_snapshot_streamed(d, meta(35, 1), |w: &mut dyn std::io::Write| {
        w.write_all(b"half")?;
        Err(std::io::Error::other("the state does not encode"))
    });
    assert!(
        matches!(&failed, Err(StreamedError::Encode(e)) if e.contains("does not encode")),
        "{failed:?}"
    );
    assert!(!d.join(SNAPSHOT_PREPARED_FILE_NAME).exists());

    let gone = d.join("no-such-dir");
    let failed = prepare_snapshot_streamed(&gone, meta(35, 1), |_: &mut dyn std::io::Write| {
        Ok::<(), std::io::Error>(())
    });
    assert!(
        matches!(failed, Err(StreamedError::Storage(_))),
        "{failed:?}"
    );
}

/// Compaction in the background: the log's rewrite after a snapshot is written on another
/// thread while appends (a new term, entries, a conflict that replaces some) go on to the old
/// log; when the new log takes over it holds them all, it is small, and it holds the lock.
#[test]
fn a_log_rewritten_in_the_background_takes_over_with_what_was_appended_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut s, _) = Storage::open(dir, 1).unwrap();
    s.set_background_compaction(Some(0));
    fill(&mut s, 1000);
    let before = file_len(&wal_path(dir));
    s.save_snapshot(
        meta(990, 1),
        &state_data(990),
        &entries(1, 991..=1000),
        hs(1, 1),
    )
    .unwrap();
    assert!(s.background_compaction_pending());
    // Appends meanwhile, to the old log.
    s.save(Some(&hs(2, 2)), &entries(2, 1001..=1010)).unwrap();
    s.save(None, &entries(3, 1006..=1012)).unwrap();
    assert!(file_len(&wal_path(dir)) > before, "still the old log");
    assert!(s.finish_background_compaction(true).unwrap());
    assert!(!s.background_compaction_pending());
    let after = file_len(&wal_path(dir));
    assert!(after * 20 < before, "log {before} -> {after} bytes");
    assert_eq!(s.wal_bytes(), after);
    let err = Storage::open(dir, 1).unwrap_err();
    assert!(matches!(err, StorageError::InUse { .. }), "{err}");
    s.save(None, &entries(3, 1013..=1013)).unwrap();
    drop(s);
    let (s, rec) = reopen(dir);
    let mut want = entries(1, 991..=1000);
    want.extend(entries(2, 1001..=1005));
    want.extend(entries(3, 1006..=1013));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs(2, 2));
    assert_eq!(s.last_index(), 1013);
    assert!(!s.recovery().finished_compaction);
    assert_eq!(
        file_names(dir),
        [WAL_FILE_NAME, ID_FILE_NAME, SNAPSHOT_FILE_NAME]
    );
}

/// A storage with background compaction from `min` bytes on, 100 entries, and a snapshot at 90
/// (its log rewrite started, or done in place if smaller than `min`). Also the log's size
/// before the snapshot.
fn snapshot_at_90_of_100(min: Option<u64>) -> (tempfile::TempDir, Storage, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Storage::open(tmp.path(), 1).unwrap();
    s.set_background_compaction(min);
    fill(&mut s, 100);
    let before = file_len(&wal_path(tmp.path()));
    s.save_snapshot(
        meta(90, 1),
        &state_data(90),
        &entries(1, 91..=100),
        hs(1, 1),
    )
    .unwrap();
    (tmp, s, before)
}

/// A crash while the rewritten log has not taken over loses nothing: the old log holds every
/// append, and the start finishes the compaction.
#[test]
fn a_crash_before_the_rewritten_log_takes_over_loses_nothing() {
    let (tmp, mut s, _) = snapshot_at_90_of_100(Some(0));
    let dir = tmp.path();
    s.save(None, &entries(1, 101..=105)).unwrap();
    // The "crash": the storage goes away without letting the new log take over.
    drop(s);
    let (s, rec) = reopen(dir);
    assert_eq!(rec.snapshot.map(|x| x.meta), Some(meta(90, 1)));
    assert_eq!(rec.entries, entries(1, 91..=105));
    assert_eq!(s.last_index(), 105);
    assert!(s.recovery().finished_compaction);
}

/// A rewritten log smaller than the background minimum is written in place, as before.
#[test]
fn a_small_rewrite_is_done_in_place() {
    let (tmp, s, before) = snapshot_at_90_of_100(Some(BACKGROUND_REWRITE_MIN));
    let dir = tmp.path();
    assert!(!s.background_compaction_pending());
    assert!(file_len(&wal_path(dir)) < before);
}

/// A log that failed while its rewrite was being written stays failed: the rewrite does not
/// take over (it would hide the failure, and copy records of unknown state), and its file goes.
#[test]
fn a_rewrite_does_not_take_over_from_a_log_that_failed_meanwhile() {
    let (tmp, mut s, _) = snapshot_at_90_of_100(Some(0));
    let dir = tmp.path();
    s.wal.poison();
    assert!(s.finish_background_compaction(true).is_err());
    assert!(!s.background_compaction_pending());
    assert!(s.save(None, &entries(1, 101..=101)).is_err());
    assert!(!dir.join(format!("{WAL_FILE_NAME}.tmp")).exists());
}
