//! The fuzz corpus (`fuzzing/corpus/<target>/`, grown by `cargo fuzz run`) replayed through
//! every target, plus a short seeded run of mutations of it: whatever once made a target panic
//! stays fixed. The long runs (10 minutes and more per target) are `cargo fuzz run`
//! (docs/reliability.md).

use std::path::Path;
use std::time::{Duration, Instant};

/// A few thousand cheap mutations (flips, inserts, deletes, splices) of the corpus, seeded.
fn mutate(inputs: &[Vec<u8>], target: fn(&[u8]), budget: Duration) -> usize {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| -> usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n.max(1) as u64) as usize
    };
    let started = Instant::now();
    let mut runs = 0;
    while started.elapsed() < budget && !inputs.is_empty() {
        let mut data = inputs[next(inputs.len())].clone();
        for _ in 0..1 + next(4) {
            let at = next(data.len() + 1);
            match next(4) {
                0 if !data.is_empty() => {
                    let i = at.min(data.len() - 1);
                    data[i] ^= 1 << next(8);
                }
                1 => data.insert(at, next(256) as u8),
                2 if at < data.len() => {
                    let end = (at + next(16)).min(data.len());
                    data.drain(at..end);
                }
                _ => {
                    let other = &inputs[next(inputs.len())];
                    let from = next(other.len() + 1);
                    let piece: Vec<u8> = other[from..(from + next(64)).min(other.len())].to_vec();
                    data.splice(at..at, piece);
                }
            }
        }
        target(&data);
        runs += 1;
    }
    runs
}

#[test]
fn the_corpus_and_its_mutations_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in eddy_fuzzing::TARGETS {
        let dir = root.join(name);
        let mut inputs = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            target(&data);
            inputs.push(data);
        }
        assert!(!inputs.is_empty(), "no corpus for {name}");
        let runs = mutate(&inputs, *target, Duration::from_secs(2));
        eprintln!("{name}: {} corpus inputs, {runs} mutations", inputs.len());
    }
}
