//! The table of scheduled tasks, compact where most of them are.
//!
//! Every node keeps one refresh task per bucket: 256 of them, always. In a
//! map each would cost a key, a record with room for the largest payload and
//! a share of the map's nodes (about 12 KB per node in all, a fifth of a
//! node's memory in a 100,000-node simulation). Refresh tasks carry no
//! payload, so their due times live in a flat array (2 KB); the few other
//! tasks stay in a map.

use std::collections::BTreeMap;

use crate::id::BucketIndex;
use crate::store::{TaskKey, TaskPayload, TaskRecord};

/// Scheduled tasks by key, in key order.
#[derive(Clone, Debug)]
pub(crate) struct TaskTable {
    /// Due time (wall-clock ms) of each bucket's refresh.
    refresh_due: Box<[u64; BucketIndex::COUNT]>,
    /// Which buckets have a refresh task (bit per bucket).
    refresh_set: [u64; BucketIndex::COUNT / 64],
    other: BTreeMap<TaskKey, TaskRecord>,
}

impl Default for TaskTable {
    fn default() -> Self {
        Self {
            refresh_due: Box::new([0; BucketIndex::COUNT]),
            refresh_set: [0; BucketIndex::COUNT / 64],
            other: BTreeMap::new(),
        }
    }
}

fn bit(bucket: BucketIndex) -> (usize, u64) {
    let i = usize::from(bucket.get());
    (i / 64, 1u64 << (i % 64))
}

impl TaskTable {
    /// Adds or replaces a task. A refresh task's payload is always `None`;
    /// any other is dropped.
    pub(crate) fn insert(&mut self, key: TaskKey, record: TaskRecord) {
        match key {
            TaskKey::RefreshBucket(bucket) => {
                let (word, mask) = bit(bucket);
                if let (Some(w), Some(due)) = (
                    self.refresh_set.get_mut(word),
                    self.refresh_due.get_mut(usize::from(bucket.get())),
                ) {
                    *w |= mask;
                    *due = record.due_unix_ms;
                }
            }
            _ => {
                self.other.insert(key, record);
            }
        }
    }

    /// Removes a task; returns it if it existed.
    pub(crate) fn remove(&mut self, key: TaskKey) -> Option<TaskRecord> {
        match key {
            TaskKey::RefreshBucket(bucket) => {
                let record = self.get(key)?;
                let (word, mask) = bit(bucket);
                if let Some(w) = self.refresh_set.get_mut(word) {
                    *w &= !mask;
                }
                Some(record)
            }
            _ => self.other.remove(&key),
        }
    }

    /// The task under `key`.
    pub(crate) fn get(&self, key: TaskKey) -> Option<TaskRecord> {
        match key {
            TaskKey::RefreshBucket(bucket) => {
                let (word, mask) = bit(bucket);
                let set = self.refresh_set.get(word).is_some_and(|w| w & mask != 0);
                let due = self.refresh_due.get(usize::from(bucket.get()))?;
                set.then_some(TaskRecord {
                    due_unix_ms: *due,
                    payload: TaskPayload::None,
                })
            }
            _ => self.other.get(&key).cloned(),
        }
    }

    pub(crate) fn contains_key(&self, key: TaskKey) -> bool {
        match key {
            TaskKey::RefreshBucket(bucket) => {
                let (word, mask) = bit(bucket);
                self.refresh_set.get(word).is_some_and(|w| w & mask != 0)
            }
            _ => self.other.contains_key(&key),
        }
    }

    /// Every task, in key order (the refreshes by bucket first).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (TaskKey, TaskRecord)> + '_ {
        BucketIndex::all()
            .map(TaskKey::RefreshBucket)
            .filter_map(|key| self.get(key).map(|record| (key, record)))
            .chain(self.other.iter().map(|(k, r)| (*k, r.clone())))
    }
}

impl FromIterator<(TaskKey, TaskRecord)> for TaskTable {
    fn from_iter<I: IntoIterator<Item = (TaskKey, TaskRecord)>>(iter: I) -> Self {
        let mut table = Self::default();
        for (key, record) in iter {
            table.insert(key, record);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(due: u64, payload: TaskPayload) -> TaskRecord {
        TaskRecord {
            due_unix_ms: due,
            payload,
        }
    }

    #[test]
    fn behaves_as_a_map_in_key_order() {
        let mut table = TaskTable::default();
        let mut model: BTreeMap<TaskKey, TaskRecord> = BTreeMap::new();
        let keys = [
            TaskKey::RefreshBucket(BucketIndex::new(0)),
            TaskKey::RefreshBucket(BucketIndex::new(63)),
            TaskKey::RefreshBucket(BucketIndex::new(64)),
            TaskKey::RefreshBucket(BucketIndex::new(255)),
            TaskKey::GarbageCollect(BucketIndex::new(7)),
            TaskKey::CheckConnections,
            TaskKey::SyncNodeGraph,
        ];
        for (step, key) in keys.iter().cycle().take(40).enumerate() {
            let r = record(step as u64, TaskPayload::None);
            if step % 3 == 2 {
                assert_eq!(table.remove(*key), model.remove(key), "step {step}");
            } else {
                table.insert(*key, r.clone());
                model.insert(*key, r);
            }
            assert_eq!(table.contains_key(*key), model.contains_key(key));
            assert_eq!(table.get(*key).as_ref(), model.get(key));
            let listed: Vec<(TaskKey, TaskRecord)> = table.iter().collect();
            let expected: Vec<(TaskKey, TaskRecord)> =
                model.iter().map(|(k, r)| (*k, r.clone())).collect();
            assert_eq!(listed, expected, "step {step}");
        }
    }
}
