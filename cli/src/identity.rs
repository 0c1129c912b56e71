//! Who runs the CLI, from its AWS credentials, never from the environment or a flag.
//!
//! The actor is the principal STS names (`GetCallerIdentity`); the role is the one its IAM
//! identity is tagged with (`shepherd-role` = viewer, operator or admin, on the IAM user or
//! on the role an assumed-role session belongs to), set by whoever administers IAM. An
//! identity without the tag, or whose tags it may not read, is a viewer. The CLI reads the
//! stack's tables with these same credentials, so IAM stays the boundary; the role keeps
//! an operator's own mistakes within what the tag grants and names them in the audit.

use anyhow::{Context, Result, bail};
use shepherd::domain::Role;

/// The IAM tag that grants a CLI role.
pub const ROLE_TAG: &str = "shepherd-role";

/// The caller's principal ARN and the role its tag grants.
pub async fn whoami(sdk: &aws_config::SdkConfig) -> Result<(String, Role)> {
    let me = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .context("cannot tell who you are (STS GetCallerIdentity): check your AWS credentials")?;
    let arn = me.arn().unwrap_or_default().to_string();
    // An identity that may not read its tags is a viewer; a tag naming no role is an error.
    let role = tagged_role(sdk, &arn).await?.unwrap_or(Role::Viewer);
    Ok((arn, role))
}

/// What an ARN's principal is, for reading its tags.
#[derive(Debug, PartialEq, Eq)]
enum Principal<'a> {
    User(&'a str),
    Role(&'a str),
    Root,
    Other,
}

fn principal(arn: &str) -> Principal<'_> {
    let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
    if resource == "root" {
        return Principal::Root;
    }
    match resource.split_once('/') {
        Some(("user", path)) => Principal::User(path.rsplit('/').next().unwrap_or(path)),
        Some(("assumed-role", rest)) => Principal::Role(rest.split('/').next().unwrap_or(rest)),
        Some(("role", path)) => Principal::Role(path.rsplit('/').next().unwrap_or(path)),
        _ => Principal::Other,
    }
}

async fn tagged_role(sdk: &aws_config::SdkConfig, arn: &str) -> Result<Option<Role>> {
    let iam = aws_sdk_iam::Client::new(sdk);
    let tags = match principal(arn) {
        // The account's root holds every permission there is.
        Principal::Root => return Ok(Some(Role::Admin)),
        Principal::User(name) => iam
            .list_user_tags()
            .user_name(name)
            .send()
            .await
            .ok()
            .map(|o| o.tags),
        Principal::Role(name) => iam
            .list_role_tags()
            .role_name(name)
            .send()
            .await
            .ok()
            .map(|o| o.tags),
        Principal::Other => None,
    };
    let Some(tags) = tags else {
        return Ok(None);
    };
    let Some(tag) = tags.iter().find(|t| t.key == ROLE_TAG) else {
        return Ok(None);
    };
    match Role::parse(&tag.value) {
        Some(r) => Ok(Some(r)),
        None => bail!(
            "{arn}'s {ROLE_TAG} tag is {:?}: expected viewer, operator or admin",
            tag.value
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_read_from_their_arns() {
        assert_eq!(
            principal("arn:aws:iam::123456789012:user/ops/ana"),
            Principal::User("ana")
        );
        assert_eq!(
            principal("arn:aws:sts::123456789012:assumed-role/ShepherdOps/ana-session"),
            Principal::Role("ShepherdOps")
        );
        assert_eq!(principal("arn:aws:iam::123456789012:root"), Principal::Root);
        assert_eq!(
            principal("arn:aws:sts::123456789012:federated-user/x"),
            Principal::Other
        );
    }
}
