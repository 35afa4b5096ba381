//! Bootstrap tokens, kept as kubeadm keeps them: a token `<id>.<secret>`
//! (`[a-z0-9]{6}.[a-z0-9]{16}`) is the Secret `bootstrap-token-<id>` in
//! `kube-system`, of type `bootstrap.kubernetes.io/token`, with the secret,
//! its expiry and its usages in `data`. A node presents one once, to join;
//! the agent gateway checks it here ([`check`]).

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{json, Value};

pub const NAMESPACE: &str = "kube-system";
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
const SECRET_PREFIX: &str = "bootstrap-token-";
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A parsed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub secret: String,
}

/// Why a token does not let a node join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the token is not of the form [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    Malformed,
    #[error("token {0} does not exist (never created, or deleted)")]
    Unknown(String),
    #[error("token {0}: the secret part does not match")]
    WrongSecret(String),
    #[error("token {id} expired at {at}")]
    Expired { id: String, at: String },
    #[error("token {0} is not for authentication (usage-bootstrap-authentication is not true)")]
    NotForAuthentication(String),
    #[error("token {0}: its Secret is malformed")]
    Corrupt(String),
}

fn well_formed(part: &str, len: usize) -> bool {
    part.len() == len && part.bytes().all(|b| ALPHABET.contains(&b))
}

impl Token {
    pub fn generate() -> Token {
        let mut rng = rand::thread_rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect()
        };
        Token {
            id: pick(6),
            secret: pick(16),
        }
    }

    pub fn parse(s: &str) -> Result<Token, Refusal> {
        let (id, secret) = s.trim().split_once('.').ok_or(Refusal::Malformed)?;
        if !well_formed(id, 6) || !well_formed(secret, 16) {
            return Err(Refusal::Malformed);
        }
        Ok(Token {
            id: id.into(),
            secret: secret.into(),
        })
    }

    pub fn secret_name(&self) -> String {
        secret_name(&self.id)
    }

    /// The Secret that stores this token; `expires` None never expires.
    pub fn to_secret(&self, expires: Option<DateTime<Utc>>, description: &str) -> Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut data = json!({
            "token-id": b64(&self.id),
            "token-secret": b64(&self.secret),
            "usage-bootstrap-authentication": b64("true"),
            "usage-bootstrap-signing": b64("true"),
            "auth-extra-groups": b64("system:bootstrappers:kubeadm:default-node-token"),
        });
        if let Some(at) = expires {
            data["expiration"] = json!(b64(&at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        }
        if !description.is_empty() {
            data["description"] = json!(b64(description));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.secret_name(), "namespace": NAMESPACE},
            "type": SECRET_TYPE,
            "data": data,
        })
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

pub fn secret_name(id: &str) -> String {
    format!("{SECRET_PREFIX}{id}")
}

/// The token id a bootstrap-token Secret's name stands for.
pub fn id_of_secret(name: &str) -> Option<&str> {
    name.strip_prefix(SECRET_PREFIX)
}

/// One decoded field of a bootstrap-token Secret.
pub fn field(secret: &Value, name: &str) -> Option<String> {
    let b64 = secret["data"][name].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// When a bootstrap-token Secret expires (None: never; Err: unreadable).
pub fn expiry(secret: &Value) -> Result<Option<DateTime<Utc>>, chrono::ParseError> {
    match field(secret, "expiration") {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s).map(|t| Some(t.with_timezone(&Utc))),
    }
}

/// Compared in constant time: the secret part is the credential, and how
/// long a comparison takes must not tell how much of it was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `token` lets a node join, given its Secret as stored (None when
/// there is none) and the time now.
pub fn check(token: &Token, secret: Option<&Value>, now: DateTime<Utc>) -> Result<(), Refusal> {
    let id = || token.id.clone();
    let secret = secret.ok_or_else(|| Refusal::Unknown(id()))?;
    if secret["type"].as_str() != Some(SECRET_TYPE) {
        return Err(Refusal::Unknown(id()));
    }
    let stored = field(secret, "token-secret").ok_or_else(|| Refusal::Corrupt(id()))?;
    if !constant_time_eq(stored.as_bytes(), token.secret.as_bytes()) {
        return Err(Refusal::WrongSecret(id()));
    }
    match expiry(secret) {
        Err(_) => return Err(Refusal::Corrupt(id())),
        Ok(Some(at)) if at <= now => {
            return Err(Refusal::Expired {
                id: id(),
                at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            })
        }
        Ok(_) => {}
    }
    if field(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err(Refusal::NotForAuthentication(id()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_are_checked_against_their_secret() {
        let t = Token::generate();
        assert_eq!(Token::parse(&t.to_string()), Ok(t.clone()));
        for bad in [
            "",
            "abc.def",
            "ABCDEF.0123456789abcdef",
            "abcdef0123456789abcdef",
            "abcdef.0123456789abcde!",
        ] {
            assert_eq!(Token::parse(bad), Err(Refusal::Malformed), "{bad}");
        }
        let now = Utc::now();
        let later = now + chrono::Duration::hours(1);
        let secret = t.to_secret(Some(later), "test");
        assert_eq!(check(&t, Some(&secret), now), Ok(()));
        assert!(matches!(
            check(&t, Some(&secret), later + chrono::Duration::seconds(1)),
            Err(Refusal::Expired { .. })
        ));
        assert_eq!(check(&t, None, now), Err(Refusal::Unknown(t.id.clone())));
        let wrong = Token {
            id: t.id.clone(),
            secret: "0000000000000000".into(),
        };
        assert_eq!(
            check(&wrong, Some(&secret), now),
            Err(Refusal::WrongSecret(t.id.clone()))
        );
        let forever = t.to_secret(None, "");
        assert_eq!(
            check(&t, Some(&forever), now + chrono::Duration::days(3650)),
            Ok(())
        );
        assert_eq!(id_of_secret(&t.secret_name()), Some(t.id.as_str()));
    }
}
