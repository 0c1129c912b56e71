//! Callback tokens: how an external job proves which phase attempt it reports for.
//!
//! A token is `<production>~<phase>~<attempt>~<secret>`: the ids route it, the secret (32
//! random bytes, hex) makes it unguessable. Only its SHA-256 is kept, on the waiting phase;
//! a callback is taken only if the phase still waits on that attempt with that hash, before
//! the wait's deadline (the token expires with it). A new attempt has a new token, so an
//! old job's callbacks are refused.

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub production: String,
    pub phase: String,
    pub attempt: u32,
    secret: String,
}

impl Token {
    /// The token of `attempt`, with its random `secret`.
    pub fn new(production: &str, phase: &str, attempt: u32, secret: [u8; 32]) -> Self {
        Self {
            production: production.into(),
            phase: phase.into(),
            attempt,
            secret: hex::encode(secret),
        }
    }

    /// Reads a token from its text; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(4, '~');
        let (production, phase, attempt, secret) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let ok = !production.is_empty()
            && !phase.is_empty()
            && secret.len() == 64
            && secret.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return None;
        }
        Some(Self {
            production: production.into(),
            phase: phase.into(),
            attempt: attempt.parse().ok()?,
            secret: secret.into(),
        })
    }

    pub fn text(&self) -> String {
        format!(
            "{}~{}~{}~{}",
            self.production, self.phase, self.attempt, self.secret
        )
    }

    /// What the waiting phase keeps of it.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.text().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_and_only_its_hash_identifies_it() {
        let t = Token::new("01a2-b3", "implement", 2, [7; 32]);
        let text = t.text();
        assert_eq!(Token::parse(&text), Some(t.clone()));
        assert_eq!(t.sha256().len(), 64);
        assert_ne!(
            Token::new("01a2-b3", "implement", 2, [8; 32]).sha256(),
            t.sha256()
        );
        for bad in [
            "",
            "x~y~1",
            "x~y~one~0707070707070707070707070707070707070707070707070707070707070707",
            "x~y~1~notHex",
            "~y~1~0707070707070707070707070707070707070707070707070707070707070707",
        ] {
            assert_eq!(Token::parse(bad), None, "{bad}");
        }
    }
}
