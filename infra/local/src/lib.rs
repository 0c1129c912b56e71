//! The local stack: provisioning from `template.yaml` into the emulator, a runtime that
//! plays Lambda's part, and fakes of what phases call: an AI provider, an MCP server, a
//! source-control host with GitHub's API and an agent runner.

pub mod agent;
pub mod faultproxy;
pub mod generate;
pub mod mcp;
pub mod provider;
pub mod provision;
pub mod runtime;
pub mod scm;
pub mod template;

/// A local fake's HTTP server: serves `app` until [`Server::stop`] or until dropped.
pub(crate) struct Server {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub(crate) fn spawn(listener: tokio::net::TcpListener, app: axum::Router) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops accepting, and waits for the requests in flight.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An SDK config for the emulator at `endpoint` as the local admin: the keys
/// `infra/lib.sh` exported (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, from
/// `.local/admin.env`). IAM is enforced, so unknown keys are refused.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    let key = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: source .local/admin.env (infra/lib.sh's emulator_up writes it)"
            )
        })
    };
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            key("AWS_ACCESS_KEY_ID"),
            key("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "shepherd-local-admin",
        ))
        .load()
        .await
}

/// An SDK config that acts as the IAM role `role_arn`, assumed by the admin of `admin`
/// (and refreshed before it expires): how the local runtime runs a function, as Lambda
/// runs it with its execution role.
pub async fn role_sdk_config(
    admin: &aws_config::SdkConfig,
    role_arn: &str,
) -> aws_config::SdkConfig {
    let session = role_arn.rsplit('/').next().unwrap_or("function");
    let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
        .session_name(session.chars().take(64).collect::<String>())
        .configure(admin)
        .build()
        .await;
    admin
        .to_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build()
}
