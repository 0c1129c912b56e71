//! Who may do what, and who sees what: one table for every route and CLI command.
//!
//! Two kinds of authority. A caller has a role (viewer, operator, admin) and a scope. An
//! account's callers act within that account: another account's productions, audit, alarms
//! and DLQ messages do not exist for them (callers get "not found", never "forbidden", so
//! ids cannot be probed). Stack operators (the API's Cognito group, the CLI with the stack's
//! credentials) have the whole stack in scope, and they alone hold what every account
//! shares: switching integrations, setting account limits, redriving the audit projection,
//! and what belongs to no account (an integration's alarm, a quarantined DLQ message, which
//! may hold any account's body).

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
    /// Project again the stream records the audit projector gave up on.
    RedriveAudit,
    /// Create, change, rotate or delete webhook subscriptions.
    ManageWebhooks,
    /// Send webhook deliveries again (one, or every failed one since a time), test-send.
    ResendWebhooks,
    /// Create or remove schedules, connectors and watchers (they start productions
    /// unattended).
    ManageSources,
    /// Pause, resume, trigger or backfill a schedule; re-enable a watcher; re-submit an
    /// arrived event.
    OperateSources,
}

impl Permission {
    /// The table: the least role that holds each permission.
    pub fn least_role(self) -> Role {
        match self {
            Self::Read | Self::TestIntegration => Role::Viewer,
            Self::Act(Action::Override | Action::ClearOverride)
            | Self::Discard
            | Self::SetLimits
            | Self::ManageWebhooks
            | Self::ManageSources => Role::Admin,
            Self::Start
            | Self::Act(_)
            | Self::HandleAlarm
            | Self::Redrive
            | Self::SwitchIntegration
            | Self::RedriveAudit
            | Self::ResendWebhooks
            | Self::OperateSources => Role::Operator,
        }
    }

    /// Whether only stack operators hold it (it acts on what every account shares).
    pub fn stack_only(self) -> bool {
        matches!(
            self,
            Self::SwitchIntegration | Self::SetLimits | Self::RedriveAudit
        )
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
            Self::SetLimits => "setting an account's limits or access".into(),
            Self::RedriveAudit => "redriving the audit projection".into(),
            Self::ManageWebhooks => "managing webhook subscriptions".into(),
            Self::ResendWebhooks => "resending webhook deliveries".into(),
            Self::ManageSources => "creating or removing schedules".into(),
            Self::OperateSources => {
                "pausing, resuming, triggering or backfilling a schedule".into()
            }
        }
    }
}

/// Refused for the caller's role or scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{what} needs the {needs:?} role; you are {role:?}")]
    Role {
        what: String,
        needs: Role,
        role: Role,
    },
    #[error(
        "{what} is for the stack's operators (it acts on every account); you act within account {account}"
    )]
    StackOnly { what: String, account: String },
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

    /// Whether the caller's role (and, for what every account shares, scope) holds `p`.
    pub fn may(&self, p: Permission) -> Result<(), Denied> {
        let needs = p.least_role();
        if self.role < needs {
            return Err(Denied::Role {
                what: p.describe(),
                needs,
                role: self.role,
            });
        }
        match (&self.scope, p.stack_only()) {
            (Scope::Account(account), true) => Err(Denied::StackOnly {
                what: p.describe(),
                account: account.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether something owned by `account` (`None`: by no account) is in the caller's
    /// scope. What belongs to no account is the stack operators' alone.
    pub fn sees(&self, account: Option<&str>) -> bool {
        match (&self.scope, account) {
            (Scope::Stack, _) => true,
            (Scope::Account(mine), Some(theirs)) => mine == theirs,
            (Scope::Account(_), None) => false,
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

    /// The README's table, walked: each permission against each role, for an account's
    /// callers and for stack operators.
    #[test]
    fn the_authorization_table() {
        use Permission as P;
        use Role::*;
        // (permission, [viewer, operator, admin] of an account, [same] of the stack)
        let mut table: Vec<(Permission, [bool; 3], [bool; 3])> = vec![
            (P::Read, [true, true, true], [true, true, true]),
            (P::TestIntegration, [true, true, true], [true, true, true]),
            (P::Start, [false, true, true], [false, true, true]),
            (P::HandleAlarm, [false, true, true], [false, true, true]),
            (P::Redrive, [false, true, true], [false, true, true]),
            (P::Discard, [false, false, true], [false, false, true]),
            (
                P::Act(Action::Override),
                [false, false, true],
                [false, false, true],
            ),
            (
                P::Act(Action::ClearOverride),
                [false, false, true],
                [false, false, true],
            ),
            (P::SwitchIntegration, [false; 3], [false, true, true]),
            (P::RedriveAudit, [false; 3], [false, true, true]),
            (P::SetLimits, [false; 3], [false, false, true]),
        ];
        for &a in Action::ALL {
            if !matches!(a, Action::Override | Action::ClearOverride) {
                table.push((P::Act(a), [false, true, true], [false, true, true]));
            }
        }
        for (p, account, stack) in table {
            for (scope, allowed) in [
                (Scope::Account("acme".into()), account),
                (Scope::Stack, stack),
            ] {
                for (role, ok) in [Viewer, Operator, Admin].into_iter().zip(allowed) {
                    let got = caller(role, scope.clone()).may(p);
                    assert_eq!(got.is_ok(), ok, "{p:?} as {role:?} of {scope:?}: {got:?}");
                }
            }
        }
        let refused = caller(Viewer, Scope::Stack)
            .may(P::Act(Action::Approve))
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "approve needs the Operator role; you are Viewer"
        );
        let refused = caller(Admin, Scope::Account("acme".into()))
            .may(P::SwitchIntegration)
            .unwrap_err();
        assert!(
            refused.to_string().contains("for the stack's operators")
                && refused.to_string().contains("acme"),
            "{refused}"
        );
    }

    #[test]
    fn an_account_sees_its_own_and_only_the_stack_sees_what_belongs_to_no_account() {
        let acme = |role| caller(role, Scope::Account("acme".into()));
        assert!(acme(Role::Viewer).sees(Some("acme")));
        assert!(!acme(Role::Admin).sees(Some("globex")));
        assert!(!acme(Role::Operator).sees(None));
        assert!(!acme(Role::Admin).sees(None));
        assert!(caller(Role::Viewer, Scope::Stack).sees(None));
        assert!(caller(Role::Viewer, Scope::Stack).sees(Some("globex")));
    }
}
