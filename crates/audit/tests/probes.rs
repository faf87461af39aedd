//! Known answers: the 196 inclusion and consistency probes in `../shared/testdata/merkle-probes`
//! (from transparency-dev/merkle). The verifier must accept every good probe and reject every bad
//! one; the tally is printed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a test that prints its tally"
)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use enclave_audit::Hash;
use enclave_audit::tree::{verify_consistency, verify_inclusion};
use serde_json::Value;

fn probes_dir() -> PathBuf {
    let shared =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/merkle-probes");
    std::env::var_os("ENCLAVE_MERKLE_PROBES").map_or(shared, PathBuf::from)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

/// A hash field; a value that is not 32 bytes makes the probe unverifiable (an error).
fn hash(v: &Value) -> Option<Hash> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()?;
    Some(Hash(bytes.try_into().ok()?))
}

fn proof(v: &Value) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(hash).collect(),
        _ => None,
    }
}

fn check(kind: &str, p: &Value) -> bool {
    let ok = match kind {
        "inclusion" => (|| {
            let proof = proof(&p["proof"])?;
            let root = hash(&p["root"])?;
            let leaf = hash(&p["leafHash"])?;
            let index = p["leafIdx"].as_i64().and_then(|i| u64::try_from(i).ok())?;
            let size = p["treeSize"].as_i64().and_then(|i| u64::try_from(i).ok())?;
            Some(verify_inclusion(&proof, size, root, index, leaf).is_ok())
        })(),
        _ => (|| {
            // Equal sizes: RFC 9162 §2.1.4.2 asks only for an empty proof and equal roots, which
            // some probes give as arbitrary bytes rather than 32-byte hashes.
            if p["size1"] == p["size2"] && p["size1"].as_i64().is_some_and(|s| s > 0) {
                let empty = proof(&p["proof"]).is_some_and(|v| v.is_empty());
                return Some(empty && p["root1"] == p["root2"]);
            }
            let proof = proof(&p["proof"])?;
            let r1 = hash(&p["root1"])?;
            let r2 = hash(&p["root2"])?;
            let s1 = p["size1"].as_i64().and_then(|i| u64::try_from(i).ok())?;
            let s2 = p["size2"].as_i64().and_then(|i| u64::try_from(i).ok())?;
            if s1 > s2 {
                return Some(false);
            }
            Some(verify_consistency(&proof, s1, r1, s2, r2).is_ok())
        })(),
    };
    ok.unwrap_or(false)
}

#[test]
fn the_verifier_accepts_every_good_probe_and_rejects_every_bad_one() {
    let dir = probes_dir();
    assert!(
        dir.is_dir(),
        "the probes are read from {} (`../shared` beside the repository, as CI places it); \
         set ENCLAVE_MERKLE_PROBES to their directory otherwise",
        dir.display()
    );
    let mut tally = Vec::new();
    let mut wrong = Vec::new();
    for kind in ["inclusion", "consistency"] {
        let mut paths = Vec::new();
        files(&dir.join(kind), &mut paths);
        paths.sort();
        let (mut good, mut bad, mut right) = (0, 0, 0);
        for path in &paths {
            let p: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            let want_err = p["wantErr"].as_bool().unwrap();
            if want_err {
                bad += 1
            } else {
                good += 1
            }
            if check(kind, &p) != want_err {
                right += 1;
            } else {
                wrong.push(format!("{}: {}", path.display(), p["desc"]));
            }
        }
        tally.push((kind, paths.len(), good, bad, right));
    }
    println!(
        "\n{:<12} {:>6} {:>6} {:>6} {:>8}",
        "probes", "total", "good", "bad", "correct"
    );
    for (kind, total, good, bad, right) in &tally {
        println!("{kind:<12} {total:>6} {good:>6} {bad:>6} {right:>8}");
    }
    let total: usize = tally.iter().map(|t| t.1).sum();
    assert_eq!(total, 196, "expected the 196 probes in {}", dir.display());
    assert!(
        wrong.is_empty(),
        "verdicts differ from the probes: {wrong:#?}"
    );
}
