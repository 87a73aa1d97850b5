//! The options of a [`LocalKms`](super::LocalKms).

use super::*;

/// Options of a [`LocalKms`].
#[derive(Clone, Debug)]
pub struct LocalKmsOptions {
    pub(super) name: String,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) argon2: Argon2Params,
    pub(super) max_argon2: Argon2Params,
    pub(super) version_destroy_delay: Duration,
}

impl Default for LocalKmsOptions {
    fn default() -> Self {
        LocalKmsOptions {
            name: "local".into(),
            clock: Arc::new(SystemClock),
            argon2: Argon2Params::DEFAULT,
            max_argon2: Argon2Params::DEFAULT_MAX,
            version_destroy_delay: MAX_KEK_LIFETIME,
        }
    }
}

impl LocalKmsOptions {
    /// The defaults: name `local`, the system clock, [`Argon2Params::DEFAULT`] for new root secrets,
    /// [`Argon2Params::DEFAULT_MAX`] as the most an opened keystore may ask for, and a version destroy
    /// delay of [`MAX_KEK_LIFETIME`] (24 hours).
    pub fn new() -> Self {
        Self::default()
    }

    /// The KMS name recorded in wrapped keys (1 to 64 ASCII letters, digits, `_`, `-`, `.`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The clock for deletion windows and audit times.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Argon2id parameters used when a passphrase root secret is set (create, change of root secret);
    /// opening uses the parameters recorded in the keystore.
    pub fn with_argon2(mut self, params: Argon2Params) -> Self {
        self.argon2 = params;
        self
    }

    /// The most Argon2id cost a keystore header may ask for; above it, opening fails with
    /// [`Error::KdfCostTooHigh`] before anything is allocated.
    pub fn with_max_argon2(mut self, max: Argon2Params) -> Self {
        self.max_argon2 = max;
        self
    }

    /// How long after a rotation the superseded version stays undestroyable
    /// ([`Error::VersionDestroyTooEarly`]). It must be at least the longest KEK cache lifetime of
    /// every process that writes with this keystore's keys (a cached KEK keeps wrapping new data keys
    /// under the old version until it expires); the default is the longest lifetime allowed,
    /// [`MAX_KEK_LIFETIME`].
    pub fn with_version_destroy_delay(mut self, delay: Duration) -> Self {
        self.version_destroy_delay = delay;
        self
    }

    /// The version destroy delay.
    pub fn version_destroy_delay(&self) -> Duration {
        self.version_destroy_delay
    }

    /// The most Argon2id cost an opened keystore may ask for.
    pub fn max_argon2(&self) -> Argon2Params {
        self.max_argon2
    }

    /// The KMS name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The Argon2id parameters.
    pub fn argon2(&self) -> Argon2Params {
        self.argon2
    }
}
