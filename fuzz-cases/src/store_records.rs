//! A damaged store: arbitrary records written byte for byte into a real
//! LMDB environment, then loaded the way an agent starts. Loading must give
//! a snapshot or a typed [`StoreError`], never a panic; a snapshot must go
//! through `NodeGraph::restore` (a typed error or a graph) and start a
//! node manager, whose store batches are applied to the same store, which
//! must then still load (what the node writes, it can read back).
//!
//! Input: one flags byte, then records `[table] [key len] [key] [value
//! len lo] [value len hi] [value]`, `table` an index into
//! `keynode_store::TABLES`. Flags bit 0: close and reopen the store before
//! loading (reaching the schema check).
//!
//! One store per thread, in a temporary directory (on `/dev/shm` when
//! there is one, so that commits cost no disk writes); every input first
//! empties it.

use std::cell::RefCell;
use std::path::Path;
use std::time::Instant;

use keynode_core::claims::KeyPair;
use keynode_core::{Command, Config, Event, NodeGraph, NodeManager, Now, Snapshot};
use keynode_store::{Store, StoreError, StoreOptions, TABLES};

use crate::take;

/// Small: a damaged store must not need a large map to fail.
const MAP_SIZE: usize = 16 << 20;
const MAX_RECORDS: usize = 64;
/// More commands than this from one start means `poll` never runs dry.
const MAX_COMMANDS: usize = 100_000;
/// The own node's key seed (the seed corpus writes its graph).
pub const OWN_SECRET: [u8; 32] = [1; 32];
const UNIX_MS: u64 = 1_700_000_000_000;

struct Open {
    store: Option<Store>,
    _dir: tempfile::TempDir,
}

thread_local! {
    static STORE: RefCell<Open> = RefCell::new(open_new());
}

fn open_new() -> Open {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("keynode-fuzz-store")
            .tempdir_in(shm)
    } else {
        tempfile::Builder::new()
            .prefix("keynode-fuzz-store")
            .tempdir()
    }
    .expect("a temporary directory");
    let store = Store::open(dir.path(), &StoreOptions::with_map_size(MAP_SIZE)).expect("a store");
    Open {
        store: Some(store),
        _dir: dir,
    }
}

/// The records of an input: `(table, key, value)`.
pub fn parse(mut bytes: &[u8]) -> Vec<(usize, &[u8], &[u8])> {
    let mut records = Vec::new();
    while records.len() < MAX_RECORDS && bytes.len() >= 2 {
        let head = take(&mut bytes, 2);
        let table = usize::from(head[0]) % TABLES.len();
        let key = take(&mut bytes, usize::from(head[1]));
        let len = take(&mut bytes, 2);
        let len = match len {
            [lo, hi] => usize::from(u16::from_le_bytes([*lo, *hi])),
            _ => 0,
        };
        let value = take(&mut bytes, len);
        records.push((table, key, value));
    }
    records
}

/// The input that writes `records` (the inverse of [`parse`]), for the
/// seed corpus. Keys are at most 255 bytes.
pub fn unparse(flags: u8, records: &[keynode_store::RawRecord]) -> Vec<u8> {
    let mut out = vec![flags];
    for (table, key, value) in records {
        out.push(u8::try_from(*table).expect("a table index"));
        out.push(u8::try_from(key.len()).expect("a short key"));
        out.extend_from_slice(key);
        let len = u16::try_from(value.len()).expect("a short value");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// The target.
pub fn run(input: &[u8]) {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let records = parse(rest);
    STORE.with_borrow_mut(|open| {
        let Some(store) = open.store.as_mut() else {
            return;
        };
        if store.replace_raw(&records).is_err() {
            // LMDB refused a key (empty, too long) or the map is full.
            return;
        }
        if flags & 1 != 0 {
            let path = store.path().to_path_buf();
            if let Some(store) = open.store.take() {
                store.close();
            }
            match Store::open(&path, &StoreOptions::with_map_size(MAP_SIZE)) {
                Ok(store) => open.store = Some(store),
                Err(StoreError::SchemaMismatch { .. } | StoreError::Corrupt { .. }) => {
                    // Typed; start over with an empty store for the next input.
                    *open = open_new();
                    return;
                }
                Err(e) => panic!("reopening a damaged store: {e}"),
            }
        }
        let Some(store) = open.store.as_mut() else {
            return;
        };
        let Ok(snapshot) = store.load() else {
            return;
        };
        if let Some(graph) = snapshot.graph.clone() {
            let _ = NodeGraph::restore(graph, &Config::default());
        }
        start_manager(store, snapshot);
        if let Err(e) = store.load() {
            panic!("the store no longer loads after the node wrote to it: {e}");
        }
    });
}

/// Starts a node manager on `snapshot`, applying its store batches.
fn start_manager(store: &mut Store, snapshot: Snapshot) {
    let now = Now::new(Instant::now(), UNIX_MS);
    let key = KeyPair::from_seed(&OWN_SECRET).expect("a valid seed");
    let mut manager = NodeManager::new(Config::default(), key, now, [7; 32]).expect("a manager");
    manager.handle(now, Event::SnapshotLoaded(snapshot));
    if manager.start(now).is_err() {
        return;
    }
    for _ in 0..MAX_COMMANDS {
        match manager.poll() {
            None => return,
            Some(Command::Store(batch)) => {
                let event = match store.apply(&batch.ops) {
                    Ok(()) => Event::StoreCommitted(batch.id),
                    Err(e) => Event::StoreFailed {
                        batch: batch.id,
                        error: e.kind(),
                    },
                };
                manager.handle(now, event);
            }
            Some(_) => {}
        }
    }
    panic!("poll did not run dry after {MAX_COMMANDS} commands");
}
