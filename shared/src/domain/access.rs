//! What an account may reach outside the stack: the repositories its coding jobs may
//! write to, the base branches other than a repository's default, the prefix of its
//! branches, and its own source-control token. A stack operator sets it; a start and each
//! phase check a production's input against it wherever the pipeline's input schema marks
//! a field `"x-account-allows": "<list>"`.

use serde::{Deserialize, Serialize};

/// An account's access. Empty lists allow nothing (a repository must be allowed before a
/// job can name it); a missing prefix is `shepherd/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountAccess {
    /// Patterns of `owner/name`: `acme/widgets`, or `acme/*` for every repository of an
    /// owner.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Branch patterns a job may name as its base (`release/*`); the repository's default
    /// branch is always allowed.
    #[serde(default)]
    pub bases: Vec<String>,
    /// The prefix of the branches its jobs create (`shepherd/` when none): a job's branch is
    /// always `<prefix><production id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_prefix: Option<String>,
    /// Its own source-control token's SSM parameter, under
    /// `/shepherd/<stack>/accounts/<account>/` (none: the stack's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm_token_param: Option<String>,
}

/// The prefix of a job's branch when the account sets none.
pub const DEFAULT_BRANCH_PREFIX: &str = "shepherd/";

impl AccountAccess {
    /// The patterns of the list `x-account-allows` names (`repositories`, `bases`).
    pub fn list(&self, name: &str) -> Option<&[String]> {
        match name {
            "repositories" => Some(&self.repositories),
            "bases" => Some(&self.bases),
            _ => None,
        }
    }

    /// Whether `value` is allowed by the list `name`; an unknown list allows nothing.
    pub fn allows(&self, name: &str, value: &str) -> bool {
        self.list(name)
            .is_some_and(|patterns| patterns.iter().any(|p| matches(p, value)))
    }

    pub fn branch_prefix(&self) -> &str {
        self.branch_prefix
            .as_deref()
            .unwrap_or(DEFAULT_BRANCH_PREFIX)
    }

    /// The checks an access must pass before it is stored; names the bad entry.
    pub fn check(&self, account: &str, stack: &str) -> Result<(), String> {
        let text = |s: &str| {
            !s.is_empty()
                && s.len() <= 200
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./*".contains(&b))
        };
        for r in &self.repositories {
            let ok = text(r)
                && r.split('/').count() == 2
                && r.split('/').all(|p| !p.is_empty())
                && !r.starts_with('*');
            if !ok {
                return Err(format!(
                    "repository pattern {r:?}: owner/name, or owner/* (a-z, 0-9, - _ .)"
                ));
            }
        }
        for b in &self.bases {
            if !text(b) {
                return Err(format!(
                    "base branch pattern {b:?}: a-z, 0-9, - _ . / and *"
                ));
            }
        }
        if let Some(p) = &self.branch_prefix {
            let ok = text(p) && !p.contains('*') && p.ends_with('/') && !p.starts_with('/');
            if !ok {
                return Err(format!(
                    "branch prefix {p:?}: like shepherd/ (a-z, 0-9, - _ . /, ending in /)"
                ));
            }
        }
        if let Some(t) = &self.scm_token_param {
            let under = format!("/shepherd/{stack}/accounts/{account}/");
            if !t.starts_with(&under) || t.len() == under.len() {
                return Err(format!(
                    "scm token parameter {t:?}: must be under {under} (the phases may read \
                     only there)"
                ));
            }
        }
        Ok(())
    }
}

/// Whether `input` passes `checks` ((field, list) pairs from its definition) for
/// `account`: the first field whose value the account does not allow is named.
pub fn check_input(
    access: &AccountAccess,
    account: &str,
    checks: &[(String, String)],
    input: &serde_json::Value,
) -> Result<(), String> {
    for (field, list) in checks {
        let Some(value) = input[field].as_str() else {
            continue;
        };
        if !access.allows(list, value) {
            return Err(format!(
                "input.{field}: {value} is not among the {list} account {account} may use (a \
                 stack operator allows them: shepherd account {account} --{list} '<pattern>')"
            ));
        }
    }
    Ok(())
}

/// `*` matches any run of characters within one path segment (`acme/*` is every
/// repository of acme, not of acme's sub-paths); everything else matches itself, case
/// insensitively (GitHub's names are).
pub fn matches(pattern: &str, value: &str) -> bool {
    fn go(p: &[u8], v: &[u8]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], v) || (!v.is_empty() && v[0] != b'/' && go(p, &v[1..])),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &v[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_within_a_segment() {
        assert!(matches("acme/*", "acme/widgets"));
        assert!(matches("acme/widgets", "Acme/Widgets"));
        assert!(!matches("acme/*", "globex/widgets"));
        assert!(!matches("acme/*", "acme/widgets/x"));
        assert!(!matches("acme/w*", "acme2/widgets"));
        assert!(matches("release/*", "release/2026-12"));
        assert!(!matches("release/*", "main"));
    }

    #[test]
    fn an_account_allows_what_it_lists_and_nothing_by_default() {
        let none = AccountAccess::default();
        assert!(!none.allows("repositories", "acme/widgets"));
        assert_eq!(none.branch_prefix(), "shepherd/");
        let a = AccountAccess {
            repositories: vec!["acme/*".into()],
            ..Default::default()
        };
        assert!(a.allows("repositories", "acme/widgets"));
        assert!(!a.allows("repositories", "globex/secrets"));
        assert!(!a.allows("bases", "main"));
        assert!(!a.allows("teams", "x"));
    }

    #[test]
    fn a_bad_access_names_its_entry() {
        let bad = |a: AccountAccess| a.check("acme", "s").unwrap_err();
        let r = |r: &str| AccountAccess {
            repositories: vec![r.into()],
            ..Default::default()
        };
        assert!(bad(r("*")).contains("repository pattern"));
        assert!(bad(r("acme")).contains("owner/name"));
        assert!(bad(r("*/x")).contains("repository pattern"));
        let p = AccountAccess {
            branch_prefix: Some("main".into()),
            ..Default::default()
        };
        assert!(bad(p).contains("ending in /"));
        let t = AccountAccess {
            scm_token_param: Some("/shepherd/providers/scm/token".into()),
            ..Default::default()
        };
        assert!(bad(t).contains("must be under /shepherd/s/accounts/acme/"));
        let ok = AccountAccess {
            repositories: vec!["acme/*".into(), "acme-labs/widgets".into()],
            bases: vec!["release/*".into()],
            branch_prefix: Some("bots/shepherd/".into()),
            scm_token_param: Some("/shepherd/s/accounts/acme/scm-token".into()),
        };
        assert_eq!(ok.check("acme", "s"), Ok(()));
    }
}
