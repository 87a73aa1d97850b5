//! A writer who holds the project's key (an insider, or a thief of that key) committing a
//! manifest of their own making: the next version of a local table's head, edited, sealed as the
//! library seals, published under its content name and swapped in as the catalog's head.

use colvault::catalog::TableHead;
use colvault::project::Project;
use colvault::table::{Manifest, Table};

/// Commits the head of `t` (a table of a local, encrypted project `p`) as the next version, with
/// `edit` applied to it.
pub fn commit(p: &Project, t: &Table, edit: impl FnOnce(&mut Manifest)) {
    let cmk = p.settings().cmk.clone().expect("an encrypted project");
    let rec = p.catalog().table_by_id(t.table_id()).unwrap().unwrap();
    let mut next = t.head().unwrap();
    next.version += 1;
    next.prev_digest = rec.head.digest;
    next.operation = "append".into();
    edit(&mut next);
    let sealed = next.seal(Some((&p.access(t.table_id()), &cmk))).unwrap();
    let digest = *blake3::hash(&sealed).as_bytes();
    let file = format!("v{:020}-{}.cvm", next.version, colvault::codec::hex(&digest[..16]));
    std::fs::write(t.dir().join("_manifest").join(file), sealed).unwrap();
    let new = TableHead {
        version: next.version,
        digest,
    };
    assert!(p.catalog().swap_head(t.table_id(), &rec.head, &new).unwrap());
}
