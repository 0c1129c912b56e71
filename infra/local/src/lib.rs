//! The local stack: provisioning from `template.yaml` into the emulator, a runtime that
//! plays Lambda's part, and a fake AI provider.

pub mod faultproxy;
pub mod mcp;
pub mod provider;
pub mod provision;
pub mod runtime;
pub mod template;

/// An SDK config for the emulator at `endpoint` (static test credentials, one region).
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "shepherd-local",
        ))
        .load()
        .await
}
