//! `shepherd-local`: the local stack's runtime. Provisions the template into the emulator,
//! serves the fake provider, and runs every function's event source until stopped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use shepherd_local::provider::{Latency, ProviderServer};
use shepherd_local::provision::provision;
use shepherd_local::runtime::{Clients, LocalRuntime};

#[derive(Parser)]
#[command(
    name = "shepherd-local",
    about = "Run Shepherd's local stack against an AWS emulator"
)]
struct Cli {
    /// The emulator's endpoint.
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL",
        default_value = "http://127.0.0.1:5005"
    )]
    endpoint: String,
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    #[arg(long, env = "SHEPHERD_STACK", default_value = "shepherd-local")]
    stack: String,
    /// Template parameter overrides, as for `sam deploy --parameter-overrides`.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision, serve the fake provider, and run the functions until Ctrl-C / SIGTERM.
    Up {
        #[arg(long, default_value = "127.0.0.1:4010")]
        provider: SocketAddr,
        /// Where the HTTP API listens.
        #[arg(long, default_value = "127.0.0.1:8787")]
        api: SocketAddr,
        /// Where the local publishing platform (an MCP server) listens; publish calls it.
        #[arg(long, default_value = "127.0.0.1:4020")]
        mcp: SocketAddr,
        /// Where the coding pipeline's source-control host (GitHub's API, repository
        /// acme/widgets) listens; pull_request calls it.
        #[arg(long, default_value = "127.0.0.1:4030")]
        scm: SocketAddr,
        /// Where the coding pipeline's agent runner listens; implement calls it.
        #[arg(long, default_value = "127.0.0.1:4040")]
        agent: SocketAddr,
        /// Bearer tokens for the local API (API Gateway's authorizer's part). Created with
        /// viewer, operator and admin tokens for the sample account `acme` if missing.
        #[arg(long, default_value = ".local/api-tokens.json")]
        api_tokens: PathBuf,
        /// How long the fake provider takes per endpoint, PATH=MEDIAN_MS:TAIL_MS (log-normal,
        /// the tail the 99th percentile), e.g. `images=8000:60000`; repeatable.
        #[arg(long, value_name = "PATH=MEDIAN_MS:TAIL_MS")]
        latency: Vec<Latency>,
        /// How long the agent runner's jobs take, `jobs=MEDIAN_MS:TAIL_MS`: they then run
        /// outside their request and call back (none: it answers at once).
        #[arg(long, value_name = "jobs=MEDIAN_MS:TAIL_MS")]
        job_latency: Option<Latency>,
    },
    /// Create the template's resources and print them.
    Provision,
    /// Print a function's environment (as the template sets it) for `cargo lambda watch --env-file`.
    Env {
        /// The function's logical id in template.yaml.
        #[arg(long, default_value = "BriefFunction")]
        function: String,
    },
    /// Write the template's generated region (every phase's queue, DLQ, function, policy
    /// and alarms; the definitions the CLI reads) and each phase's sample event from the
    /// stack's pipelines (pipelines/stack), and the HTTP API's docs/openapi.json. With
    /// --check, change nothing and fail if a file differs (CI runs this).
    Template {
        #[arg(long)]
        check: bool,
    },
    /// Serve only the fake provider.
    Provider {
        #[arg(long, default_value = "127.0.0.1:4010")]
        listen: SocketAddr,
        /// As for `up`.
        #[arg(long, value_name = "PATH=MEDIAN_MS:TAIL_MS")]
        latency: Vec<Latency>,
    },
}

fn overrides(params: &[String]) -> Result<HashMap<String, String>> {
    params
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--param {p:?}: expected KEY=VALUE"),
        })
        .collect()
}

async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Writes the local API's token file unless it exists (local tokens only: the deployed API
/// takes verified JWTs), readable by its owner only; an existing file others can read is
/// reported.
fn ensure_tokens(path: &std::path::Path) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "WARNING: {} is readable by other users (mode {:o}); run chmod 600 on it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tokens = serde_json::json!({"tokens": {
        "local-viewer": {"account": "acme", "role": "viewer", "name": "local-viewer"},
        "local-operator": {"account": "acme", "role": "operator", "name": "local-operator"},
        "local-admin": {"account": "acme", "role": "admin", "name": "local-admin"},
        "local-stack-operator": {"stack": true, "role": "admin", "name": "local-stack-operator"},
    }});
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(serde_json::to_string_pretty(&tokens)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Local servers are for this machine: an address beyond loopback is said loudly.
fn warn_if_exposed(what: &str, addr: &SocketAddr) {
    if !addr.ip().is_loopback() {
        eprintln!(
            "WARNING: the {what} listens on {addr}, beyond this machine's loopback: anyone who \
             can reach it can use it (local tokens, no TLS). Use 127.0.0.1 unless you mean it."
        );
    }
}

/// `shepherd-local template [--check]`: no emulator, no network.
fn template(template: &std::path::Path, check: bool) -> Result<()> {
    use shepherd_local::generate;
    let root = template
        .canonicalize()
        .with_context(|| format!("cannot find {}", template.display()))?
        .parent()
        .map(std::path::Path::to_path_buf)
        .context("the template has no folder")?;
    let stack = shepherd_stack::stack();
    let pipelines = stack.pipelines();
    let mut files = generate::files(&root, pipelines)?;
    // The HTTP API's OpenAPI description, generated from its routes (docs/openapi.json).
    files.push((root.join("docs/openapi.json"), shepherd_api::openapi_json()));
    let stale = generate::stale(&files);
    if check {
        if stale.is_empty() {
            println!(
                "template.yaml's generated region, the sample events and docs/openapi.json are current"
            );
            return Ok(());
        }
        for p in &stale {
            eprintln!("stale: {}", p.display());
        }
        if let Some((was, now)) = std::fs::read_to_string(&files[0].0)
            .ok()
            .and_then(|text| generate::check(&text, pipelines).ok().flatten())
        {
            eprintln!("first difference in template.yaml:\n  is:        {was}\n  should be: {now}");
        }
        bail!(
            "generated files differ from the stack's pipelines: run `cargo run -p shepherd-local -- template` and commit the result"
        );
    }
    for (path, text) in &files {
        if stale.contains(path) {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        println!("nothing to do: the generated files are current");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    shepherd::observability::init();
    let cli = Cli::parse();
    if let Command::Template { check } = cli.command {
        return template(&cli.template, check);
    }
    let mut params = overrides(&cli.params)?;
    let sdk = shepherd_local::sdk_config(&cli.endpoint).await;
    match cli.command {
        Command::Provision => {
            let stack = provision(&sdk, &cli.template, &cli.stack, &params).await?;
            let mut refs: Vec<_> = stack
                .context
                .refs
                .iter()
                .filter(|(k, _)| !k.starts_with("AWS::"))
                .collect();
            refs.sort();
            for (k, v) in refs {
                println!("{k:<32} {v}");
            }
        }
        Command::Env { function } => {
            params
                .entry("ProviderBaseUrl".into())
                .or_insert_with(|| "http://127.0.0.1:4010/v1".into());
            let stack = provision(&sdk, &cli.template, &cli.stack, &params).await?;
            let f = stack
                .functions
                .iter()
                .find(|f| f.logical_id == function)
                .with_context(|| format!("template.yaml has no function {function}"))?;
            let mut env: Vec<_> = f.env.iter().collect();
            env.sort();
            // Quoted: values hold '=' and ','.
            for (k, v) in env {
                println!("{k}=\"{v}\"");
            }
            // The function's own role, as Lambda would give it (temporary credentials, an hour).
            use aws_credential_types::provider::ProvideCredentials;
            let role = shepherd_local::role_sdk_config(&sdk, &f.role_arn).await;
            let creds = role
                .credentials_provider()
                .context("no credentials provider")?
                .provide_credentials()
                .await
                .with_context(|| format!("assuming {}", f.role_arn))?;
            println!("AWS_ENDPOINT_URL=\"{}\"", cli.endpoint);
            println!("AWS_REGION=\"us-east-1\"");
            println!("AWS_ACCESS_KEY_ID=\"{}\"", creds.access_key_id());
            println!("AWS_SECRET_ACCESS_KEY=\"{}\"", creds.secret_access_key());
            println!(
                "AWS_SESSION_TOKEN=\"{}\"",
                creds.session_token().unwrap_or_default()
            );
        }
        Command::Template { .. } => unreachable!("handled above: no emulator needed"),
        Command::Provider { listen, latency } => {
            warn_if_exposed("fake provider", &listen);
            let p = ProviderServer::start(listen, "local-provider-key")
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            latency.into_iter().for_each(|l| p.add_latency(l));
            println!("fake provider on {}", p.base_url());
            stopped().await;
            p.stop().await;
        }
        Command::Up {
            provider,
            api,
            mcp,
            scm,
            agent,
            api_tokens,
            latency,
            job_latency,
        } => {
            warn_if_exposed("HTTP API", &api);
            warn_if_exposed("fake provider", &provider);
            warn_if_exposed("MCP server", &mcp);
            warn_if_exposed("source-control host", &scm);
            warn_if_exposed("agent runner", &agent);
            let scm = shepherd_local::scm::ScmServer::start(scm)
                .await
                .with_context(|| format!("the source-control host cannot listen on {scm}"))?;
            params
                .entry("ScmBaseUrl".into())
                .or_insert_with(|| scm.base_url());
            let agent = shepherd_local::agent::AgentServer::start(agent)
                .await
                .with_context(|| format!("the agent runner cannot listen on {agent}"))?;
            params
                .entry("AgentRunnerUrl".into())
                .or_insert_with(|| agent.url());
            if let Some(l) = job_latency {
                agent.latency(l);
            }
            ensure_tokens(&api_tokens)?;
            // Local receivers listen on this machine's loopback.
            params
                .entry("AllowLoopbackWebhooks".into())
                .or_insert_with(|| "true".into());
            let mcp = shepherd_local::mcp::McpServer::start(mcp)
                .await
                .with_context(|| format!("the MCP server cannot listen on {mcp}"))?;
            params
                .entry("PublisherMcpUrl".into())
                .or_insert_with(|| mcp.url());
            let server = ProviderServer::start(provider, "local-provider-key")
                .await
                .with_context(|| format!("fake provider cannot listen on {provider}"))?;
            latency.into_iter().for_each(|l| server.add_latency(l));
            params
                .entry("ProviderBaseUrl".into())
                .or_insert_with(|| server.base_url());
            // The demo moderates its images (off by default in a deployed stack).
            params
                .entry("ModerationBaseUrl".into())
                .or_insert_with(|| server.base_url());
            let stack = provision(&sdk, &cli.template, &cli.stack, &params)
                .await
                .with_context(|| format!("provisioning {} into {}", cli.stack, cli.endpoint))?;
            let mut clients = Clients::new(&sdk);
            clients.api = Some((api, api_tokens.clone()));
            let runtime = LocalRuntime::start(&stack, &clients).await?;
            println!(
                "local stack {:?} up: {} functions, provider {}, MCP {}, source control {}, agent \
                 runner {}, API http://{} (tokens: {})",
                cli.stack,
                stack.functions.len(),
                server.base_url(),
                mcp.url(),
                scm.base_url(),
                agent.url(),
                runtime.api_addr.unwrap_or(api),
                api_tokens.display()
            );
            stopped().await;
            println!("stopping");
            runtime.stop().await;
            server.stop().await;
        }
    }
    Ok(())
}
