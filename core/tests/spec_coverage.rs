//! Every method of the spec's NodeManager has a counterpart whose doc comment
//! says `Spec: NodeManager.<name>`, so a reader goes from the spec to the code
//! in one search.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The methods of the spec's NodeManager class (`shared/spec/polykey-nodes.txt`).
const SPEC_METHODS: &[&str] = &[
    "constructor",
    "start",
    "stop",
    "acquireConnection",
    "withConnF",
    "withConnG",
    "findNode",
    "findNodeBySignal",
    "findNodeByDirect",
    "queryMDNS",
    "findNodeByMDNS",
    "queueDataFromRequest",
    "pingNode",
    "pingNodeAddress",
    "requestChainData",
    "claimNode",
    "handleClaimNode",
    "setNode",
    "unsetNode",
    "getBucket",
    "garbageCollectBucket",
    "addPendingNode",
    "setupGCTask",
    "resetBuckets",
    "refreshBucket",
    "setupRefreshBucketTasks",
    "updateRefreshBucketDelay",
    "syncNodeGraph",
];

/// Methods whose counterparts belong to later work: the drivers' async
/// `with_conn_*` (the tokio driver). The test fails once one of them
/// appears, so that it moves to the checked list.
const NOT_YET: &[&str] = &["withConnF", "withConnG"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | "tests" | "benches" | ".git") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// `Spec: NodeManager.<name>` opening a doc comment in the workspace's sources.
fn documented() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = BTreeSet::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap_or_default();
        let mut in_doc = false;
        for line in text.lines() {
            let line = line.trim_start();
            let first_of_doc = line.starts_with("///") && !in_doc;
            in_doc = line.starts_with("///");
            if !first_of_doc {
                continue;
            }
            let doc = line.trim_start_matches('/').trim_start();
            if let Some(rest) = doc
                .strip_prefix("Spec: `NodeManager.")
                .or_else(|| doc.strip_prefix("Spec: NodeManager."))
            {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn every_spec_method_has_its_doc_line() {
    let found = documented();
    let missing: Vec<&&str> = SPEC_METHODS
        .iter()
        .filter(|m| !NOT_YET.contains(m) && !found.contains(**m))
        .collect();
    assert!(
        missing.is_empty(),
        "spec methods without `Spec: NodeManager.<name>`: {missing:?}"
    );
    let arrived: Vec<&&str> = NOT_YET.iter().filter(|m| found.contains(**m)).collect();
    assert!(
        arrived.is_empty(),
        "{arrived:?} now have counterparts: remove them from NOT_YET"
    );
    let unknown: Vec<&String> = found
        .iter()
        .filter(|f| !SPEC_METHODS.contains(&f.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "doc lines name methods the spec lacks: {unknown:?}"
    );
}

#[test]
fn the_method_list_matches_the_spec() {
    // The spec sits beside the project (shared/spec); skip where it is absent.
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/polykey-nodes.txt");
    let Ok(text) = fs::read_to_string(&spec) else {
        eprintln!(
            "spec not found at {}; list not cross-checked",
            spec.display()
        );
        return;
    };
    let mut in_spec = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        for prefix in [
            "public async *",
            "public async ",
            "protected async ",
            "public ",
            "protected ",
        ] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
                if rest[name.len()..].starts_with('(') && !name.is_empty() {
                    in_spec.insert(name);
                }
                break;
            }
        }
    }
    in_spec.insert("constructor".to_owned());
    let listed: BTreeSet<String> = SPEC_METHODS.iter().map(|s| s.to_string()).collect();
    assert_eq!(listed, in_spec);
}
