//! The key-state matrix (issue 7): for each key situation and each table operation, the typed error
//! expected, or success. Every cell starts from a fresh fixture, project and table holding data, so
//! cells are independent. The expectations are one table of data, [`MATRIX`]; all mismatches are
//! collected and reported together.
//!
//! The same matrix runs against every KMS backend of the build (`common::kms_backend`): `LocalKms`
//! always, `Pkcs11Kms` on a fresh SoftHSM2 token per cell with feature `pkcs11`. The two situations
//! that are about how a KMS is opened have each backend's analog: wrong credentials (another
//! passphrase; another PIN) and tampered key state (a byte of the keystore file flipped; a byte of
//! the sealed state record on the token flipped through a logged-in session).
//!
//! With feature `aws-kms`, `AwsKms` on the test binary's moto server. Some situations cannot be
//! produced there ([`KmsBackend::cannot_produce`]): the AWS KMS API deletes no key on request and
//! destroys no single version (the setup call must still be refused with `KmsUnsupported`, checked
//! per cell), moto accepts any credentials, and the key state lives in the service. Those cells are
//! printed as skipped with the reason and never counted as passes; every other cell has the same
//! expectation as on the other backends.

mod common;

use std::time::Duration;

use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::table::Table;
use colvault::{Algorithm, Error, FileReader, KeyAccess, ReaderOptions};
use common::kms_backend::{backends, Cell, KmsBackend};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Situation {
    /// The project's CMK is disabled.
    Disabled,
    /// The CMK is scheduled for deletion.
    PendingDeletion,
    /// The CMK was deleted (window passed, material destroyed).
    Deleted,
    /// Rotated, everything rewrapped, old snapshots expired, then version 1 destroyed through
    /// `Project::destroy_key_version`: nothing needs version 1 any more.
    DestroyedVersionUnused,
    /// Rotated, then version 1 destroyed directly in the KMS while files and manifests need it.
    DestroyedVersionNeeded,
    /// The project's grant on its CMK was revoked.
    NoGrant,
    /// Data bound to another project's context: read = a data file opened with a `KeyAccess`
    /// whose project id differs; the other operations run on the table copied into a second
    /// project with the same name and CMK but another (immutable) project id.
    WrongProjectContext,
    /// The CMK was rotated and nothing rewrapped: old files still read, writes use version 2.
    RotatedOldVersion,
    /// The KMS opened with wrong credentials: the keystore with another passphrase, the token with
    /// another PIN.
    WrongCredentials,
    /// The KMS's stored key state altered: one byte of the keystore file, or of the sealed state
    /// record on the token, flipped.
    TamperedKeyState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `Table::append`.
    Write,
    /// A full scan.
    Read,
    /// `Project::rewrap`.
    Rewrap,
    /// `Project::reencrypt`.
    Reencrypt,
    /// `Project::migrate` to AES-256-CTR with the default key.
    Migrate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Ok,
    KeyDisabled,
    KeyPendingDeletion,
    KeyDeleted,
    VersionDestroyed,
    AccessDenied,
    Integrity,
    /// The KMS cannot even be opened: it refuses the credentials with the backend's error
    /// (`WrongRootSecret` for `LocalKms`, `KmsAuthentication` for `Pkcs11Kms`).
    OpenWrongCredentials,
    /// The KMS cannot even be opened: `Integrity` (or, for `LocalKms`, whose check value is in the
    /// header, possibly `WrongRootSecret`).
    OpenTampered,
}

use common::id_batch as batch;
use Expect as E;
use Op::*;
use Situation::*;

/// The matrix: (situation, operation, expected).
const MATRIX: &[(Situation, Op, Expect)] = &[
    (Disabled, Write, E::KeyDisabled),
    (Disabled, Read, E::KeyDisabled),
    (Disabled, Rewrap, E::KeyDisabled),
    (Disabled, Reencrypt, E::KeyDisabled),
    (Disabled, Migrate, E::KeyDisabled),
    (PendingDeletion, Write, E::KeyPendingDeletion),
    (PendingDeletion, Read, E::KeyPendingDeletion),
    (PendingDeletion, Rewrap, E::KeyPendingDeletion),
    (PendingDeletion, Reencrypt, E::KeyPendingDeletion),
    (PendingDeletion, Migrate, E::KeyPendingDeletion),
    (Deleted, Write, E::KeyDeleted),
    (Deleted, Read, E::KeyDeleted),
    (Deleted, Rewrap, E::KeyDeleted),
    (Deleted, Reencrypt, E::KeyDeleted),
    (Deleted, Migrate, E::KeyDeleted),
    (DestroyedVersionUnused, Write, E::Ok),
    (DestroyedVersionUnused, Read, E::Ok),
    (DestroyedVersionUnused, Rewrap, E::Ok),
    (DestroyedVersionUnused, Reencrypt, E::Ok),
    (DestroyedVersionUnused, Migrate, E::Ok),
    (DestroyedVersionNeeded, Write, E::VersionDestroyed),
    (DestroyedVersionNeeded, Read, E::VersionDestroyed),
    (DestroyedVersionNeeded, Rewrap, E::VersionDestroyed),
    (DestroyedVersionNeeded, Reencrypt, E::VersionDestroyed),
    (DestroyedVersionNeeded, Migrate, E::VersionDestroyed),
    (NoGrant, Write, E::AccessDenied),
    (NoGrant, Read, E::AccessDenied),
    (NoGrant, Rewrap, E::AccessDenied),
    (NoGrant, Reencrypt, E::AccessDenied),
    (NoGrant, Migrate, E::AccessDenied),
    (WrongProjectContext, Write, E::Integrity),
    (WrongProjectContext, Read, E::Integrity),
    (WrongProjectContext, Rewrap, E::Integrity),
    (WrongProjectContext, Reencrypt, E::Integrity),
    (WrongProjectContext, Migrate, E::Integrity),
    (RotatedOldVersion, Write, E::Ok),
    (RotatedOldVersion, Read, E::Ok),
    (RotatedOldVersion, Rewrap, E::Ok),
    (RotatedOldVersion, Reencrypt, E::Ok),
    (RotatedOldVersion, Migrate, E::Ok),
    (WrongCredentials, Write, E::OpenWrongCredentials),
    (WrongCredentials, Read, E::OpenWrongCredentials),
    (WrongCredentials, Rewrap, E::OpenWrongCredentials),
    (WrongCredentials, Reencrypt, E::OpenWrongCredentials),
    (WrongCredentials, Migrate, E::OpenWrongCredentials),
    (TamperedKeyState, Write, E::OpenTampered),
    (TamperedKeyState, Read, E::OpenTampered),
    (TamperedKeyState, Rewrap, E::OpenTampered),
    (TamperedKeyState, Reencrypt, E::OpenTampered),
    (TamperedKeyState, Migrate, E::OpenTampered),
];

const ROWS: i64 = 100;

fn count(t: &Table) -> Result<usize, Error> {
    Ok(t.scan().build()?.read_all()?.iter().map(|b| b.num_rows()).sum())
}

fn setup(fx: &Cell) -> (Project, Table) {
    let p = Project::create(
        &fx.catalog,
        fx.dir.path().join("proj"),
        "matrix",
        ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault),
        fx.keys(),
    )
    .unwrap();
    let t = p.create_table("t", batch(0, 1).schema()).unwrap();
    t.append([batch(0, ROWS)]).unwrap();
    (p, t)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// What a cell observed: "ok", the error variant's name, or a description of anything else.
fn label(r: &Result<(), Error>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(Error::KeyDisabled { .. }) => "KeyDisabled".into(),
        Err(Error::KeyPendingDeletion { .. }) => "KeyPendingDeletion".into(),
        Err(Error::KeyDeleted { .. }) => "KeyDeleted".into(),
        Err(Error::VersionDestroyed { .. }) => "VersionDestroyed".into(),
        Err(Error::AccessDenied { .. }) => "AccessDenied".into(),
        Err(Error::Integrity { .. }) => "Integrity".into(),
        Err(Error::WrongRootSecret { .. }) => "WrongRootSecret".into(),
        Err(Error::KmsAuthentication { .. }) => "KmsAuthentication".into(),
        Err(e) => format!("other error: {e}"),
    }
}

fn matches_expect(backend: &dyn KmsBackend, expect: Expect, opened: bool, r: &Result<(), Error>) -> bool {
    match expect {
        E::OpenWrongCredentials => !opened && label(r) == backend.wrong_credentials_error(),
        E::OpenTampered => match backend.name() {
            "local" => !opened && matches!(r, Err(Error::Integrity { .. } | Error::WrongRootSecret { .. })),
            _ => !opened && matches!(r, Err(Error::Integrity { .. })),
        },
        _ => opened && label(r) == format!("{expect:?}"),
    }
}

/// Runs `op` on the project and table; success also checks what the operation promised.
fn run_op(op: Op, p: &Project, t: &Table, rows_before: usize) -> Result<(), Error> {
    match op {
        Write => {
            t.append([batch(1000, 10)])?;
            let n = count(t)?;
            if n != rows_before + 10 {
                return Err(Error::InvalidArgument(format!(
                    "after write: {n} rows, expected {}",
                    rows_before + 10
                )));
            }
        }
        Read => {
            let n = count(t)?;
            if n != rows_before {
                return Err(Error::InvalidArgument(format!("read {n} rows, expected {rows_before}")));
            }
        }
        Rewrap => {
            p.rewrap(&|_, _, _| {})?;
            let cmk = p.settings().cmk.clone().unwrap();
            let primary = p.keys().kms.describe(&cmk)?.primary_version;
            if let Some(f) = t.head()?.files.iter().find(|f| f.key_version != primary) {
                return Err(Error::InvalidArgument(format!(
                    "after rewrap a file is under version {}, not {primary}",
                    f.key_version
                )));
            }
            let n = count(t)?;
            if n != rows_before {
                return Err(Error::InvalidArgument(format!("after rewrap: {n} rows")));
            }
        }
        Reencrypt => {
            let before: Vec<_> = t.head()?.files.iter().map(|f| f.file_id).collect();
            p.reencrypt(&|_, _, _| {})?;
            let after: Vec<_> = t.head()?.files.iter().map(|f| f.file_id).collect();
            if before.iter().any(|id| after.contains(id)) {
                return Err(Error::InvalidArgument("re-encryption kept a file id".into()));
            }
            let n = count(t)?;
            if n != rows_before {
                return Err(Error::InvalidArgument(format!("after reencrypt: {n} rows")));
            }
        }
        Migrate => {
            let p2 = p.migrate(
                ProjectSettings::encrypted(Algorithm::Aes256Ctr, KeyChoice::ProjectDefault),
                &|_, _, _| {},
            )?;
            if p2.settings().algorithm != Algorithm::Aes256Ctr || p2.settings().migrating_from.is_some() {
                return Err(Error::InvalidArgument("migration did not finish".into()));
            }
            let p3 = Project::open(p2.catalog(), p2.name(), p2.keys().clone())?;
            let n = count(&p3.table(t.name())?)?;
            if n != rows_before {
                return Err(Error::InvalidArgument(format!("after migrate: {n} rows")));
            }
        }
    }
    Ok(())
}

/// What running a cell gave.
enum Outcome {
    /// The situation was produced and the operation ran: whether the KMS opened, and its result.
    Ran(bool, Result<(), Error>),
    /// The call that produces the situation (deleting the key, destroying a version, reopening the
    /// KMS) was refused with this error, so the operation never ran. Only
    /// `Error::KmsUnsupported` on a backend whose [`KmsBackend::cannot_produce`] names the
    /// situation counts as a skipped cell; anything else is a mismatch.
    SetupRefused(Error),
}

/// Builds the cell and runs it, or `None` when the backend is unavailable (skipped).
fn run_cell(backend: &dyn KmsBackend, situation: Situation, op: Op) -> Option<Outcome> {
    let fx = backend.cell(&format!("matrix-{situation:?}-{op:?}"))?;
    Some(run_cell_in(backend, &fx, situation, op))
}

/// Makes a situation-producing call; on refusal, ends the cell with [`Outcome::SetupRefused`].
macro_rules! produce {
    ($call:expr) => {
        if let Err(e) = $call {
            return Outcome::SetupRefused(e);
        }
    };
}

fn run_cell_in(backend: &dyn KmsBackend, fx: &Cell, situation: Situation, op: Op) -> Outcome {
    let (p, t) = setup(fx);
    let cmk = p.settings().cmk.clone().unwrap();
    let mut rows = ROWS as usize;
    match situation {
        Disabled => {
            fx.kms.disable(&cmk).unwrap();
        }
        PendingDeletion => {
            fx.kms.schedule_deletion(&cmk, 7).unwrap();
        }
        Deleted => {
            fx.kms.schedule_deletion(&cmk, 7).unwrap();
            fx.clock.advance(Duration::from_secs(7 * 86_400 + 1));
            produce!(fx.kms.delete_key(&cmk));
        }
        DestroyedVersionUnused => {
            fx.kms.rotate(&cmk).unwrap();
            fx.cache.invalidate();
            p.rewrap(&|_, _, _| {}).unwrap();
            t.expire_snapshots(t.head().unwrap().version).unwrap();
            // A superseded version is destroyable a day (the longest KEK lifetime) after the rotation.
            fx.clock.advance(Duration::from_secs(86_400));
            produce!(p.destroy_key_version(1));
        }
        DestroyedVersionNeeded => {
            fx.kms.rotate(&cmk).unwrap();
            fx.clock.advance(Duration::from_secs(86_400));
            produce!(fx.kms.destroy_version(&cmk, 1));
        }
        NoGrant => {
            fx.kms.revoke(&cmk, p.principal()).unwrap();
        }
        WrongProjectContext => {
            fx.cache.invalidate();
            if op == Read {
                // A data file of the table, opened directly with another project id in the context.
                let head = t.head().unwrap();
                let bytes = std::fs::read(t.dir().join("data").join(&head.files[0].name)).unwrap();
                let right = KeyAccess::new(
                    fx.cache.clone(),
                    p.principal().clone(),
                    p.settings().project_id.clone(),
                    t.table_id(),
                );
                let control = FileReader::open(
                    bytes.clone(),
                    ReaderOptions::encrypted(Algorithm::Aes256Gcm, right, [cmk.clone()]),
                )
                .and_then(|r| r.scan().build()?.read_all())
                .map(|b| b.iter().map(|b| b.num_rows()).sum::<usize>());
                assert_eq!(control.unwrap(), rows, "control: the right context reads the file");
                fx.cache.invalidate();
                let wrong = KeyAccess::new(
                    fx.cache.clone(),
                    p.principal().clone(),
                    "another_project_id",
                    t.table_id(),
                );
                let r = FileReader::open(
                    bytes,
                    ReaderOptions::encrypted(Algorithm::Aes256Gcm, wrong, [cmk.clone()]),
                )
                .and_then(|r| r.scan().build()?.read_all())
                .map(|_| ());
                return Outcome::Ran(true, r);
            }
            // A second project on the same CMK with its own project id; the table's directory
            // copied into one of its tables, and (as someone who can write the catalog could) that
            // table's head pointed at the copied manifests: the ids bound into every manifest and
            // wrap still refuse it.
            let other_id = colvault::project::new_project_id().unwrap();
            fx.kms
                .grant(&cmk, &colvault::kms::Principal::new(&other_id).unwrap())
                .unwrap();
            let other = Project::create_with_id(
                &fx.catalog,
                fx.dir.path().join("other"),
                "matrix_other",
                ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::Byok(cmk.clone())),
                fx.keys(),
                other_id,
            )
            .unwrap();
            assert_ne!(other.settings().project_id, p.settings().project_id);
            let t_other = other.create_table("t", batch(0, 1).schema()).unwrap();
            copy_dir(t.dir(), t_other.dir());
            let head_of = |id: &str| fx.catalog.table_by_id(id).unwrap().unwrap().head;
            assert!(fx
                .catalog
                .swap_head(t_other.table_id(), &head_of(t_other.table_id()), &head_of(t.table_id()))
                .unwrap());
            fx.cache.invalidate();
            let t2 = other.table("t").unwrap();
            return Outcome::Ran(true, run_op(op, &other, &t2, rows));
        }
        RotatedOldVersion => {
            fx.kms.rotate(&cmk).unwrap();
            fx.cache.invalidate();
            if op == Write {
                let r = run_op(op, &p, &t, rows).and_then(|()| {
                    let versions: Vec<u32> = t.head()?.files.iter().map(|f| f.key_version).collect();
                    if versions != [1, 2] {
                        return Err(Error::InvalidArgument(format!(
                            "file key versions {versions:?}, expected [1, 2] (old kept, new under v2)"
                        )));
                    }
                    Ok(())
                });
                return Outcome::Ran(true, r);
            }
        }
        WrongCredentials | TamperedKeyState => {
            let reopened = if situation == WrongCredentials {
                backend.reopen_with_wrong_credentials(fx)
            } else {
                backend.reopen_after_tampering(fx)
            };
            return match reopened {
                Err(e @ Error::KmsUnsupported { .. }) => Outcome::SetupRefused(e),
                Err(e) => Outcome::Ran(false, Err(e)),
                Ok(kms) => {
                    // It opened although it should not have: run the operation with it anyway.
                    let r = Project::open(p.catalog(), p.name(), Cell::keys_with(kms))
                        .and_then(|p2| run_op(op, &p2, &p2.table("t")?, rows));
                    Outcome::Ran(true, r)
                }
            };
        }
    }
    if situation == DestroyedVersionUnused {
        rows = count(&t).unwrap();
    }
    fx.cache.invalidate();
    Outcome::Ran(true, run_op(op, &p, &t, rows))
}

/// Runs every cell of [`MATRIX`] against `backend`; panics listing every mismatch.
fn run_matrix(backend: &dyn KmsBackend) {
    let started = std::time::Instant::now();
    let mut mismatches = Vec::new();
    let mut observed = Vec::new();
    let (mut passed, mut skipped) = (0, 0);
    for &(situation, op, expect) in MATRIX {
        let Some(outcome) = run_cell(backend, situation, op) else {
            return; // the backend is unavailable and printed SKIPPED
        };
        let not_producible = backend.cannot_produce(&format!("{situation:?}"));
        let (opened, r) = match (outcome, not_producible) {
            (Outcome::SetupRefused(e @ Error::KmsUnsupported { .. }), Some(why)) => {
                eprintln!(
                    "SKIPPED key-state matrix cell {situation:?} x {op:?} on {}: not producible on this \
                     backend: {why} (the setup call was refused as expected: {e})",
                    backend.name()
                );
                observed.push(format!("{situation:?} x {op:?} -> skipped (not producible: {e})"));
                skipped += 1;
                continue;
            }
            (Outcome::SetupRefused(e), _) => {
                observed.push(format!("{situation:?} x {op:?} -> setup refused: {e}"));
                mismatches.push(format!(
                    "{situation:?} x {op:?}: expected {expect:?}, but producing the situation failed: {e}"
                ));
                continue;
            }
            (Outcome::Ran(..), Some(why)) => {
                observed.push(format!("{situation:?} x {op:?} -> produced"));
                mismatches.push(format!(
                    "{situation:?} x {op:?}: the backend declares it not producible ({why}), yet its setup \
                     succeeded: update KmsBackend::cannot_produce and run the cell"
                ));
                continue;
            }
            (Outcome::Ran(opened, r), None) => (opened, r),
        };
        let got = if opened {
            label(&r)
        } else {
            format!("KMS open: {}", label(&r))
        };
        observed.push(format!("{situation:?} x {op:?} -> {got}"));
        if matches_expect(backend, expect, opened, &r) {
            passed += 1;
        } else {
            mismatches.push(format!("{situation:?} x {op:?}: expected {expect:?}, got {got}"));
        }
    }
    eprintln!(
        "key-state matrix on {} ({:?}): {passed} passed, {skipped} skipped as not producible, {} differ, of {}:\n  {}",
        backend.name(),
        started.elapsed(),
        mismatches.len(),
        MATRIX.len(),
        observed.join("\n  ")
    );
    assert!(
        mismatches.is_empty(),
        "{}: {} of {} cells differ:\n  {}",
        backend.name(),
        mismatches.len(),
        MATRIX.len(),
        mismatches.join("\n  ")
    );
}

fn backend(name: &str) -> Box<dyn KmsBackend> {
    backends()
        .into_iter()
        .find(|b| b.name() == name)
        .unwrap_or_else(|| panic!("no backend {name}"))
}

#[test]
fn key_state_matrix_local() {
    run_matrix(&*backend("local"));
}

#[cfg(feature = "pkcs11")]
#[test]
fn key_state_matrix_pkcs11() {
    run_matrix(&*backend("pkcs11"));
}

#[cfg(feature = "aws-kms")]
#[test]
fn key_state_matrix_aws_kms() {
    run_matrix(&*backend("aws-kms"));
}

#[test]
fn matrix_covers_every_cell_once() {
    let situations = [
        Disabled,
        PendingDeletion,
        Deleted,
        DestroyedVersionUnused,
        DestroyedVersionNeeded,
        NoGrant,
        WrongProjectContext,
        RotatedOldVersion,
        WrongCredentials,
        TamperedKeyState,
    ];
    let ops = [Write, Read, Rewrap, Reencrypt, Migrate];
    for s in situations {
        for o in ops {
            let n = MATRIX.iter().filter(|(ms, mo, _)| *ms == s && *mo == o).count();
            assert_eq!(n, 1, "{s:?} x {o:?} appears {n} times");
        }
    }
    assert_eq!(MATRIX.len(), situations.len() * ops.len());
}
