//! The SDK client of [`super::AwsKms`] and the runtime that drives it.
//!
//! # Why a runtime of its own
//!
//! colvault's API is synchronous; the AWS SDK is async. `AwsKms` owns a small multi-thread tokio
//! runtime (one worker thread, `colvault-aws-kms`). Each call is *spawned* on that runtime and the
//! caller waits for the task's result with `futures::executor::block_on`, which needs no runtime
//! context of its own. So it works the same from a plain thread and from inside another tokio
//! runtime: it never calls `Runtime::block_on` (which panics inside a runtime) and never needs
//! `block_in_place` (which panics on a current-thread runtime). Inside an async task it blocks that
//! worker like any other blocking call of the library; async callers should call it from
//! `spawn_blocking`. The runtime is shut down in the background on drop, which is also allowed
//! inside another runtime (dropping a `Runtime` there would panic).
//!
//! Every HTTP attempt is counted ([`Service::requests`]), retries included, so tests and the
//! benchmark report real round trips, not trait calls.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kms::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
use aws_sdk_kms::error::BoxError;

use super::options::AwsKmsOptions;
use crate::error::{Error, Result};

/// Counts HTTP attempts (an SDK interceptor, called once per transmission).
#[derive(Debug)]
struct Counter(Arc<AtomicU64>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "colvault-request-counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The SDK client, its runtime and the request counter.
pub(super) struct Service {
    runtime: Option<tokio::runtime::Runtime>,
    client: aws_sdk_kms::Client,
    requests: Arc<AtomicU64>,
}

impl Service {
    /// A client for `opts` (checked), with static credentials only.
    pub(super) fn new(opts: &AwsKmsOptions) -> Result<Self> {
        opts.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("colvault-aws-kms")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the AWS KMS client's runtime", e))?;
        let requests = Arc::new(AtomicU64::new(0));
        // Static credentials: the SDK keeps the secret in a zeroizing buffer. No provider chain.
        let credentials = Credentials::new(
            opts.access_key_id.clone(),
            opts.secret_access_key.as_str(),
            opts.session_token.as_ref().map(|t| t.to_string()),
            None,
            "colvault-static",
        );
        let mut builder = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(opts.region.clone()))
            .credentials_provider(credentials)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(120))
                    .build(),
            )
            .interceptor(Counter(requests.clone()));
        if let Some(endpoint) = &opts.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        let client = {
            let _in_runtime = runtime.enter();
            aws_sdk_kms::Client::from_conf(builder.build())
        };
        Ok(Service {
            runtime: Some(runtime),
            client,
            requests,
        })
    }

    /// The client, to build a request with.
    pub(super) fn client(&self) -> aws_sdk_kms::Client {
        self.client.clone()
    }

    /// How many HTTP requests were sent so far (retries count).
    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Runs `fut` on this client's runtime and waits for it (see the [module documentation](self)).
    pub(super) fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or(Error::Crypto("the AWS KMS client's runtime is shut down"))?;
        let task = runtime.spawn(fut);
        futures::executor::block_on(task).map_err(|e| Error::KmsService {
            kms: super::NAME.into(),
            operation: "a request".into(),
            detail: if e.is_panic() {
                "the request task panicked".into()
            } else {
                "the request task was cancelled".into()
            },
            retriable: false,
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
