//! Adapters: the ports implemented with AWS (`dynamodb/`, `sqs.rs`, `ssm.rs`, `s3.rs`), with HTTP to
//! providers (`providers/`), and in memory for fast tests of the engine (`memory.rs`).
//! No DynamoDB, SQS, SSM or S3 call lives outside this folder.

pub mod dynamodb;
pub mod memory;
pub mod providers;
pub mod s3;
pub mod sqs;
pub mod ssm;
pub mod webhook_http;

pub use s3::S3Artifacts;
pub use sqs::SqsQueue;
pub use ssm::{CachedParams, SsmParams};

/// An SDK error as one line, with the service's code and message when there is one.
pub fn sdk_error<E, R>(err: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> String
where
    E: std::error::Error + aws_smithy_types::error::metadata::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match err {
        SdkError::ServiceError(e) => {
            let e = e.err();
            // AWS's request id, which a support case (or CloudTrail) needs; the SDK keeps it
            // in the error's metadata.
            let id = e
                .meta()
                .extra("aws_request_id")
                .map(|id| format!(" (AWS request id {id})"))
                .unwrap_or_default();
            format!(
                "{}: {}{id}",
                e.code().unwrap_or("ServiceError"),
                e.message().unwrap_or("no message")
            )
        }
        other => format!(
            "{other}: {}",
            std::error::Error::source(other)
                .map(|s| s.to_string())
                .unwrap_or_default()
        ),
    }
}
