//! Replays every fuzz input kept in the repository through the target it
//! belongs to: the crashes found once (`fuzz/regressions/<target>/`) and
//! the seed corpora (`fuzz/corpus/<target>/`). A plain `cargo test` runs
//! them, so a fixed crash stays fixed without cargo-fuzz.

use std::fs;
use std::path::{Path, PathBuf};

use keynode_fuzz_cases::{TARGETS, run, seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs every file under `fuzz/<kind>/<target>/`; the number run.
fn replay(kind: &str) -> usize {
    let mut count = 0;
    for target in TARGETS {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.map(|e| e.expect("an entry").path()).collect();
        files.sort();
        for file in files {
            let input = fs::read(&file).expect("readable");
            eprintln!("{target}: {}", file.display());
            assert!(run(target, &input), "{target} has no body");
            count += 1;
        }
    }
    count
}

#[test]
fn every_regression_input_runs_clean() {
    let n = replay("regressions");
    eprintln!("{n} regression inputs replayed");
}

#[test]
fn every_seed_corpus_input_runs_clean() {
    let n = replay("corpus");
    assert!(
        n >= TARGETS.len(),
        "only {n} seed inputs found: run write_seed_corpus"
    );
}

#[test]
fn every_target_has_a_seed_corpus_in_the_repository() {
    for target in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        let files = fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert!(
            files > 0,
            "{} is empty: run write_seed_corpus",
            dir.display()
        );
        assert!(!seeds::corpus(target).is_empty(), "{target} makes no seeds");
    }
}

/// Writes the seed corpora into `fuzz/corpus/`:
/// `cargo test -p keynode-fuzz-cases --test regressions -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes into the repository"]
fn write_seed_corpus() {
    for target in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).expect("a corpus directory");
        for (name, bytes) in seeds::corpus(target) {
            run(target, &bytes);
            fs::write(dir.join(name), bytes).expect("written");
        }
    }
}
