//! keynode's persistence: an LMDB environment (through `heed`) that applies the
//! core's [`StoreOp`]s and loads them back.
//!
//! - [`Store::apply`] applies one batch of operations in one write transaction:
//!   all of it is visible after a crash, or none of it.
//! - [`Store::load`] reads the scheduled tasks and [`Store::load_graph`] the active space of the node graph back as a
//!   [`GraphSnapshot`], which [`keynode_core::NodeGraph::restore`] turns into a table.
//! - The map size is set by [`StoreOptions::map_size`]; when a batch does not fit,
//!   it fails with [`StoreError::MapFull`] and nothing of it is written.
//! - The schema version is checked on open ([`StoreError::SchemaMismatch`]).
//!
//! LMDB allows one environment per path per process ([`StoreError::AlreadyOpen`]),
//! and its write transactions are tied to the thread that began them, so a
//! driver owns the `Store` on one thread; [`Store::close`] waits until the
//! environment is really closed, so the same path can be opened again.

#![warn(missing_docs, unreachable_pub)]

use std::convert::Infallible;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, MdbError, RoTxn, RwTxn};
use keynode_core::claims::SignedClaim;
use keynode_core::{
    ContactRecord, GraphSnapshot, NODE_ID_LEN, NodeGraphSpace, NodeId, NodeIdParseError,
    PendingRecord, Snapshot, StoreErrorKind, StoreOp, TaskKey, TaskRecord,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A table of the environment; committed, so it lives as long as the environment.
type Db = Database<'static, Bytes, Bytes>;

/// The version of the on-disk layout this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The default map size: 1 GiB of address space (LMDB grows the file as
/// needed; the map size is only its ceiling).
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;

const META_SCHEMA_VERSION: &[u8] = b"schema_version";
const META_ACTIVE_SPACE: &[u8] = b"active_space";
const META_OWNER: [&[u8]; 2] = [b"owner/0", b"owner/1"];

/// How to open a [`Store`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// The largest the database may grow, in bytes. Rounded up by LMDB to a
    /// multiple of the page size. Default [`DEFAULT_MAP_SIZE`].
    pub map_size: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            map_size: DEFAULT_MAP_SIZE,
        }
    }
}

impl StoreOptions {
    /// Options with this map size.
    pub fn with_map_size(map_size: usize) -> Self {
        Self { map_size }
    }
}

/// What went wrong in the store, and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's directory could not be created.
    #[error("cannot create store directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The directory is already open as a store in this process.
    #[error("store at {path} is already open in this process")]
    AlreadyOpen {
        /// The directory.
        path: PathBuf,
    },
    /// The store was written by a keynode with another layout.
    #[error("store at {path} has schema version {found}; this keynode reads version {expected}")]
    SchemaMismatch {
        /// The directory.
        path: PathBuf,
        /// The version on disk.
        found: u32,
        /// [`SCHEMA_VERSION`].
        expected: u32,
    },
    /// The batch did not fit in the map; nothing of it was written.
    #[error(
        "store at {path} is full (map size {map_size} bytes); nothing of the batch was written"
    )]
    MapFull {
        /// The directory.
        path: PathBuf,
        /// The configured map size.
        map_size: usize,
    },
    /// A record could not be decoded: the store is damaged.
    #[error("store at {path} has a corrupt {what} record: {problem}")]
    Corrupt {
        /// The directory.
        path: PathBuf,
        /// Which kind of record.
        what: &'static str,
        /// What is wrong with it.
        problem: CorruptRecord,
    },
    /// A record could not be encoded (a bug: records are plain data).
    #[error("cannot encode a {what} record: {source}")]
    Encode {
        /// Which kind of record.
        what: &'static str,
        /// Why.
        source: postcard::Error,
    },
    /// Any other LMDB failure.
    #[error("LMDB error in store at {path}: {source}")]
    Lmdb {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: heed::Error,
    },
}

/// What is wrong with a damaged record ([`StoreError::Corrupt`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptRecord {
    /// The value is not the postcard encoding of the record.
    #[error("its value does not decode: {0}")]
    Decode(postcard::Error),
    /// The value decodes with bytes left over.
    #[error("{0} trailing bytes after its value")]
    TrailingBytes(usize),
    /// A fixed-size key or value of the wrong size.
    #[error("{found} bytes where {expected} were expected")]
    WrongLength {
        /// Its size.
        found: usize,
        /// The size it must have.
        expected: usize,
    },
    /// A key or value that should be a NodeId is not one.
    #[error("not a NodeId: {0}")]
    NodeId(NodeIdParseError),
    /// A key or value this build does not know.
    #[error("unknown key or value {0:?}")]
    Unknown(Vec<u8>),
    /// The active space has no recorded owner.
    #[error("no owner is recorded for the active space {0:?}")]
    MissingOwner(NodeGraphSpace),
}

impl StoreError {
    /// What kind of failure this is, as the core learns it
    /// ([`keynode_core::Event::StoreFailed`]): the core does not know LMDB.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            Self::CreateDir { source, .. } => StoreErrorKind::Io(source.kind()),
            Self::AlreadyOpen { .. } => StoreErrorKind::Io(io::ErrorKind::ResourceBusy),
            Self::SchemaMismatch { .. } => StoreErrorKind::Incompatible,
            Self::MapFull { .. } => StoreErrorKind::MapFull,
            Self::Corrupt { .. } => StoreErrorKind::Corrupted,
            Self::Encode { .. } => StoreErrorKind::Encode,
            Self::Lmdb { source, .. } => lmdb_kind(source),
        }
    }
}

/// The kind of an LMDB failure: damage, a full map, I/O, or the database
/// refusing the operation.
fn lmdb_kind(error: &heed::Error) -> StoreErrorKind {
    match error {
        heed::Error::Io(e) => StoreErrorKind::Io(e.kind()),
        heed::Error::Mdb(MdbError::MapFull) => StoreErrorKind::MapFull,
        heed::Error::Mdb(
            MdbError::PageNotFound
            | MdbError::Corrupted
            | MdbError::Panic
            | MdbError::Invalid
            | MdbError::VersionMismatch,
        )
        | heed::Error::Decoding(_) => StoreErrorKind::Corrupted,
        heed::Error::Encoding(_) => StoreErrorKind::Encode,
        heed::Error::EnvAlreadyOpened => StoreErrorKind::Io(io::ErrorKind::ResourceBusy),
        heed::Error::Mdb(_) => StoreErrorKind::Database,
    }
}

/// The persisted state of one node, in one LMDB environment.
pub struct Store {
    env: Env,
    path: PathBuf,
    map_size: usize,
    meta: Db,
    contacts: Db,
    pending: Db,
    tasks: Db,
    claims: Db,
    gestalt: Db,
    permissions: Db,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("map_size", &self.map_size)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>, options: &StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let lmdb = |source| StoreError::Lmdb {
            path: path.clone(),
            source,
        };
        // SAFETY: LMDB maps the file into memory; it is undefined behaviour if
        // the file is changed other than through LMDB while mapped. The store
        // directory belongs to this node, heed refuses a second open of the
        // same path in this process (`EnvAlreadyOpened`), and LMDB's lock file
        // coordinates other processes.
        let opened = unsafe {
            EnvOpenOptions::new()
                .map_size(options.map_size)
                .max_dbs(8)
                .open(&path)
        };
        let env = match opened {
            Ok(env) => env,
            Err(heed::Error::EnvAlreadyOpened) => return Err(StoreError::AlreadyOpen { path }),
            Err(e) => return Err(lmdb(e)),
        };
        let txn = env.write_txn().map_err(lmdb)?;
        let created = env
            .create_databases_and_commit(txn, |opener, txn| -> heed::Result<_> {
                let mut create = |name| opener.create_database::<Bytes, Bytes>(txn, Some(name));
                let dbs = [
                    create("meta")?,
                    create("contacts")?,
                    create("pending")?,
                    create("tasks")?,
                    create("claims")?,
                    create("gestalt")?,
                    create("permissions")?,
                ];
                Ok(CommitOrAbort::<_, Infallible>::Commit(dbs))
            })
            .map_err(lmdb)?;
        let [meta, contacts, pending, tasks, claims, gestalt, permissions] = match created {
            CommitOrAbort::Commit(dbs) => dbs,
            CommitOrAbort::Abort(never) => match never {},
        };
        let mut txn = env.write_txn().map_err(lmdb)?;
        match meta.get(&txn, META_SCHEMA_VERSION).map_err(lmdb)? {
            None => meta
                .put(&mut txn, META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())
                .map_err(lmdb)?,
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes)
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        path: path.clone(),
                        what: "schema version",
                        problem: CorruptRecord::WrongLength {
                            found: bytes.len(),
                            expected: 4,
                        },
                    })?;
                if found != SCHEMA_VERSION {
                    return Err(StoreError::SchemaMismatch {
                        path,
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
        }
        txn.commit().map_err(lmdb)?;
        Ok(Self {
            env,
            path,
            map_size: options.map_size,
            meta,
            contacts,
            pending,
            tasks,
            claims,
            gestalt,
            permissions,
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lmdb_error(&self, source: heed::Error) -> StoreError {
        match source {
            heed::Error::Mdb(MdbError::MapFull) => StoreError::MapFull {
                path: self.path.clone(),
                map_size: self.map_size,
            },
            source => StoreError::Lmdb {
                path: self.path.clone(),
                source,
            },
        }
    }

    /// Applies `ops` in order, in one write transaction: on any error nothing
    /// of the batch is written.
    pub fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn().map_err(|e| self.lmdb_error(e))?;
        for op in ops {
            self.apply_one(&mut txn, op)?;
        }
        // Dropping `txn` on an early return aborts it.
        txn.commit().map_err(|e| self.lmdb_error(e))
    }

    /// Applies several batches as one group commit: all of them in one
    /// write transaction (one commit, one sync, however many batches), and
    /// each batch's result in order. When the group fails (a full map, a
    /// full disk), nothing of it is written and each batch is applied
    /// again alone, so that a batch fails only for itself: an LMDB write
    /// transaction that hit an error cannot go on, so the group cannot skip
    /// the one that failed and keep the rest.
    pub fn apply_batches(&mut self, batches: &[&[StoreOp]]) -> Vec<Result<(), StoreError>> {
        match batches {
            [] => return Vec::new(),
            [one] => return vec![self.apply(one)],
            _ => {}
        }
        if self.apply_group(batches).is_ok() {
            return batches.iter().map(|_| Ok(())).collect();
        }
        batches.iter().map(|batch| self.apply(batch)).collect()
    }

    fn apply_group(&mut self, batches: &[&[StoreOp]]) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn().map_err(|e| self.lmdb_error(e))?;
        for op in batches.iter().flat_map(|batch| batch.iter()) {
            self.apply_one(&mut txn, op)?;
        }
        txn.commit().map_err(|e| self.lmdb_error(e))
    }

    fn apply_one(&self, txn: &mut RwTxn<'_>, op: &StoreOp) -> Result<(), StoreError> {
        let err = |e| self.lmdb_error(e);
        match op {
            StoreOp::PutSpaceOwner { space, own } => self
                .meta
                .put(txn, owner_key(*space), own.as_bytes())
                .map_err(err),
            StoreOp::SetActiveSpace(space) => self
                .meta
                .put(txn, META_ACTIVE_SPACE, &[space.as_u8()])
                .map_err(err),
            StoreOp::PutContact {
                space,
                node_id,
                record,
            } => {
                let value = encode("contact", record)?;
                self.contacts
                    .put(txn, &record_key(*space, node_id), &value)
                    .map_err(err)
            }
            StoreOp::DeleteContact { space, node_id } => self
                .contacts
                .delete(txn, &record_key(*space, node_id))
                .map(drop)
                .map_err(err),
            StoreOp::PutPending {
                space,
                node_id,
                record,
            } => {
                let value = encode("pending", record)?;
                self.pending
                    .put(txn, &record_key(*space, node_id), &value)
                    .map_err(err)
            }
            StoreOp::DeletePending { space, node_id } => self
                .pending
                .delete(txn, &record_key(*space, node_id))
                .map(drop)
                .map_err(err),
            StoreOp::PutTask { key, record } => {
                let value = encode("task", record)?;
                self.tasks.put(txn, &key.to_bytes(), &value).map_err(err)
            }
            StoreOp::DeleteTask(key) => self
                .tasks
                .delete(txn, &key.to_bytes())
                .map(drop)
                .map_err(err),
            StoreOp::PutClaim { seq, claim } => {
                // The claim's payload is written as received, byte for byte.
                let value = encode("claim", claim)?;
                self.claims
                    .put(txn, &seq.to_be_bytes(), &value)
                    .map_err(err)
            }
            StoreOp::PutGestaltLink { a, b } => {
                let mut key = [0u8; 2 * NODE_ID_LEN];
                key[..NODE_ID_LEN].copy_from_slice(a.as_bytes());
                key[NODE_ID_LEN..].copy_from_slice(b.as_bytes());
                self.gestalt.put(txn, &key, &[]).map_err(err)
            }
            StoreOp::PutClaimPermission(node_id) => self
                .permissions
                .put(txn, node_id.as_bytes(), &[])
                .map_err(err),
            StoreOp::DeleteClaimPermission(node_id) => self
                .permissions
                .delete(txn, node_id.as_bytes())
                .map(drop)
                .map_err(err),
            StoreOp::ClearSpace(space) => {
                self.meta.delete(txn, owner_key(*space)).map_err(err)?;
                for db in [self.contacts, self.pending] {
                    clear_prefix(db, txn, &[space.as_u8()]).map_err(err)?;
                }
                Ok(())
            }
        }
    }

    /// Everything persisted: the node graph and the scheduled tasks.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            graph: self.load_graph()?,
            tasks: self.load_tasks()?,
            claims: self.load_claims()?,
            gestalt_links: self.load_gestalt()?,
            claim_permissions: self.load_permissions()?,
        })
    }

    /// The own sigchain, in seq order, as stored.
    pub fn load_claims(&self) -> Result<Vec<SignedClaim>, StoreError> {
        let txn = self.env.read_txn().map_err(|e| self.lmdb_error(e))?;
        let mut out = Vec::new();
        for item in self.claims.iter(&txn).map_err(|e| self.lmdb_error(e))? {
            let (_, value) = item.map_err(|e| self.lmdb_error(e))?;
            out.push(decode(value).map_err(|problem| self.corrupt("claim", problem))?);
        }
        Ok(out)
    }

    fn load_gestalt(&self) -> Result<Vec<(NodeId, NodeId)>, StoreError> {
        let txn = self.env.read_txn().map_err(|e| self.lmdb_error(e))?;
        let mut out = Vec::new();
        for item in self.gestalt.iter(&txn).map_err(|e| self.lmdb_error(e))? {
            let (key, _) = item.map_err(|e| self.lmdb_error(e))?;
            let (a, b) = key.split_at(key.len().min(NODE_ID_LEN));
            let pair = NodeId::try_from_slice(a).and_then(|a| Ok((a, NodeId::try_from_slice(b)?)));
            out.push(pair.map_err(|e| self.corrupt("gestalt link", CorruptRecord::NodeId(e)))?);
        }
        Ok(out)
    }

    fn load_permissions(&self) -> Result<Vec<NodeId>, StoreError> {
        let txn = self.env.read_txn().map_err(|e| self.lmdb_error(e))?;
        let mut out = Vec::new();
        for item in self
            .permissions
            .iter(&txn)
            .map_err(|e| self.lmdb_error(e))?
        {
            let (key, _) = item.map_err(|e| self.lmdb_error(e))?;
            out.push(
                NodeId::try_from_slice(key)
                    .map_err(|e| self.corrupt("claim permission", CorruptRecord::NodeId(e)))?,
            );
        }
        Ok(out)
    }

    /// The scheduled tasks, in key order.
    pub fn load_tasks(&self) -> Result<Vec<(TaskKey, TaskRecord)>, StoreError> {
        let txn = self.env.read_txn().map_err(|e| self.lmdb_error(e))?;
        let mut out = Vec::new();
        for item in self.tasks.iter(&txn).map_err(|e| self.lmdb_error(e))? {
            let (key, value) = item.map_err(|e| self.lmdb_error(e))?;
            let key = <[u8; 2]>::try_from(key)
                .ok()
                .and_then(TaskKey::from_bytes)
                .ok_or_else(|| self.corrupt("task", CorruptRecord::Unknown(key.to_vec())))?;
            let record = decode(value).map_err(|problem| self.corrupt("task", problem))?;
            out.push((key, record));
        }
        Ok(out)
    }

    /// The node graph of the active space, or `None` if none was ever written.
    pub fn load_graph(&self) -> Result<Option<GraphSnapshot>, StoreError> {
        let txn = self.env.read_txn().map_err(|e| self.lmdb_error(e))?;
        let Some(space) = self
            .meta
            .get(&txn, META_ACTIVE_SPACE)
            .map_err(|e| self.lmdb_error(e))?
        else {
            return Ok(None);
        };
        let space = match space {
            [n] => NodeGraphSpace::from_u8(*n),
            _ => None,
        }
        .ok_or_else(|| self.corrupt("active space", CorruptRecord::Unknown(space.to_vec())))?;
        let own = self
            .meta
            .get(&txn, owner_key(space))
            .map_err(|e| self.lmdb_error(e))?
            .ok_or_else(|| self.corrupt("space owner", CorruptRecord::MissingOwner(space)))?;
        let own = NodeId::try_from_slice(own)
            .map_err(|e| self.corrupt("space owner", CorruptRecord::NodeId(e)))?;
        Ok(Some(GraphSnapshot {
            space,
            own,
            contacts: self.load_records::<ContactRecord>(&txn, self.contacts, space, "contact")?,
            pending: self.load_records::<PendingRecord>(&txn, self.pending, space, "pending")?,
        }))
    }

    fn load_records<T: DeserializeOwned>(
        &self,
        txn: &RoTxn<'_>,
        db: Db,
        space: NodeGraphSpace,
        what: &'static str,
    ) -> Result<Vec<(NodeId, T)>, StoreError> {
        let mut out = Vec::new();
        let iter = db
            .prefix_iter(txn, &[space.as_u8()])
            .map_err(|e| self.lmdb_error(e))?;
        for item in iter {
            let (key, value) = item.map_err(|e| self.lmdb_error(e))?;
            let node_id = NodeId::try_from_slice(&key[1..])
                .map_err(|e| self.corrupt(what, CorruptRecord::NodeId(e)))?;
            let record = decode(value).map_err(|problem| self.corrupt(what, problem))?;
            out.push((node_id, record));
        }
        Ok(out)
    }

    fn corrupt(&self, what: &'static str, problem: CorruptRecord) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what,
            problem,
        }
    }

    /// Closes the environment and waits until LMDB has really released it, so
    /// that the path can be opened again in this process.
    pub fn close(self) {
        self.env.prepare_for_closing().wait();
    }
}

/// The tables of the environment, in the order [`Store::replace_raw`]
/// numbers them.
#[cfg(feature = "testing")]
pub const TABLES: [&str; 7] = [
    "meta",
    "contacts",
    "pending",
    "tasks",
    "claims",
    "gestalt",
    "permissions",
];

/// One record as [`Store::raw_records`] gives it: an index into [`TABLES`],
/// the key, the value.
#[cfg(feature = "testing")]
pub type RawRecord = (usize, Vec<u8>, Vec<u8>);

/// Raw access for the fuzz target `store_records`: a store whose records
/// are whatever the fuzzer wrote, as a damaged disk would leave them.
#[cfg(feature = "testing")]
impl Store {
    fn tables(&self) -> [Db; 7] {
        [
            self.meta,
            self.contacts,
            self.pending,
            self.tasks,
            self.claims,
            self.gestalt,
            self.permissions,
        ]
    }

    /// Empties every table and writes `records` (an index into [`TABLES`],
    /// the key, the value) byte for byte, in one transaction. LMDB refuses
    /// empty keys and keys over 511 bytes ([`StoreError::Lmdb`]).
    pub fn replace_raw(&mut self, records: &[(usize, &[u8], &[u8])]) -> Result<(), StoreError> {
        let tables = self.tables();
        let mut txn = self.env.write_txn().map_err(|e| self.lmdb_error(e))?;
        for db in tables {
            db.clear(&mut txn).map_err(|e| self.lmdb_error(e))?;
        }
        for &(table, key, value) in records {
            tables[table % tables.len()]
                .put(&mut txn, key, value)
                .map_err(|e| self.lmdb_error(e))?;
        }
        txn.commit().map_err(|e| self.lmdb_error(e))
    }

    /// Every record of every table, as [`Store::replace_raw`] takes them.
    pub fn raw_records(&self) -> Result<Vec<RawRecord>, StoreError> {
        let txn = self.env.read_txn().map_err(|e| self.lmdb_error(e))?;
        let mut out = Vec::new();
        for (table, db) in self.tables().into_iter().enumerate() {
            for item in db.iter(&txn).map_err(|e| self.lmdb_error(e))? {
                let (key, value) = item.map_err(|e| self.lmdb_error(e))?;
                out.push((table, key.to_vec(), value.to_vec()));
            }
        }
        Ok(out)
    }
}

fn owner_key(space: NodeGraphSpace) -> &'static [u8] {
    META_OWNER[usize::from(space.as_u8())]
}

/// Records are keyed by space then NodeId, so one space is one key prefix.
fn record_key(space: NodeGraphSpace, node_id: &NodeId) -> [u8; 1 + NODE_ID_LEN] {
    let mut key = [0u8; 1 + NODE_ID_LEN];
    key[0] = space.as_u8();
    key[1..].copy_from_slice(node_id.as_bytes());
    key
}

fn clear_prefix(db: Db, txn: &mut RwTxn<'_>, prefix: &[u8]) -> heed::Result<()> {
    let keys: Vec<Vec<u8>> = db
        .prefix_iter(txn, prefix)?
        .map(|item| item.map(|(k, _)| k.to_vec()))
        .collect::<heed::Result<_>>()?;
    for key in keys {
        db.delete(txn, &key)?;
    }
    Ok(())
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|source| StoreError::Encode { what, source })
}

/// Decodes a whole record: trailing bytes are corruption, not padding.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CorruptRecord> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(CorruptRecord::TrailingBytes(rest.len())),
        Err(e) => Err(CorruptRecord::Decode(e)),
    }
}
