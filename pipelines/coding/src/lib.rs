//! The coding-agent job: `plan` (a model writes the plan; an operator approves it, always
//! in v2) -> `implement` (an agent runner turns the approved plan into a change set) ->
//! `pull_request` (the change set becomes the production's own new branch, commits and a
//! pull request on a GitHub-compatible host).
//!
//! A job reaches only what its account is allowed (`shepherd account <a> --repositories`):
//! v2's input marks `repository` and `base` `x-account-allows`, so a start and the engine
//! before each phase refuse another repository; `implement` and `pull_request` check again
//! themselves before any request leaves the stack (v1 jobs still running included).
//!
//! The pull request phase is written to be re-run: every request is a recorded call, and
//! what a lost answer leaves behind is recognised on the next try instead of made twice. Its
//! branch is always `<the account's prefix><production id>`: one that exists is used only
//! while it still points at the base commit this production branched from (our own creation
//! whose answer was lost); any other is `branch_not_owned`, and nothing is written to it. A
//! file already holding the content is left alone; a pull request that exists for the branch
//! (`422 A pull request already exists`) is looked up and reused, so a retry never opens a
//! second one.

use base64::Engine;
use serde::{Deserialize, Serialize};
use shepherd::prelude::*;

/// The pipeline as the stack registers it: its definitions and its phases' code.
pub fn spec() -> PipelineSpec {
    PipelineSpec::new()
        .definition("pipelines/coding/v1.json", include_str!("../v1.json"))
        .definition("pipelines/coding/v2.json", include_str!("../v2.json"))
        .phase(PlanPhase)
        .phase(Implement)
        .phase(PullRequest)
}

const CHAT_MODEL: &str = "gpt-4o-mini";
/// Files one change set may touch.
pub const MAX_CHANGES: usize = 50;

/// The coding pipeline's input (its schema fills in the defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// `owner/name` on the host.
    pub repository: String,
    /// What to change, in words.
    pub task: String,
    /// The pull request's title (default: the task's first line).
    #[serde(default)]
    pub title: Option<String>,
    /// The branch the pull request goes into (default: the repository's default branch).
    #[serde(default)]
    pub base: Option<String>,
    /// v1 only: a branch the job asked for. Honoured only when it is the production's own
    /// (`<prefix><production id>`); any other is `branch_not_owned`.
    #[serde(default)]
    pub branch: Option<String>,
}

impl Job {
    fn title(&self) -> String {
        self.title
            .clone()
            .unwrap_or_else(|| self.task.lines().next().unwrap_or_default().to_string())
    }
    fn owner(&self) -> &str {
        self.repository.split('/').next().unwrap_or_default()
    }
}

/// The plan an operator approves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodingPlan {
    pub summary: String,
    pub steps: Vec<String>,
    /// The files the plan expects to change.
    pub files: Vec<String>,
}

/// What the agent runner changed: whole files (created or replaced).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeSet {
    pub summary: String,
    pub changes: Vec<FileChange>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    pub content: String,
}

/// The pull request the job opened (or found open for its branch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequestOut {
    pub number: u64,
    pub url: String,
    pub branch: String,
    pub base: String,
    /// The pull request already existed (a re-run after a lost answer, or an earlier job).
    pub reused: bool,
    /// One commit per file changed; a file that already held the content has none.
    pub commits: Vec<String>,
}

impl PhaseOutput for CodingPlan {}
impl PhaseOutput for ChangeSet {}
impl PhaseOutput for PullRequestOut {}

/// A model writes the plan (approved by an operator before anything runs).
pub struct PlanPhase;

impl Phase for PlanPhase {
    const NAME: &'static str = "plan";
    type Output = CodingPlan;

    async fn run(&self, ctx: &PhaseContext) -> Result<Self::Output, StepError> {
        let job: Job = ctx.input_as()?;
        let req = ChatRequest {
            model: CHAT_MODEL.into(),
            messages: vec![
                ChatMessage::system(
                    "task=coding_plan. You plan a code change for a coding agent. Answer with \
                     JSON {\"summary\": string, \"steps\": [string], \"files\": [string]} \
                     (files: repository-relative paths)."
                        .to_string(),
                ),
                ChatMessage::user(format!(
                    "Repository: {}\nTask: {}{}",
                    job.repository,
                    job.task,
                    ctx.feedback_line()
                )),
            ],
            response_format: Some(serde_json::json!({"type": "json_object"})),
        };
        ctx.tools
            .chat_as("plan", &req, |p: &CodingPlan| {
                if p.steps.is_empty() || p.files.is_empty() {
                    return Err("a plan needs steps and files".into());
                }
                p.files.iter().try_for_each(|f| path_ok(f))
            })
            .await
    }
}

/// A file path as it goes into a URL: each segment percent-encoded (a space, `#` or `?`
/// in a file name is part of the name).
fn url_path(path: &str) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    const SEGMENT: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    path.split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// A repository-relative path that stays inside the repository.
fn path_ok(path: &str) -> Result<(), String> {
    let bad = path.is_empty()
        || path.len() > 400
        || path.starts_with('/')
        || path.contains('\\')
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        || path.split('/').next() == Some(".git")
        || path.chars().any(char::is_control);
    match bad {
        true => Err(format!("{path:?} is not a repository-relative file path")),
        false => Ok(()),
    }
}

/// The agent runner (the chain's `http` integration) turns the approved plan into a
/// change set: POST `{"task": "implement", repository, base, instructions, plan,
/// feedback}`, answered `{"summary", "changes": [{"path", "content"}]}` (docs/coding-agent.md).
pub struct Implement;

impl Phase for Implement {
    const NAME: &'static str = "implement";
    type Output = ChangeSet;

    async fn run(&self, ctx: &PhaseContext) -> Result<Self::Output, StepError> {
        let job: Job = ctx.input_as()?;
        ctx.allowed("repository", "repositories", &job.repository)
            .await?;
        let plan = ctx.output::<PlanPhase>()?;
        // What the job needs and nothing more: no token (the runner reads the repository
        // with its own credential, which its operator scopes per account).
        let body = serde_json::json!({
            "task": "implement",
            "account": ctx.production.account,
            "repository": job.repository,
            "base": job.base,
            "instructions": job.task,
            "plan": plan,
            "feedback": ctx.feedback,
        });
        // A job that may outlast any Lambda: the runner answers 202 and reports to its
        // callback (a runner that answers the change set at once, or 429 until done,
        // works too).
        let answer = ctx.tools.job("agent", &body).await?;
        let set: ChangeSet = serde_json::from_value(answer).map_err(|e| {
            StepError::permanent(
                ErrorCode::ProviderBadResponse,
                format!("the agent runner's answer is not a change set: {e}"),
            )
        })?;
        let invalid = |why: String| StepError::permanent("change_set_invalid", why);
        if set.changes.is_empty() {
            return Err(invalid("the agent runner changed no file".into()));
        }
        if set.changes.len() > MAX_CHANGES {
            return Err(invalid(format!(
                "the agent runner changed {} files; a change set may have {MAX_CHANGES}",
                set.changes.len()
            )));
        }
        for c in &set.changes {
            path_ok(&c.path).map_err(invalid)?;
        }
        Ok(set)
    }
}

/// Opens the pull request on the host (the chain's `scm` integration).
pub struct PullRequest;

/// A host answer the phase did not expect, as a permanent error naming the request.
fn unexpected(what: &str, a: &ScmAnswer) -> StepError {
    let errors: Vec<&str> = a.body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().or(e["code"].as_str()))
        .collect();
    let mut e = StepError::permanent(
        ErrorCode::ScmRejected,
        format!(
            "{what}: {} {}{}",
            a.status,
            a.message(),
            match errors.is_empty() {
                true => String::new(),
                false => format!(" ({})", errors.join("; ")),
            }
        ),
    );
    e.provider_status = Some(a.status);
    e
}

fn says(a: &ScmAnswer, text: &str) -> bool {
    a.message().contains(text)
        || a.body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains(text)))
}

impl Phase for PullRequest {
    const NAME: &'static str = "pull_request";
    type Output = PullRequestOut;

    async fn run(&self, ctx: &PhaseContext) -> Result<Self::Output, StepError> {
        let job: Job = ctx.input_as()?;
        let plan = ctx.output::<PlanPhase>()?;
        let set = ctx.output::<Implement>()?;
        // Before any request to the host: the account's repository, the production's branch.
        ctx.allowed("repository", "repositories", &job.repository)
            .await?;
        let access = ctx.access().await?;
        let branch = format!("{}{}", access.branch_prefix(), ctx.production.id);
        if let Some(named) = job.branch.as_ref().filter(|b| **b != branch) {
            return Err(StepError::permanent(
                ErrorCode::BranchNotOwned,
                format!(
                    "input.branch: {named} is not this production's branch ({branch}); a job \
                     writes only to a new branch of its own, and nothing was written"
                ),
            ));
        }
        let token = access.scm_token_param.as_deref();
        let scm = &ctx.tools;
        let repo = format!("/repos/{}", job.repository);
        let base = match &job.base {
            Some(b) if access.allows("bases", b) => b.clone(),
            named => {
                let r = scm
                    .scm("repository", &ScmRequest::get(&repo).with_token(token))
                    .await?;
                let default = match r.body["default_branch"].as_str() {
                    Some(b) if r.is_success() => b.to_string(),
                    _ => return Err(unexpected("the repository's default branch", &r)),
                };
                match named {
                    Some(b) if *b != default => {
                        return Err(StepError::permanent(
                            ErrorCode::NotAllowed,
                            format!(
                                "input.base: {b} is neither {}'s default branch ({default}) \
                                 nor among the bases account {} may use (a stack operator \
                                 allows them: shepherd account {} --bases '<pattern>')",
                                job.repository, ctx.production.account, ctx.production.account
                            ),
                        ));
                    }
                    _ => default,
                }
            }
        };
        if branch == base {
            return Err(StepError::permanent(
                ErrorCode::InputInvalid,
                format!("{branch} is the base branch; a pull request needs another"),
            ));
        }
        let base_ref = scm
            .scm(
                "base",
                &ScmRequest::get(format!("{repo}/git/ref/heads/{base}")).with_token(token),
            )
            .await?;
        let Some(base_sha) = base_ref.body["object"]["sha"]
            .as_str()
            .filter(|_| base_ref.is_success())
        else {
            return Err(unexpected(&format!("base branch {base}"), &base_ref));
        };
        let created = scm
            .scm(
                "branch",
                &ScmRequest::send(
                    "POST",
                    format!("{repo}/git/refs"),
                    serde_json::json!({"ref": format!("refs/heads/{branch}"), "sha": base_sha}),
                )
                .with_token(token),
            )
            .await?;
        if !created.is_success() {
            if !says(&created, "Reference already exists") {
                return Err(unexpected(&format!("creating branch {branch}"), &created));
            }
            // Ours only if an earlier try created it and lost the answer: then nothing has
            // been committed to it, and it still points where this production branched.
            let found = scm
                .scm(
                    "branch-found",
                    &ScmRequest::get(format!("{repo}/git/ref/heads/{branch}")).with_token(token),
                )
                .await?;
            if !(found.is_success() && found.body["object"]["sha"].as_str() == Some(base_sha)) {
                return Err(StepError::permanent(
                    ErrorCode::BranchNotOwned,
                    format!(
                        "branch {branch} already exists on {} and is not this production's \
                         (it does not point at {base} as this production branched from it); \
                         nothing was written to it",
                        job.repository
                    ),
                ));
            }
        }
        let title = job.title();
        let mut commits = Vec::new();
        for (i, change) in set.changes.iter().enumerate() {
            let content = base64::engine::general_purpose::STANDARD.encode(&change.content);
            let path = format!("{repo}/contents/{}", url_path(&change.path));
            let mut body = serde_json::json!({
                "message": format!("{title}: {}", change.path),
                "content": content,
                "branch": branch,
            });
            let put = scm
                .scm(
                    &format!("file-{i}"),
                    &ScmRequest::send("PUT", &path, body.clone()).with_token(token),
                )
                .await?;
            if put.is_success() {
                commits.extend(put.body["commit"]["sha"].as_str().map(str::to_string));
                continue;
            }
            if !says(&put, "\"sha\" wasn't supplied") {
                return Err(unexpected(&format!("committing {}", change.path), &put));
            }
            // The file exists on the branch: from the base, or from an earlier try of ours.
            let found = scm
                .scm(
                    &format!("file-{i}-found"),
                    &ScmRequest::get(format!("{path}?ref={branch}")).with_token(token),
                )
                .await?;
            let (Some(sha), Some(there)) = (
                found.body["sha"].as_str().filter(|_| found.is_success()),
                found.body["content"].as_str(),
            ) else {
                return Err(unexpected(&format!("reading {}", change.path), &found));
            };
            let there: String = there.split_whitespace().collect();
            if there == content {
                continue;
            }
            body["sha"] = sha.into();
            let update = scm
                .scm(
                    &format!("file-{i}-update"),
                    &ScmRequest::send("PUT", &path, body).with_token(token),
                )
                .await?;
            if !update.is_success() {
                return Err(unexpected(&format!("updating {}", change.path), &update));
            }
            commits.extend(update.body["commit"]["sha"].as_str().map(str::to_string));
        }
        let steps: String = plan.steps.iter().map(|s| format!("- {s}\n")).collect();
        let opened = scm
            .scm(
                "pull",
                &ScmRequest::send(
                    "POST",
                    format!("{repo}/pulls"),
                    serde_json::json!({
                        "title": title,
                        "head": branch,
                        "base": base,
                        "body": format!(
                            "{}\n\n{steps}\n{}\n\nOpened by Shepherd production {}.",
                            plan.summary, set.summary, ctx.production.id
                        ),
                    }),
                )
                .with_token(token),
            )
            .await?;
        let (pull, reused) = if opened.is_success() {
            (opened.body, false)
        } else if says(&opened, "A pull request already exists") {
            let head = format!("{}:{branch}", job.owner());
            let open = scm
                .scm(
                    "pull-found",
                    &ScmRequest::get(format!("{repo}/pulls?head={head}&base={base}&state=open"))
                        .with_token(token),
                )
                .await?;
            match open.body.as_array().and_then(|a| a.first()) {
                Some(p) if open.is_success() => (p.clone(), true),
                _ => {
                    return Err(unexpected(
                        &format!("finding the pull request of {head}"),
                        &open,
                    ));
                }
            }
        } else {
            return Err(unexpected("opening the pull request", &opened));
        };
        let (Some(number), Some(url)) = (pull["number"].as_u64(), pull["html_url"].as_str()) else {
            return Err(StepError::permanent(
                ErrorCode::ProviderBadResponse,
                "the host's pull request has no number or html_url",
            ));
        };
        Ok(PullRequestOut {
            number,
            url: url.to_string(),
            branch,
            base,
            reused,
            commits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{path_ok, url_path};

    #[test]
    fn file_names_are_encoded_segment_by_segment() {
        assert_eq!(
            url_path("docs/My File #2?.md"),
            "docs/My%20File%20%232%3F.md"
        );
        assert_eq!(url_path("src/lib.rs"), "src/lib.rs");
    }

    #[test]
    fn change_paths_stay_inside_the_repository() {
        for good in [
            "src/lib.rs",
            "README.md",
            "a/b-c_d.txt",
            ".github/workflows/ci.yml",
        ] {
            assert!(path_ok(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            ".git/config",
            "a\\b",
            "./a",
            "a\n",
        ] {
            assert!(path_ok(bad).is_err(), "{bad:?}");
        }
    }
}
