use super::*;
use eddy_runtime::checkpoint::storage::DirStorage;
use eddy_runtime::state::testing::conformance;
use eddy_runtime::types::Value;

const ALL: KeyGroupRange = KeyGroupRange { start: 0, end: 128 };

fn options(cache_entries: usize) -> RocksOptions {
    RocksOptions::new(8 << 20, cache_entries).unwrap()
}

fn key(i: i64) -> Key {
    vec![Value::Int(i)]
}

fn store(dir: &Path) -> CheckpointStore {
    CheckpointStore::new(Arc::new(DirStorage::new(dir.join("ckpt")).unwrap()))
}

fn target(store: &CheckpointStore, checkpoint: CheckpointId) -> UploadTarget {
    UploadTarget {
        store: store.clone(),
        checkpoint,
        incremental: true,
    }
}

#[test]
fn conforms_with_a_large_and_a_tiny_cache() {
    for cache in [100_000, 1] {
        let dir = tempfile::tempdir().unwrap();
        let mut b =
            RocksBackend::open(&dir.path().join("s"), "op-0", ALL, &options(cache), None).unwrap();
        conformance(&mut b);
        assert!(b.take_error().is_none());
    }
}

/// Fills value, map, list and timer state for keys 0..n, one key per key group mod 128.
fn fill(b: &mut RocksBackend, n: i64) {
    let mut v = b.value_state::<i64>("v");
    let mut m = b.map_state::<i64, String>("m");
    let mut l = b.list_state::<i64>("l");
    let mut t = b.timers("t");
    for i in 0..n {
        let kg = (i % 128) as KeyGroup;
        v.update(kg, &key(i), |s| *s = Some(i * 10));
        m.update(kg, &key(i), &i, |s| *s = Some(format!("m{i}")));
        l.add(kg, &key(i), i);
        l.add(kg, &key(i), i + 1);
        t.register(1000 + i, kg, &key(i));
    }
}

/// Checks the state `fill` wrote, for the keys whose key group is in `b`'s range.
fn check(b: &mut RocksBackend, n: i64) {
    let range = b.key_groups();
    let v = b.value_state::<i64>("v");
    let m = b.map_state::<i64, String>("m");
    let l = b.list_state::<i64>("l");
    let mut t = b.timers("t");
    b.check_restored_states().unwrap();
    let mut expected_timers = Vec::new();
    for i in 0..n {
        let kg = (i % 128) as KeyGroup;
        if !range.contains(kg) {
            continue;
        }
        assert_eq!(v.get(kg, &key(i)), Some(i * 10), "value of {i}");
        assert_eq!(m.get(kg, &key(i), &i), Some(format!("m{i}")));
        let mut items = Vec::new();
        l.for_each(kg, &key(i), |x| items.push(*x));
        assert_eq!(items, vec![i, i + 1]);
        expected_timers.push((1000 + i, kg, key(i)));
    }
    assert_eq!(t.pop_due(i64::MAX), expected_timers, "timers");
    assert!(b.take_error().is_none());
}

#[test]
fn restores_at_the_same_and_at_other_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let n = 1000;
    // Parallelism 2: two subtasks, each checkpointed.
    let mut handles = Vec::new();
    for s in 0..2 {
        let range = KeyGroupRange::of_subtask(s, 2, 128);
        let mut b = RocksBackend::open(
            &dir.path().join(format!("p2-{s}")),
            &format!("op-{s}"),
            range,
            &options(50),
            None,
        )
        .unwrap();
        // Only the keys of this subtask.
        let mut v = b.value_state::<i64>("v");
        let mut m = b.map_state::<i64, String>("m");
        let mut l = b.list_state::<i64>("l");
        let mut t = b.timers("t");
        for i in 0..n {
            let kg = (i % 128) as KeyGroup;
            if range.contains(kg) {
                v.update(kg, &key(i), |x| *x = Some(i * 10));
                m.update(kg, &key(i), &i, |x| *x = Some(format!("m{i}")));
                l.add(kg, &key(i), i);
                l.add(kg, &key(i), i + 1);
                t.register(1000 + i, kg, &key(i));
            }
        }
        let upload = b.snapshot(1).unwrap();
        handles.push((range, upload(&target(&store, 1)).unwrap()));
    }
    // 2 -> 2: each subtask from its own files.
    for (s, (range, handle)) in handles.iter().enumerate() {
        let mut b = RocksBackend::open(
            &dir.path().join(format!("same-{s}")),
            "op",
            *range,
            &options(50),
            Some(Restore {
                store: &store,
                handles: vec![(*range, handle)],
                reuse_files: true,
            }),
        )
        .unwrap();
        check(&mut b, n);
    }
    // 2 -> 1: one subtask from both.
    let open_merged = |name: &str| {
        RocksBackend::open(
            &dir.path().join(name),
            "op",
            ALL,
            &options(50),
            Some(Restore {
                store: &store,
                handles: handles.iter().map(|(r, h)| (*r, h)).collect(),
                reuse_files: true,
            }),
        )
        .unwrap()
    };
    check(&mut open_merged("one"), n);
    // 1 -> 3, via a checkpoint of the merged state (declared, not consumed, before it).
    let mut b = open_merged("one-again");
    let _states = (
        b.value_state::<i64>("v"),
        b.map_state::<i64, String>("m"),
        b.list_state::<i64>("l"),
        b.timers("t"),
    );
    let upload = b.snapshot(2).unwrap();
    let merged = upload(&target(&store, 2)).unwrap();
    for s in 0..3 {
        let range = KeyGroupRange::of_subtask(s, 3, 128);
        let mut b = RocksBackend::open(
            &dir.path().join(format!("three-{s}")),
            "op",
            range,
            &options(50),
            Some(Restore {
                store: &store,
                handles: vec![(ALL, &merged)],
                reuse_files: true,
            }),
        )
        .unwrap();
        check(&mut b, n);
    }
}

#[test]
fn checkpoints_are_incremental() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut b = RocksBackend::open(&dir.path().join("s"), "op-0", ALL, &options(10), None).unwrap();
    fill(&mut b, 500);
    let first = b.snapshot(1).unwrap()(&target(&store, 1)).unwrap();
    let mut v = b.value_state::<i64>("extra");
    v.update(0, &key(0), |x| *x = Some(1));
    let second = b.snapshot(2).unwrap()(&target(&store, 2)).unwrap();
    let ssts = |h: &KeyedStateHandle| -> Vec<String> {
        h.files
            .iter()
            .filter(|f| f.local.ends_with(".sst"))
            .map(|f| f.key.clone())
            .collect()
    };
    let (a, b2) = (ssts(&first), ssts(&second));
    assert!(!a.is_empty());
    assert!(
        a.iter().all(|k| b2.contains(k)),
        "the second checkpoint reuses the first one's files: {a:?} vs {b2:?}"
    );
    assert!(b2.len() > a.len(), "and adds the new one");
}

#[test]
fn a_restored_state_that_fits_half_the_cache_is_read_into_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let n = 300;
    let mut b =
        RocksBackend::open(&dir.path().join("s"), "op-0", ALL, &options(100_000), None).unwrap();
    fill(&mut b, n);
    let first = b.snapshot(1).unwrap()(&target(&store, 1)).unwrap();
    let open = |name: &str, handle: &KeyedStateHandle, cache: usize| {
        RocksBackend::open(
            &dir.path().join(name),
            "op-0",
            ALL,
            &options(cache),
            Some(Restore {
                store: &store,
                handles: vec![(ALL, handle)],
                reuse_files: true,
            }),
        )
        .unwrap()
    };
    // 300 values, maps and lists of 2 (900 entries with their keys) fit in 2,000.
    let mut warm = open("warm", &first, 2_000);
    let mut v = warm.value_state::<i64>("v");
    let m = warm.map_state::<i64, String>("m");
    let mut l = warm.list_state::<i64>("l");
    let _t = warm.timers("t");
    assert!(lock(&v.0).complete && lock(&m.0).complete && lock(&l.0).complete);
    assert_eq!(lock(&l.0).len, 900);
    for i in 0..n {
        let kg = (i % 128) as KeyGroup;
        assert_eq!(v.get(kg, &key(i)), Some(i * 10));
        assert_eq!(m.get(kg, &key(i), &i), Some(format!("m{i}")));
        let mut items = Vec::new();
        l.for_each(kg, &key(i), |x| items.push(*x));
        assert_eq!(items, vec![i, i + 1]);
    }
    assert_eq!(v.get(5, &key(n + 5)), None, "a key never written is absent");
    // Changes to what was read in are written back like any other.
    l.retain(0, &key(0), |x| *x != 0);
    v.update(1, &key(1), |x| *x = None);
    l.add(2, &key(2), 7);
    let second = warm.snapshot(2).unwrap()(&target(&store, 2)).unwrap();
    assert!(warm.take_error().is_none());
    // Read back cold (a cache too small to warm up in).
    let mut cold = open("cold", &second, 10);
    let v = cold.value_state::<i64>("v");
    let _m = cold.map_state::<i64, String>("m");
    let l = cold.list_state::<i64>("l");
    assert!(!lock(&v.0).complete && !lock(&l.0).complete);
    let list = |k: i64| {
        let mut items = Vec::new();
        l.for_each((k % 128) as KeyGroup, &key(k), |x| items.push(*x));
        items
    };
    assert_eq!(
        (list(0), list(2), list(3)),
        (vec![1], vec![2, 3, 7], vec![3, 4])
    );
    assert_eq!((v.get(1, &key(1)), v.get(2, &key(2))), (None, Some(20)));
    assert!(cold.take_error().is_none());
}

#[test]
fn a_changed_state_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut b = RocksBackend::open(&dir.path().join("s"), "op-0", ALL, &options(10), None).unwrap();
    fill(&mut b, 10);
    let handle = b.snapshot(1).unwrap()(&target(&store, 1)).unwrap();
    let mut r = RocksBackend::open(
        &dir.path().join("r"),
        "op-0",
        ALL,
        &options(10),
        Some(Restore {
            store: &store,
            handles: vec![(ALL, &handle)],
            reuse_files: true,
        }),
    )
    .unwrap();
    let _v = r.value_state::<String>("v");
    let err = r.check_restored_states().unwrap_err();
    assert!(err.contains("`v`") && err.contains("String"), "{err}");
}

/// A field of /proc/self/status, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn state_larger_than_memory_lives_in_rocksdb_with_bounded_memory() {
    // 250k keys with 1 KiB values: ~250 MiB of state, behind a 2k-entry cache and an 8 MiB
    // block cache. The process's peak memory must stay far below the state's size.
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let before = proc_status_kib("VmRSS:");
    let mut b = RocksBackend::open(
        &dir.path().join("s"),
        "op-0",
        ALL,
        &RocksOptions::new(8 << 20, 2_000).unwrap(),
        None,
    )
    .unwrap();
    let mut v = b.value_state::<String>("big");
    let n = 250_000i64;
    let payload = "x".repeat(1024);
    for i in 0..n {
        let kg = (i % 128) as KeyGroup;
        v.update(kg, &key(i), |slot| *slot = Some(format!("{i}:{payload}")));
        if i % 100_000 == 99_999 {
            let upload = b.snapshot(i as u64 / 100_000 + 1).unwrap();
            upload(&target(&store, i as u64 / 100_000 + 1)).unwrap();
        }
    }
    for i in (0..n).step_by(997) {
        let kg = (i % 128) as KeyGroup;
        let value = v.get(kg, &key(i)).expect("every key is still there");
        assert!(value.starts_with(&format!("{i}:")));
    }
    assert!(b.take_error().is_none());
    let peak = proc_status_kib("VmHWM:");
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("peak memory grew by {grown_mib} MiB for ~250 MiB of state");
    assert!(
        grown_mib < 120,
        "peak memory grew by {grown_mib} MiB for ~250 MiB of state"
    );
}

#[test]
#[ignore = "aborts now and then on Debian RocksDB 7.8's ENOSPC assertion (facebook/rocksdb#12448), taking the test binary with it; run by hand: cargo test -p eddy-state-rocksdb -- --ignored a_full_disk"]
fn a_full_disk_is_a_transient_state_error() {
    // The disk fills, then frees, as in the chaos harness's disk-full fault: checkpoints fail
    // with a transient error (the job restarts with backoff) and nothing panics. Debian's
    // RocksDB 7.8 also aborts on an assertion after ENOSPC now and then, as it does a worker
    // in the chaos harness (docs/reliability.md): this test reproduced it once in a full
    // suite run, which is why it is not run by default. Needs root to mount a tmpfs.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    }
    let result = std::panic::catch_unwind(|| {
        let store = store(&small);
        let filler = small.join("filler");
        let mut b = RocksBackend::open(&small.join("s"), "op-0", ALL, &options(1), None).unwrap();
        let mut failures = 0;
        let mut k = 0i64;
        for round in 0..12u64 {
            match round {
                // Full: what is left is less than a memtable.
                3 => std::fs::write(&filler, vec![1u8; 60 << 20]).unwrap_or_default(),
                8 => std::fs::remove_file(&filler).unwrap(),
                _ => {}
            }
            let mut v = b.value_state::<String>("v");
            for _ in 0..6_000 {
                // Incompressible: 1 KB of pseudo-random digits.
                let mut x = (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let value: String = (0..1000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        char::from(b'0' + (x % 10) as u8)
                    })
                    .collect();
                v.update((k % 128) as KeyGroup, &key(k), |s| *s = Some(value));
                k += 1;
            }
            drop(v);
            let result = b.snapshot(round + 1).and_then(|upload| {
                upload(&target(&store, round + 1)).map_err(|e| StateError::Write(e.to_string()))
            });
            if let Err(e) = result {
                assert_eq!(
                    e.domain(),
                    eddy_runtime::error::FaultDomain::Transient,
                    "{e}"
                );
                failures += 1;
            }
            let _ = b.take_error();
        }
        assert!(failures > 0, "the small file system never filled up");
        drop(b);
    });
    let _ = std::process::Command::new("umount").arg(&small).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
