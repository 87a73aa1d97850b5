//! SDK errors to colvault's typed errors.
//!
//! The error codes are those of the AWS KMS API reference ("Errors" of each action, and "Common
//! Errors"). A message from the service never carries key material; a plaintext never reaches an
//! error (the SDK redacts sensitive fields in `Debug`, and colvault never formats them).

use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::NAME;
use crate::error::Error;

/// What was being done, for the error.
#[derive(Clone, Copy, Debug)]
pub(super) struct Call<'a> {
    /// The API action (`GenerateDataKey` ...).
    pub op: &'static str,
    /// The key id, when there is one.
    pub key: &'a str,
    /// The colvault principal, for data-plane calls.
    pub principal: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub(super) fn admin(op: &'static str, key: &'a str) -> Self {
        Call {
            op,
            key,
            principal: None,
        }
    }

    pub(super) fn data(op: &'static str, key: &'a str, principal: &'a str) -> Self {
        Call {
            op,
            key,
            principal: Some(principal),
        }
    }

    fn service(&self, detail: String, retriable: bool) -> Error {
        Error::KmsService {
            kms: NAME.into(),
            operation: if self.key.is_empty() {
                self.op.to_string()
            } else {
                format!("{} on key {}", self.op, self.key)
            },
            detail,
            retriable,
        }
    }
}

/// The typed error of an SDK failure of `call`.
pub(super) fn map<E>(err: SdkError<E, HttpResponse>, call: Call<'_>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("").to_string();
            let message = se.err().message().unwrap_or("").to_string();
            // HTTP 403 is a refusal of this identity whatever the body says (an IAM policy or a
            // key policy that does not allow the call; some services and emulators answer it
            // without a JSON error code).
            if code.is_empty() && se.raw().status().as_u16() == 403 {
                return from_code("AccessDeniedException", &message, call);
            }
            from_code(&code, &message, call)
        }
        SdkError::TimeoutError(_) => call.service("the request timed out".into(), true),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => call.service(
            format!(
                "the service could not be reached or answered badly: {}",
                DisplayErrorContext(&err)
            ),
            true,
        ),
        _ => call.service(format!("{}", DisplayErrorContext(&err)), false),
    }
}

/// The typed error of an error `code` the service returned.
pub(super) fn from_code(code: &str, message: &str, call: Call<'_>) -> Error {
    let key = call.key.to_string();
    match code {
        "NotFoundException" => Error::UnknownKey { key },
        "DisabledException" => Error::KeyDisabled { key },
        "KMSInvalidStateException" => Error::InvalidKeyState(format!("{} on key {key}: {message}", call.op)),
        "AccessDeniedException" => Error::AccessDenied {
            principal: call.principal.unwrap_or("this AWS identity").to_string(),
            key,
        },
        "InvalidCiphertextException" => Error::integrity(format!(
            "wrapped key (key {key}: wrong encryption context, or altered; {} said InvalidCiphertextException)",
            call.op
        )),
        "IncorrectKeyException" => Error::integrity(format!(
            "wrapped key (it names key {key} but was made under another key; {} said IncorrectKeyException)",
            call.op
        )),
        "ThrottlingException"
        | "LimitExceededException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ServiceUnavailableException"
        | "InternalFailure" => call.service(format!("{code}: {message}"), true),
        "ValidationException"
        | "InvalidArnException"
        | "InvalidAliasNameException"
        | "InvalidGrantIdException"
        | "InvalidGrantTokenException"
        | "InvalidKeyUsageException"
        | "InvalidMarkerException"
        | "MalformedPolicyDocumentException"
        | "TagException"
        | "UnsupportedOperationException"
        | "AlreadyExistsException" => {
            Error::InvalidArgument(format!("{} on key {key} refused: {code}: {message}", call.op))
        }
        _ => call.service(format!("{code}: {message}"), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_typed_errors() {
        let c = Call::data("Decrypt", "k1", "p1");
        assert!(matches!(from_code("NotFoundException", "", c), Error::UnknownKey { key } if key == "k1"));
        assert!(matches!(
            from_code("DisabledException", "", c),
            Error::KeyDisabled { .. }
        ));
        assert!(matches!(
            from_code("KMSInvalidStateException", "pending", c),
            Error::InvalidKeyState(_)
        ));
        assert!(matches!(
            from_code("AccessDeniedException", "", c),
            Error::AccessDenied { principal, .. } if principal == "p1"
        ));
        assert!(matches!(
            from_code("InvalidCiphertextException", "", c),
            Error::Integrity { .. }
        ));
        assert!(matches!(
            from_code("IncorrectKeyException", "", c),
            Error::Integrity { .. }
        ));
        assert!(matches!(
            from_code("ThrottlingException", "slow down", c),
            Error::KmsService { retriable: true, .. }
        ));
        assert!(matches!(
            from_code("ValidationException", "", c),
            Error::InvalidArgument(_)
        ));
        assert!(matches!(
            from_code("SomethingNew", "", c),
            Error::KmsService { retriable: false, .. }
        ));
    }
}
