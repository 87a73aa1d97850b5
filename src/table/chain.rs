//! A table's manifest chain on storage, anchored by the head the catalog records.
//!
//! Manifest files are named by content: `_manifest/v<20-digit version>-<first 16 bytes of the
//! file's BLAKE3, hex>.cvm` (tables adopted from before the catalog keep `v<version>.cvm`). The
//! catalog records the head's version and digest, and every manifest records the digest of the one
//! before it, so a reader finds every retained version by name and checks it by digest: no listing,
//! and nothing on storage chooses what the reader expects.
//!
//! A commit writes its new manifest under a fresh name, then swaps the catalog's head from the one
//! it built on (compare-and-swap); the loser of a race removes its manifest and tries again on the
//! new head. A crash before the swap leaves an orphan manifest that no reader uses and
//! [`Table::vacuum`] removes once it is older than the grace period.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Manifest, Table, MAX_COMMIT_ATTEMPTS};
use crate::catalog::TableHead;
use crate::crypto::random_array;
use crate::error::{Error, Result};

fn now_ms() -> u64 {
    UNIX_EPOCH.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The name of manifest `version` whose file has digest `digest`.
pub(crate) fn manifest_name(version: u64, digest: &[u8; 32]) -> String {
    format!("v{version:020}-{}.cvm", crate::codec::hex(&digest[..16]))
}

/// The name of manifest `version` in a table adopted from before the catalog.
fn legacy_name(version: u64) -> String {
    format!("v{version:020}.cvm")
}

/// The version a manifest file name carries, if it is one.
fn version_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix('v')?.strip_suffix(".cvm")?;
    let digits = rest.split_once('-').map_or(rest, |(v, _)| v);
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// What storage holds for an expected manifest.
enum Found {
    Ok(Box<Manifest>),
    Missing,
    /// A file under the content name that does not hash to it.
    Altered,
    /// A legacy-named file of that version with other content.
    Replaced,
}

impl Table {
    fn manifest_dir(&self) -> PathBuf {
        self.dir.join("_manifest")
    }

    /// The object name of manifest file `name`.
    fn manifest_object(name: &str) -> String {
        format!("_manifest/{name}")
    }

    /// The table's location as a path: its directory when local, else its URL (see
    /// [`Table::storage`]).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The file of retained manifest `version` of the chain [`head`](Self::head) verified, as a
    /// path (a URL on an object store; for inspection: readers never choose files by listing).
    pub fn manifest_file(&self, version: u64) -> Result<PathBuf> {
        let digest = self.verified_digest(version)?;
        let named = manifest_name(version, &digest);
        let name = if self.storage.get(&Self::manifest_object(&named))?.is_some() {
            named
        } else {
            legacy_name(version)
        };
        Ok(self.manifest_dir().join(name))
    }

    /// The version the catalog records as the table's head (one catalog read; nothing verified).
    #[cfg_attr(not(feature = "ballista"), allow(dead_code))]
    pub(crate) fn head_version(&self) -> Result<u64> {
        Ok(self.catalog_head()?.version)
    }

    /// The head the catalog records.
    pub(super) fn catalog_head(&self) -> Result<TableHead> {
        let catalog = self.project.catalog();
        let rec = catalog
            .table_by_id(&self.table_id)?
            .ok_or_else(|| Error::NotRegistered {
                kind: "table",
                name: self.name.clone(),
                hint: " (it was dropped)".into(),
            })?;
        Ok(rec.head)
    }

    /// Reads manifest `version` whose file has digest `digest`. The sealed-manifest rule and the
    /// manifest's own authentication apply.
    fn read_manifest_expect(&self, version: u64, digest: &[u8; 32]) -> Result<Found> {
        let mut found = Found::Missing;
        for (name, content_named) in [(manifest_name(version, digest), true), (legacy_name(version), false)] {
            let Some(bytes) = self.storage.get(&Self::manifest_object(&name))? else {
                continue;
            };
            if blake3::hash(&bytes).as_bytes() != digest {
                // A file under the content name that does not hash to it was altered; one under the
                // legacy name may be an older or foreign version put in place.
                found = if content_named { Found::Altered } else { Found::Replaced };
                continue;
            }
            if self.require_sealed() && Manifest::sealed_key_version(&bytes)?.is_none() {
                return Err(Error::integrity(format!(
                    "manifest version {version} of table {} (it is not sealed, but the project is encrypted)",
                    self.name
                )));
            }
            let access = self.access();
            let cmks = self.manifest_cmks();
            let keys = access.as_ref().map(|a| (a, cmks.as_slice()));
            let m = Manifest::open(&bytes, version, Some(&self.table_id), keys)?;
            // The column keys are the catalog's; the manifest must keep them.
            self.check_manifest_column_keys(&m)?;
            self.check_manifest_partitions(&m)?;
            return Ok(Found::Ok(Box::new(m)));
        }
        Ok(found)
    }

    /// Manifest `version` of the chain, which must be on storage.
    fn chain_member(&self, version: u64, digest: &[u8; 32], what: &str) -> Result<Manifest> {
        match self.read_manifest_expect(version, digest)? {
            Found::Ok(m) => Ok(*m),
            Found::Missing => Err(Error::integrity(format!(
                "manifest chain of table {} (version {version}{what} is missing)",
                self.name
            ))),
            Found::Altered | Found::Replaced => Err(Error::integrity(format!(
                "manifest version {version} of table {} (it was altered or replaced)",
                self.name
            ))),
        }
    }

    /// The bytes of retained manifest `version` of the verified chain.
    pub(super) fn manifest_bytes(&self, version: u64) -> Result<Vec<u8>> {
        let digest = self.verified_digest(version)?;
        for name in [manifest_name(version, &digest), legacy_name(version)] {
            if let Some(bytes) = self.storage.get(&Self::manifest_object(&name))? {
                if blake3::hash(&bytes).as_bytes() == &digest {
                    return Ok(bytes.to_vec());
                }
            }
        }
        Err(Error::integrity(format!(
            "manifest version {version} of table {} (it is missing)",
            self.name
        )))
    }

    fn verified_digest(&self, version: u64) -> Result<[u8; 32]> {
        self.verified
            .lock()
            .map_err(|_| Error::Poisoned)?
            .get(&version)
            .copied()
            .ok_or_else(|| Error::InvalidArgument(format!("table {} has no retained version {version}", self.name)))
    }

    /// The head the catalog records, with the chain from its oldest retained version checked.
    ///
    /// A writer may commit, and `expire`/`vacuum` remove old manifests, while this runs: a read
    /// that fails while the catalog's head moves on is tried again on the new head (a bounded
    /// number of times), so a concurrent change never surfaces as damage.
    pub fn head(&self) -> Result<Manifest> {
        self.head_with_base().map(|(_, m)| m)
    }

    /// [`head`](Self::head) with the catalog's record of it, for a commit to build on.
    pub(super) fn head_with_base(&self) -> Result<(TableHead, Manifest)> {
        let mut attempt = 0;
        loop {
            let seen = self.catalog_head()?;
            match self.head_at(&seen) {
                Ok(m) => return Ok((seen, m)),
                Err(_) if attempt < 16 && self.catalog_head()? != seen => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Manifest `head` from storage, with its chain checked. Storage lacking it is a rollback (or a
    /// replaced or swapped table directory).
    pub(crate) fn head_at(&self, head: &TableHead) -> Result<Manifest> {
        let rollback = |detail: &str| Error::TableRollback {
            table: self.name.clone(),
            version: head.version,
            detail: detail.into(),
        };
        let m = match self.read_manifest_expect(head.version, &head.digest)? {
            Found::Ok(m) => *m,
            Found::Missing => return Err(rollback("its manifest is missing")),
            Found::Replaced => return Err(rollback("another manifest of that version is in its place")),
            Found::Altered => {
                return Err(Error::integrity(format!(
                    "manifest version {} of table {} (it was altered)",
                    head.version, self.name
                )))
            }
        };
        self.verify_chain(&m, head.digest)?;
        Ok(m)
    }

    /// Checks the chain below `head` down to its oldest retained version, remembering verified
    /// digests so each version is checked once per table handle.
    fn verify_chain(&self, head: &Manifest, digest: [u8; 32]) -> Result<()> {
        let mut verified = self.verified.lock().map_err(|_| Error::Poisoned)?;
        if verified.get(&head.version) == Some(&digest) {
            return Ok(());
        }
        let horizon = head.oldest_retained.max(1);
        let mut v = head.version;
        let mut prev_digest = head.prev_digest;
        let mut chain = vec![(v, digest)];
        let mut joined_known = false;
        while v > horizon {
            if verified.get(&(v - 1)) == Some(&prev_digest) {
                joined_known = true;
                break;
            }
            let prev = self.chain_member(v - 1, &prev_digest, &format!(", which version {v} follows,"))?;
            chain.push((v - 1, prev_digest));
            v -= 1;
            prev_digest = prev.prev_digest;
        }
        if !joined_known && v == 1 && prev_digest != [0; 32] {
            return Err(Error::integrity(format!(
                "manifest chain of table {} (version 1 has a predecessor)",
                self.name
            )));
        }
        verified.retain(|k, _| *k >= horizon && *k <= head.version);
        verified.extend(chain);
        Ok(())
    }

    /// Version `version`: a retained version of the verified chain.
    pub fn snapshot(&self, version: u64) -> Result<Manifest> {
        let head = self.head()?;
        if version == head.version {
            return Ok(head);
        }
        if version < head.oldest_retained.max(1) || version > head.version {
            return Err(Error::InvalidArgument(format!(
                "table {} has no version {version} (retained: {} to {})",
                self.name,
                head.oldest_retained.max(1),
                head.version
            )));
        }
        let digest = self.verified_digest(version)?;
        self.chain_member(version, &digest, "")
    }

    /// Writes `m` as the version after `prev` (its chain fields filled in) under a fresh name; not
    /// yet committed. Returns the manifest and its file's digest.
    pub(super) fn publish(
        &self,
        m: &Manifest,
        prev: Option<(&Manifest, [u8; 32])>,
        op: &str,
    ) -> Result<(Manifest, [u8; 32])> {
        let mut next = m.clone();
        next.version = prev.map_or(1, |(p, _)| p.version + 1);
        next.prev_digest = prev.map_or([0; 32], |(_, d)| d);
        next.timestamp_ms = now_ms();
        next.operation = op.to_string();
        let access = self.access();
        let cmk = self.project.settings().cmk.clone();
        let sealed = next.seal(access.as_ref().zip(cmk.as_ref()))?;
        let digest = *blake3::hash(&sealed).as_bytes();
        let name = Self::manifest_object(&manifest_name(next.version, &digest));
        if !self.storage.put_new(&name, sealed.into())? {
            return Err(Error::integrity(format!(
                "manifest {} (it already exists)",
                self.storage.describe(&name)
            )));
        }
        Ok((next, digest))
    }

    /// Commits a change: `change` gets the current head and returns the next manifest's content
    /// (its version and chain fields are filled in here), or an error to abort. The new manifest is
    /// written, then the catalog's head swapped; on a conflict the change is re-applied to the new
    /// head.
    pub(super) fn commit<F>(&self, op: &str, change: F) -> Result<Manifest>
    where
        F: FnMut(&Manifest) -> Result<Manifest>,
    {
        self.commit_from(op, None, change)
    }

    /// [`commit`](Self::commit), building first on `known` (a head the caller just read from the
    /// catalog, saving a round trip); if it is stale the swap fails and the next attempt re-reads.
    pub(super) fn commit_from<F>(
        &self,
        op: &str,
        mut known: Option<(TableHead, Manifest)>,
        mut change: F,
    ) -> Result<Manifest>
    where
        F: FnMut(&Manifest) -> Result<Manifest>,
    {
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            let (base, head) = match known.take() {
                Some(k) => k,
                None => {
                    let base = self.catalog_head()?;
                    match self.head_at(&base) {
                        Ok(h) => (base, h),
                        // The head moved while its chain was read (a concurrent commit or expiry).
                        Err(_) if self.catalog_head()? != base => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            let next = change(&head)?;
            let (done, digest) = self.publish(&next, Some((&head, base.digest)), op)?;
            let new = TableHead {
                version: done.version,
                digest,
            };
            if self.project.catalog().swap_head(&self.table_id, &base, &new)? {
                return Ok(done);
            }
            // Lost the race: the manifest just written is referenced by nothing; remove it, back
            // off a little, with jitter, and retry on the new head.
            let _ = self
                .storage
                .delete(&Self::manifest_object(&manifest_name(done.version, &digest)));
            let jitter = random_array::<1>()?[0] as u64;
            std::thread::sleep(Duration::from_micros((attempt.min(20) as u64 * 50) + jitter));
        }
        Err(Error::InvalidArgument(format!(
            "could not commit to table {} after {MAX_COMMIT_ATTEMPTS} attempts",
            self.name
        )))
    }

    /// Manifest files on storage: (version, file name).
    fn manifest_files(&self) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        for entry in self.storage.list("_manifest")? {
            let name = entry.name.rsplit('/').next().unwrap_or_default().to_string();
            if let Some(v) = version_of(&name) {
                out.push((v, name));
            }
        }
        out.sort();
        Ok(out)
    }

    /// For adopting a table that no catalog records (trust on first use): the newest version on
    /// storage whose whole chain verifies. Only the newest version is considered, so damage there is
    /// an error, never a silent step back to an older version.
    pub(crate) fn adopt_head(&self) -> Result<(TableHead, Manifest)> {
        let files = self.manifest_files()?;
        let newest = files
            .last()
            .map(|(v, _)| *v)
            .ok_or_else(|| Error::integrity(format!("table {} (it has no manifest)", self.name)))?;
        let mut last_err = None;
        for (_, name) in files.iter().filter(|(v, _)| *v == newest) {
            let object = Self::manifest_object(name);
            let bytes = self.storage.get(&object)?.ok_or_else(|| {
                Error::integrity(format!(
                    "{} (it vanished while being read)",
                    self.storage.describe(&object)
                ))
            })?;
            let head = TableHead {
                version: newest,
                digest: *blake3::hash(&bytes).as_bytes(),
            };
            match self.head_at(&head) {
                Ok(m) => return Ok((head, m)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one manifest of the newest version"))
    }

    /// Expires every version older than `keep_from` (the head is always kept): their manifests are
    /// deleted, and [`vacuum`](Self::vacuum) may then delete the files only they referenced.
    /// `keep_from` beyond the head is refused.
    pub fn expire_snapshots(&self, keep_from: u64) -> Result<usize> {
        let head = self.head()?;
        if keep_from > head.version {
            return Err(Error::InvalidArgument(format!(
                "table {} has no version {keep_from} to keep from (retained: {} to {}); nothing was expired",
                self.name,
                head.oldest_retained.max(1),
                head.version
            )));
        }
        let keep_from = keep_from.max(1);
        if keep_from <= head.oldest_retained {
            return Ok(0);
        }
        // First commit the new horizon, then delete below it: a crash in between leaves old
        // manifests that the chain no longer needs, which a later expiry or vacuum removes.
        self.commit("expire snapshots", |h| {
            let mut next = h.clone();
            next.oldest_retained = keep_from.max(h.oldest_retained);
            Ok(next)
        })?;
        let mut removed = 0;
        for (v, name) in self.manifest_files()? {
            if v < keep_from {
                self.storage.delete(&Self::manifest_object(&name))?;
                removed += 1;
            }
        }
        self.verified
            .lock()
            .map_err(|_| Error::Poisoned)?
            .retain(|v, _| *v >= keep_from);
        Ok(removed)
    }

    /// Expires versions older than `age` (by commit time).
    pub fn expire_older_than(&self, age: Duration) -> Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let head = self.head()?;
        let mut keep_from = head.version;
        for v in (head.oldest_retained.max(1)..head.version).rev() {
            if self.snapshot(v)?.timestamp_ms < cutoff {
                break;
            }
            keep_from = v;
        }
        self.expire_snapshots(keep_from)
    }

    /// Deletes what no retained version of the catalog's head reaches and that is older than
    /// `grace` (so a concurrent writer's files and manifest, written but not yet committed,
    /// survive): data files, manifests (orphans of lost races and crashes, expired versions), and
    /// leftover temporary files. Returns how many files were removed. If storage does not hold the
    /// catalog's head (a rollback), it fails before deleting anything.
    pub fn vacuum(&self, grace: Duration) -> Result<usize> {
        let head = self.head()?;
        let mut live_data = HashSet::new();
        let mut live_manifests = HashSet::new();
        let digests: HashMap<u64, [u8; 32]> = self
            .verified
            .lock()
            .map_err(|_| Error::Poisoned)?
            .clone()
            .into_iter()
            .collect();
        for v in head.oldest_retained.max(1)..=head.version {
            for f in self.snapshot(v)?.files {
                live_data.insert(f.name);
            }
            if let Some(d) = digests.get(&v) {
                live_manifests.insert(manifest_name(v, d));
                live_manifests.insert(legacy_name(v));
            }
        }
        let mut removed = self
            .storage
            .remove_where("data", grace, |name| !live_data.contains(name))?;
        removed += self.storage.remove_where("_manifest", grace, |name| {
            version_of(name).is_some() && !live_manifests.contains(name)
        })?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_carry_their_version() {
        let d = [0xab; 32];
        assert_eq!(version_of(&manifest_name(42, &d)), Some(42));
        assert_eq!(version_of(&legacy_name(7)), Some(7));
        assert_eq!(version_of("v12.cvm"), None);
        assert_eq!(version_of(".v00000000000000000001.cvm.1234.tmp"), None);
    }
}
