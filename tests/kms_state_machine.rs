//! The key state machine of LocalKms against a simple model: random sequences of administrative
//! actions, clock moves and key uses, each outcome (success or the exact error kind) and the key's
//! metadata checked after every step; plus the transitions named in the issue, spelled out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use colvault::clock::{Clock, ManualClock};
use colvault::crypto::SecretKey;
use colvault::kms::{
    CreateKeyRequest, EncryptionContext, KeyId, KeyState, KeyVersionState, Kms, KmsAdmin, LocalKms, LocalKmsOptions,
    Principal, RootSecret, WrappedKey,
};
use colvault::Error;
use proptest::prelude::*;

const DAY: u64 = 86_400;

fn kind(e: &Error) -> &'static str {
    match e {
        Error::KeyDisabled { .. } => "KeyDisabled",
        Error::KeyPendingDeletion { .. } => "KeyPendingDeletion",
        Error::KeyDeleted { .. } => "KeyDeleted",
        Error::AccessDenied { .. } => "AccessDenied",
        Error::UnknownKey { .. } => "UnknownKey",
        Error::VersionDestroyed { .. } => "VersionDestroyed",
        Error::VersionDestroyTooEarly { .. } => "VersionDestroyTooEarly",
        Error::InvalidKeyState(_) => "InvalidKeyState",
        Error::InvalidArgument(_) => "InvalidArgument",
        Error::Integrity { .. } => "Integrity",
        _ => "other",
    }
}

fn outcome<T>(r: &Result<T, Error>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => kind(e),
    }
}

#[derive(Clone, Debug)]
enum Op {
    Enable,
    Disable,
    Schedule(u32),
    Cancel,
    Delete,
    Advance(u64),
    Rotate,
    Destroy(u32),
    Grant(usize),
    Revoke(usize),
    Generate(usize),
    Decrypt(usize, usize),
    Rewrap(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Enable),
        2 => Just(Op::Disable),
        2 => (5u32..=32).prop_map(Op::Schedule),
        2 => Just(Op::Cancel),
        2 => Just(Op::Delete),
        2 => (0u64..=40 * DAY).prop_map(Op::Advance),
        2 => Just(Op::Rotate),
        2 => (0u32..=4).prop_map(Op::Destroy),
        1 => (0usize..2).prop_map(Op::Grant),
        1 => (0usize..2).prop_map(Op::Revoke),
        3 => (0usize..2).prop_map(Op::Generate),
        3 => (0usize..2, any::<usize>()).prop_map(|(p, i)| Op::Decrypt(p, i)),
        2 => (0usize..2, any::<usize>()).prop_map(|(p, i)| Op::Rewrap(p, i)),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MState {
    Enabled,
    Disabled,
    Pending { until: SystemTime, resume_enabled: bool },
    Deleted,
}

/// The model: what the KMS should do, written as plainly as possible.
struct Model {
    state: MState,
    /// `destroyed[v - 1]`.
    destroyed: Vec<bool>,
    /// `created[v - 1]`: version v is superseded when version v + 1 is created, and destroyable a
    /// day (the longest KEK lifetime, the default delay) after that.
    created: Vec<SystemTime>,
    primary: u32,
    grants: BTreeSet<usize>,
}

impl Model {
    fn administrable(&self) -> bool {
        matches!(self.state, MState::Enabled | MState::Disabled)
    }

    /// The data-plane outcome for principal `p`: grant first, then state.
    fn usable(&self, p: usize) -> &'static str {
        if !self.grants.contains(&p) {
            return "AccessDenied";
        }
        match self.state {
            MState::Enabled => "ok",
            MState::Disabled => "KeyDisabled",
            MState::Pending { .. } => "KeyPendingDeletion",
            MState::Deleted => "KeyDeleted",
        }
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    kms: LocalKms,
    key: KeyId,
    principals: [Principal; 2],
    /// Wrapped keys made so far, with the data key they hold.
    wrapped: Vec<(WrappedKey, SecretKey)>,
    model: Model,
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("project", "prj-a").with("table", "t1")
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let kms = LocalKms::create(
            dir.path().join("ks"),
            RootSecret::KeyFile(SecretKey::generate().unwrap()),
            LocalKmsOptions::new().with_clock(clock.clone()),
        )
        .unwrap();
        let principals = [Principal::new("prj-a").unwrap(), Principal::new("prj-b").unwrap()];
        let key = kms
            .create_key(CreateKeyRequest::project_default(principals[0].clone()))
            .unwrap()
            .id;
        Harness {
            _dir: dir,
            clock,
            kms,
            key,
            principals,
            wrapped: Vec::new(),
            model: Model {
                state: MState::Enabled,
                destroyed: vec![false],
                created: vec![SystemTime::UNIX_EPOCH], // version 1: never read
                primary: 1,
                grants: [0].into(),
            },
        }
    }

    /// Applies `op` to the KMS and the model; returns (actual, expected) outcomes.
    fn step(&mut self, op: &Op) -> (&'static str, &'static str) {
        let m = &mut self.model;
        let now = self.clock.now();
        let k = &self.key;
        match *op {
            Op::Enable => {
                let expected = if m.administrable() { "ok" } else { "InvalidKeyState" };
                if expected == "ok" {
                    m.state = MState::Enabled;
                }
                (outcome(&self.kms.enable(k)), expected)
            }
            Op::Disable => {
                let expected = if m.administrable() { "ok" } else { "InvalidKeyState" };
                if expected == "ok" {
                    m.state = MState::Disabled;
                }
                (outcome(&self.kms.disable(k)), expected)
            }
            Op::Schedule(days) => {
                let expected = if !(7..=30).contains(&days) {
                    "InvalidArgument"
                } else if m.administrable() {
                    m.state = MState::Pending {
                        until: now + Duration::from_secs(u64::from(days) * DAY),
                        resume_enabled: m.state == MState::Enabled,
                    };
                    "ok"
                } else {
                    "InvalidKeyState"
                };
                (outcome(&self.kms.schedule_deletion(k, days)), expected)
            }
            Op::Cancel => {
                let expected = match m.state {
                    MState::Pending { resume_enabled, .. } => {
                        m.state = if resume_enabled {
                            MState::Enabled
                        } else {
                            MState::Disabled
                        };
                        "ok"
                    }
                    _ => "InvalidKeyState",
                };
                (outcome(&self.kms.cancel_deletion(k)), expected)
            }
            Op::Delete => {
                let expected = match m.state {
                    MState::Pending { until, .. } if now >= until => {
                        m.state = MState::Deleted;
                        m.destroyed.iter_mut().for_each(|d| *d = true);
                        "ok"
                    }
                    _ => "InvalidKeyState",
                };
                (outcome(&self.kms.delete_key(k)), expected)
            }
            Op::Advance(secs) => {
                self.clock.advance(Duration::from_secs(secs));
                ("ok", "ok")
            }
            Op::Rotate => {
                let expected = if m.state == MState::Enabled {
                    m.destroyed.push(false);
                    m.created.push(now);
                    m.primary = m.destroyed.len() as u32;
                    "ok"
                } else {
                    "InvalidKeyState"
                };
                (outcome(&self.kms.rotate(k)), expected)
            }
            Op::Destroy(v) => {
                let expected = if !m.administrable() {
                    "InvalidKeyState"
                } else if v == 0 || v as usize > m.destroyed.len() {
                    "InvalidArgument"
                } else if v == m.primary {
                    "InvalidKeyState"
                } else if now < m.created[v as usize] + Duration::from_secs(DAY) {
                    "VersionDestroyTooEarly"
                } else {
                    m.destroyed[v as usize - 1] = true;
                    "ok"
                };
                (outcome(&self.kms.destroy_version(k, v)), expected)
            }
            Op::Grant(p) => {
                let expected = if m.administrable() {
                    m.grants.insert(p);
                    "ok"
                } else {
                    "InvalidKeyState"
                };
                (outcome(&self.kms.grant(k, &self.principals[p])), expected)
            }
            Op::Revoke(p) => {
                let expected = if m.administrable() {
                    m.grants.remove(&p);
                    "ok"
                } else {
                    "InvalidKeyState"
                };
                (outcome(&self.kms.revoke(k, &self.principals[p])), expected)
            }
            Op::Generate(p) => {
                let expected = m.usable(p);
                let r = self.kms.generate_data_key(&self.principals[p], k, &ctx());
                let actual = outcome(&r);
                if let Ok((dek, w)) = r {
                    assert_eq!(w.version(), m.primary, "generate uses the primary version");
                    self.wrapped.push((w, dek));
                }
                (actual, expected)
            }
            Op::Decrypt(p, i) | Op::Rewrap(p, i) => {
                if self.wrapped.is_empty() {
                    return ("ok", "ok");
                }
                let (w, dek) = self.wrapped[i % self.wrapped.len()].clone();
                let mut expected = m.usable(p);
                if expected == "ok" && m.destroyed[w.version() as usize - 1] {
                    expected = "VersionDestroyed";
                }
                if let Op::Decrypt(..) = op {
                    let r = self.kms.decrypt_data_key(&self.principals[p], &w, &ctx());
                    if let Ok(got) = &r {
                        assert_eq!(got, &dek, "decrypt returns the generated key");
                    }
                    (outcome(&r), expected)
                } else {
                    let r = self.kms.rewrap(&self.principals[p], &w, &ctx());
                    let actual = outcome(&r);
                    if let Ok(nw) = r {
                        assert_eq!(nw.version(), m.primary, "rewrap moves to the primary version");
                        self.wrapped.push((nw, dek));
                    }
                    (actual, expected)
                }
            }
        }
    }

    fn check_metadata(&self) {
        let meta = self.kms.describe(&self.key).unwrap();
        let m = &self.model;
        let expected_state = match m.state {
            MState::Enabled => KeyState::Enabled,
            MState::Disabled => KeyState::Disabled,
            MState::Pending { until, .. } => KeyState::PendingDeletion { until },
            MState::Deleted => KeyState::Deleted,
        };
        assert_eq!(meta.state, expected_state);
        assert_eq!(meta.primary_version, m.primary);
        let versions: Vec<bool> = meta
            .versions
            .iter()
            .map(|v| v.state == KeyVersionState::Destroyed)
            .collect();
        assert_eq!(versions, m.destroyed);
        let grants: BTreeSet<usize> = meta
            .grants
            .iter()
            .map(|g| self.principals.iter().position(|p| p == g).unwrap())
            .collect();
        assert_eq!(grants, m.grants);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn key_states_follow_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut h = Harness::new();
        for (i, op) in ops.iter().enumerate() {
            let (actual, expected) = h.step(op);
            prop_assert_eq!(actual, expected, "step {} ({:?})", i, op);
            h.check_metadata();
        }
    }
}

/// The transitions the issue names, one by one.
#[test]
fn named_transitions() {
    let mut h = Harness::new();
    let steps: &[(Op, &str)] = &[
        (Op::Schedule(6), "InvalidArgument"),
        (Op::Schedule(31), "InvalidArgument"),
        (Op::Delete, "InvalidKeyState"), // nothing scheduled
        (Op::Cancel, "InvalidKeyState"),
        (Op::Disable, "ok"),
        (Op::Schedule(7), "ok"),
        (Op::Enable, "InvalidKeyState"), // cancel first
        (Op::Rotate, "InvalidKeyState"),
        (Op::Generate(0), "KeyPendingDeletion"),
        (Op::Advance(7 * DAY - 1), "ok"),
        (Op::Delete, "InvalidKeyState"), // one second early
        (Op::Cancel, "ok"),              // back to Disabled, as before scheduling
        (Op::Generate(0), "KeyDisabled"),
        (Op::Enable, "ok"),
        (Op::Generate(0), "ok"),
        (Op::Generate(1), "AccessDenied"),
        (Op::Schedule(30), "ok"),
        (Op::Advance(30 * DAY), "ok"),
        (Op::Delete, "ok"),
        (Op::Decrypt(0, 0), "KeyDeleted"),
        (Op::Generate(0), "KeyDeleted"),
        (Op::Enable, "InvalidKeyState"),
        (Op::Disable, "InvalidKeyState"),
        (Op::Cancel, "InvalidKeyState"),
        (Op::Schedule(7), "InvalidKeyState"),
        (Op::Delete, "InvalidKeyState"),
        (Op::Rotate, "InvalidKeyState"),
        (Op::Destroy(1), "InvalidKeyState"),
        (Op::Grant(1), "InvalidKeyState"),
    ];
    for (i, (op, want)) in steps.iter().enumerate() {
        let (actual, expected) = h.step(op);
        assert_eq!(
            expected, *want,
            "the model disagrees with the issue at step {i} ({op:?})"
        );
        assert_eq!(actual, *want, "step {i} ({op:?})");
        h.check_metadata();
    }
    assert_eq!(h.kms.describe(&h.key).unwrap().state, KeyState::Deleted);
    // The state before scheduling is restored: Enabled as well as Disabled.
    let mut h = Harness::new();
    for (op, want) in [(Op::Schedule(10), "ok"), (Op::Cancel, "ok"), (Op::Generate(0), "ok")] {
        assert_eq!(h.step(&op).0, want);
    }
    assert_eq!(h.kms.describe(&h.key).unwrap().state, KeyState::Enabled);
}
