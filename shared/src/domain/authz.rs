//! Who may do what, and who sees what: one table for every route and CLI command.
//!
//! A caller has a role and a scope. An account's callers act within that account: another
//! account's productions, audit, alarms and DLQ messages do not exist for them (callers get
//! "not found", never "forbidden", so ids cannot be probed). Things that belong to no
//! account (an integration's alarm, a malformed DLQ message) are seen by admins. The stack's
//! own tools (the CLI with the stack's credentials) have the whole stack in scope.

use serde::{Deserialize, Serialize};

use super::Action;

/// Who did it, for the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor(pub String);

/// What a caller may do: viewers read, operators act, admins also override and discard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// What a caller's authority covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One account's productions, and (for admins) what belongs to no account.
    Account(String),
    /// Everything in the stack.
    Stack,
}

/// Something a caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read productions, audit, alarms, DLQ messages, usage and integrations in scope.
    Read,
    Start,
    /// An operator action on a production.
    Act(Action),
    HandleAlarm,
    /// Send DLQ messages back to their queues (one, or many).
    Redrive,
    /// Delete a DLQ message for good.
    Discard,
    SwitchIntegration,
    TestIntegration,
    SetLimits,
}

impl Permission {
    /// The table: the least role that holds each permission.
    pub fn least_role(self) -> Role {
        match self {
            Self::Read | Self::TestIntegration => Role::Viewer,
            Self::Act(Action::Override) | Self::Discard | Self::SetLimits => Role::Admin,
            Self::Start
            | Self::Act(_)
            | Self::HandleAlarm
            | Self::Redrive
            | Self::SwitchIntegration => Role::Operator,
        }
    }

    /// How the permission is named in a refusal.
    pub fn describe(self) -> String {
        match self {
            Self::Read => "reading".into(),
            Self::Start => "starting a production".into(),
            Self::Act(a) => a.as_str().into(),
            Self::HandleAlarm => "handling alarms".into(),
            Self::Redrive => "redrive".into(),
            Self::Discard => "discard".into(),
            Self::SwitchIntegration => "enabling or disabling an integration".into(),
            Self::TestIntegration => "testing an integration".into(),
            Self::SetLimits => "setting an account's limits".into(),
        }
    }
}

/// Refused for the caller's role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} needs the {needs:?} role; you are {role:?}")]
pub struct Denied {
    pub what: String,
    pub needs: Role,
    pub role: Role,
}

/// Who is calling, as the authorizer, the token file or the CLI's identity says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    pub role: Role,
    pub scope: Scope,
}

impl Caller {
    pub fn new(actor: Actor, role: Role, scope: Scope) -> Self {
        Self { actor, role, scope }
    }

    /// Whether the caller's role holds `p`.
    pub fn may(&self, p: Permission) -> Result<(), Denied> {
        let needs = p.least_role();
        if self.role >= needs {
            Ok(())
        } else {
            Err(Denied {
                what: p.describe(),
                needs,
                role: self.role,
            })
        }
    }

    /// Whether something owned by `account` (`None`: by no account) is in the caller's scope.
    pub fn sees(&self, account: Option<&str>) -> bool {
        match (&self.scope, account) {
            (Scope::Stack, _) => true,
            (Scope::Account(mine), Some(theirs)) => mine == theirs,
            (Scope::Account(_), None) => self.role == Role::Admin,
        }
    }

    /// The account the caller is confined to, if any.
    pub fn account(&self) -> Option<&str> {
        match &self.scope {
            Scope::Account(a) => Some(a),
            Scope::Stack => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, scope: Scope) -> Caller {
        Caller::new(Actor("t".into()), role, scope)
    }

    /// The README's table, walked: each permission against each role.
    #[test]
    fn the_authorization_table() {
        use Permission as P;
        use Role::*;
        let table: Vec<(Permission, [bool; 3])> = vec![
            (P::Read, [true, true, true]),
            (P::TestIntegration, [true, true, true]),
            (P::Start, [false, true, true]),
            (P::HandleAlarm, [false, true, true]),
            (P::Redrive, [false, true, true]),
            (P::SwitchIntegration, [false, true, true]),
            (P::Discard, [false, false, true]),
            (P::SetLimits, [false, false, true]),
            (P::Act(Action::Override), [false, false, true]),
        ];
        let mut table = table;
        for &a in Action::ALL {
            if a != Action::Override {
                table.push((P::Act(a), [false, true, true]));
            }
        }
        for (p, allowed) in table {
            for (role, ok) in [Viewer, Operator, Admin].into_iter().zip(allowed) {
                let got = caller(role, Scope::Stack).may(p);
                assert_eq!(got.is_ok(), ok, "{p:?} as {role:?}: {got:?}");
            }
        }
        let refused = caller(Viewer, Scope::Stack)
            .may(P::Act(Action::Approve))
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "approve needs the Operator role; you are Viewer"
        );
    }

    #[test]
    fn an_account_sees_its_own_and_only_admins_see_what_belongs_to_no_account() {
        let acme = |role| caller(role, Scope::Account("acme".into()));
        assert!(acme(Role::Viewer).sees(Some("acme")));
        assert!(!acme(Role::Admin).sees(Some("globex")));
        assert!(!acme(Role::Operator).sees(None));
        assert!(acme(Role::Admin).sees(None));
        assert!(caller(Role::Viewer, Scope::Stack).sees(Some("globex")));
    }
}
