//! Who a request is from: the authorizer's verified claims in AWS, a token file locally;
//! [`Who`] extracts the caller for every route.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::Deserialize;
use shepherd::domain::{Actor, Caller, Role, Scope};

use crate::Api;
use crate::error::ApiError;

/// A caller as the token file names it: an account's, or (`"stack": true`) a stack
/// operator, who has every account in scope and alone switches integrations and limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TokenCaller {
    #[serde(default)]
    pub account: String,
    pub role: Role,
    #[serde(default)]
    pub stack: bool,
    /// For the audit trail's actor.
    #[serde(default)]
    pub name: String,
}

impl TokenCaller {
    fn caller(&self) -> Caller {
        let scope = if self.stack {
            Scope::Stack
        } else {
            Scope::Account(self.account.clone())
        };
        Caller::new(Actor(format!("api:{}", self.name)), self.role, scope)
    }
}

/// The Cognito group whose members are the stack's operators.
pub const STACK_GROUP: &str = "stack-operators";

/// `cognito:groups` as API Gateway passes it: `[a b]` (or a JSON array).
fn groups(claim: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(claim) {
        return list;
    }
    claim
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|g| g.trim_matches('"').to_string())
        .filter(|g| !g.is_empty())
        .collect()
}

/// How callers are identified. Its `Debug` names no token (they are bearer secrets).
#[derive(Clone)]
pub enum Auth {
    /// In AWS: API Gateway's JWT authorizer verified the token; its claims name the account
    /// and role (claim names configurable, Cognito custom attributes by default), and
    /// membership of `group` (`cognito:groups`) makes a stack operator.
    Claims {
        account: String,
        role: String,
        group: String,
    },
    /// Locally: `Authorization: Bearer <token>`, tokens from a JSON file
    /// `{"tokens": {"<token>": {"account": "...", "role": "operator", "name": "..."}}}`.
    Tokens(HashMap<String, TokenCaller>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Claims {
                account,
                role,
                group,
            } => f
                .debug_struct("Claims")
                .field("account", account)
                .field("role", role)
                .field("group", group)
                .finish(),
            Self::Tokens(tokens) => write!(f, "Tokens({} callers)", tokens.len()),
        }
    }
}

#[derive(Deserialize)]
struct TokenFile {
    tokens: HashMap<String, TokenCaller>,
}

impl Auth {
    pub fn claims_from_env(env: &HashMap<String, String>) -> Self {
        let get = |k: &str, d: &str| env.get(k).cloned().unwrap_or_else(|| d.into());
        Self::Claims {
            account: get("SHEPHERD_ACCOUNT_CLAIM", "custom:account"),
            role: get("SHEPHERD_ROLE_CLAIM", "custom:role"),
            group: get("SHEPHERD_STACK_GROUP", STACK_GROUP),
        }
    }

    /// Reads a token file; a missing or malformed file is an error naming it.
    pub fn tokens_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        let file: TokenFile = serde_json::from_str(&text)
            .map_err(|e| format!("token file {} is not valid: {e}", path.display()))?;
        Ok(Self::Tokens(
            file.tokens
                .into_iter()
                .map(|(token, mut c)| {
                    if !c.stack && c.account.trim().is_empty() {
                        return Err(format!(
                            "token file {}: a token names an account, or is \"stack\": true",
                            path.display()
                        ));
                    }
                    if c.name.is_empty() {
                        let scope = if c.stack { "stack" } else { &c.account };
                        c.name = format!("{:?}@{scope}", c.role).to_lowercase();
                    }
                    Ok((token, c))
                })
                .collect::<Result<_, String>>()?,
        ))
    }

    pub(crate) fn caller(&self, parts: &Parts) -> Result<Caller, ApiError> {
        match self {
            Self::Tokens(tokens) => {
                let token = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "unauthorized",
                            "send Authorization: Bearer <token>",
                        )
                    })?;
                tokens
                    .get(token.trim())
                    .map(TokenCaller::caller)
                    .ok_or_else(|| {
                        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")
                    })
            }
            Self::Claims {
                account,
                role,
                group,
            } => {
                let claims = parts
                    .extensions
                    .get::<lambda_http::request::RequestContext>()
                    .and_then(|c| c.authorizer())
                    .and_then(|a| a.jwt.as_ref())
                    .map(|j| &j.claims)
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "unauthorized",
                            "no verified token (the route has no authorizer)",
                        )
                    })?;
                let claim = |name: &str| {
                    claims.get(name).cloned().ok_or_else(|| {
                        ApiError::new(
                            StatusCode::FORBIDDEN,
                            "forbidden",
                            format!("the token has no {name} claim"),
                        )
                    })
                };
                let role_name = claim(role)?;
                let role = Role::parse(&role_name).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!("role {role_name:?} is not viewer, operator or admin"),
                    )
                })?;
                // The subject is immutable and verified; a username or email is only for
                // display (an email can change), so the actor is the subject first.
                let sub = claim("sub")?;
                let actor = match ["cognito:username", "username"]
                    .iter()
                    .find_map(|k| claims.get(*k))
                {
                    Some(name) if *name != sub => format!("api:{sub} ({name})"),
                    _ => format!("api:{sub}"),
                };
                let stack = claims
                    .get("cognito:groups")
                    .is_some_and(|g| groups(g).iter().any(|g| g == group));
                let scope = if stack {
                    Scope::Stack
                } else {
                    Scope::Account(claim(account)?)
                };
                Ok(Caller::new(Actor(actor), role, scope))
            }
        }
    }
}

/// The verified caller of a request (an extractor).
pub struct Who(pub Caller);

impl FromRequestParts<Api> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
        api.auth().caller(parts).map(Who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The sample event `cargo lambda invoke` sends, as lambda_http hands it to the router.
    fn parts(edit: impl FnOnce(&mut Value)) -> Parts {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/apigw-api-productions.json"
        );
        let mut event: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        edit(&mut event);
        let req = lambda_http::request::from_str(&event.to_string()).unwrap();
        req.into_parts().0
    }

    fn claims_auth() -> Auth {
        Auth::claims_from_env(&HashMap::new())
    }

    #[test]
    fn the_authorizers_claims_name_the_account_role_and_actor() {
        let caller = claims_auth().caller(&parts(|_| {})).unwrap();
        assert_eq!(
            caller,
            Caller::new(
                Actor("api:5f0c6a1e-0000-4000-8000-000000000001 (ana)".into()),
                Role::Operator,
                Scope::Account("acme".into())
            )
        );
        // The actor is the immutable subject: a changed email does not change it.
        let renamed = parts(|e| {
            e.pointer_mut("/requestContext/authorizer/jwt/claims")
                .unwrap()["email"] = "mallory@evil.example".into()
        });
        assert_eq!(claims_auth().caller(&renamed).unwrap().actor, caller.actor);
    }

    #[test]
    fn members_of_the_stack_group_are_stack_operators() {
        let claims = "/requestContext/authorizer/jwt/claims";
        for groups in [
            "[stack-operators]",
            "[editors stack-operators]",
            r#"["stack-operators"]"#,
        ] {
            let p = parts(|e| e.pointer_mut(claims).unwrap()["cognito:groups"] = groups.into());
            assert_eq!(
                claims_auth().caller(&p).unwrap().scope,
                Scope::Stack,
                "{groups}"
            );
        }
        let p = parts(|e| {
            e.pointer_mut(claims).unwrap()["cognito:groups"] = "[stack-operators-x]".into()
        });
        assert_eq!(
            claims_auth().caller(&p).unwrap().scope,
            Scope::Account("acme".into())
        );
        let no_sub = parts(|e| {
            e.pointer_mut(claims)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove("sub");
        });
        assert_eq!(claims_auth().caller(&no_sub).unwrap_err().status, 403);
    }

    #[test]
    fn a_token_without_a_known_role_or_account_is_forbidden() {
        let claims = "/requestContext/authorizer/jwt/claims";
        let no_role = parts(|e| {
            e.pointer_mut(claims)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove("custom:role");
        });
        let err = claims_auth().caller(&no_role).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (403, "forbidden"));
        assert!(err.message.contains("custom:role"), "{}", err.message);
        let superuser = parts(|e| e.pointer_mut(claims).unwrap()["custom:role"] = "root".into());
        assert_eq!(claims_auth().caller(&superuser).unwrap_err().status, 403);
        let no_account = parts(|e| {
            e.pointer_mut(claims)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove("custom:account");
        });
        assert_eq!(claims_auth().caller(&no_account).unwrap_err().status, 403);
    }

    #[test]
    fn a_request_without_a_verified_token_is_unauthorized() {
        let anonymous = parts(|e| {
            e["requestContext"]
                .as_object_mut()
                .unwrap()
                .remove("authorizer");
        });
        let err = claims_auth().caller(&anonymous).unwrap_err();
        assert_eq!(err.status.as_u16(), 401);
    }

    #[test]
    fn debug_output_names_no_token() {
        let auth = Auth::Tokens(HashMap::from([(
            "s3cr3t-token".to_string(),
            TokenCaller {
                account: "acme".into(),
                role: Role::Admin,
                stack: false,
                name: "ana".into(),
            },
        )]));
        let shown = format!("{auth:?}");
        assert_eq!(shown, "Tokens(1 callers)");
        assert!(!shown.contains("s3cr3t"));
    }

    #[test]
    fn claim_names_are_configurable() {
        let env = HashMap::from([
            ("SHEPHERD_ACCOUNT_CLAIM".to_string(), "email".to_string()),
            ("SHEPHERD_ROLE_CLAIM".to_string(), "custom:role".to_string()),
        ]);
        let caller = Auth::claims_from_env(&env).caller(&parts(|_| {})).unwrap();
        assert_eq!(caller.account(), Some("ana@acme.example"));
    }
}
