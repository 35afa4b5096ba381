//! Encryption at rest, as Kubernetes configures it: an
//! `EncryptionConfiguration` file (`--encryption-provider-config`) lists,
//! for some resources, the providers in order. The first provider seals
//! every object written; any of them opens what it sealed, found by the
//! prefix it wrote: `k8s:enc:aesgcm:v1:<key>:` (AES-256-GCM, a random
//! 12-byte nonce, the store key as additional data) or
//! `k8s:enc:secretbox:v1:<key>:` (XSalsa20-Poly1305, a random 24-byte
//! nonce). `identity` writes JSON as it is and reads data no provider
//! sealed. A new key goes first to rotate: old objects stay readable
//! through the old key, and rewriting them (`kubectl get secrets -A -o
//! json | kubectl replace -f -`) seals them under the new one.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

const PREFIX: &str = "k8s:enc:";

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{key}: {reason}")]
    Open { key: String, reason: String },
    #[error("sealing {key}: {reason}")]
    Seal { key: String, reason: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    api_version: String,
    kind: String,
    resources: Vec<RuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    resources: Vec<String>,
    providers: Vec<ProviderFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    identity: Option<serde_yaml::Value>,
    aesgcm: Option<Keys>,
    secretbox: Option<Keys>,
    aescbc: Option<serde_yaml::Value>,
    kms: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    keys: Vec<KeyFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    name: String,
    secret: String,
}

enum Provider {
    Identity,
    AesGcm(Vec<(String, LessSafeKey)>),
    Secretbox(Vec<(String, XSalsa20Poly1305)>),
}

impl Provider {
    fn name(&self) -> &'static str {
        match self {
            Provider::Identity => "identity",
            Provider::AesGcm(_) => "aesgcm",
            Provider::Secretbox(_) => "secretbox",
        }
    }
}

/// The store key prefixes of some resources, and their providers.
struct Rule {
    /// `/registry/core/secrets/`; empty matches every key (`*.*`).
    prefixes: Vec<String>,
    providers: Vec<Provider>,
}

/// What seals and opens stored objects (no rules: everything as it is).
#[derive(Default)]
pub struct Encryption {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryption")
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// `/registry/<group or core>/<plural>/` of a served resource named as in
/// an EncryptionConfiguration (`secrets`, `deployments.apps`, `*.apps`,
/// `*.*`); an empty string for `*.*`.
fn prefixes_of(name: &str) -> Result<Vec<String>, String> {
    let (plural, group) = match name.split_once('.') {
        Some((p, g)) => (p, g),
        None => (name, ""),
    };
    if plural == "*" && group == "*" {
        return Ok(vec![String::new()]);
    }
    let stored_group = |g: &str| {
        if g.is_empty() {
            "core".to_string()
        } else {
            g.to_string()
        }
    };
    let found: Vec<String> = crate::api::RESOURCES
        .iter()
        .filter(|r| r.is_stored() && r.group == group && (plural == "*" || r.plural == plural))
        .map(|r| format!("/registry/{}/{}/", stored_group(r.group), r.plural))
        .collect();
    if found.is_empty() {
        return Err(format!(
            "resources: {name:?} is not a resource this API server stores"
        ));
    }
    Ok(found)
}

fn decode_key(provider: &str, k: &KeyFile, len: &[usize]) -> Result<Vec<u8>, String> {
    if k.name.is_empty() || k.name.contains(':') {
        return Err(format!(
            "{provider}: key name {:?} must be non-empty, without ':'",
            k.name
        ));
    }
    let bytes = B64
        .decode(k.secret.trim())
        .map_err(|e| format!("{provider}: key {:?}: secret is not base64: {e}", k.name))?;
    if !len.contains(&bytes.len()) {
        return Err(format!(
            "{provider}: key {:?} is {} bytes; it must be {}",
            k.name,
            bytes.len(),
            len.iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    Ok(bytes)
}

fn provider(p: ProviderFile) -> Result<Provider, String> {
    let set = [
        p.identity.is_some(),
        p.aesgcm.is_some(),
        p.secretbox.is_some(),
        p.aescbc.is_some(),
        p.kms.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if set != 1 {
        return Err("each provider must name exactly one of identity, aesgcm, secretbox".into());
    }
    if p.aescbc.is_some() || p.kms.is_some() {
        return Err(
            "the aescbc and kms providers are not supported; use aesgcm or secretbox".into(),
        );
    }
    if p.identity.is_some() {
        return Ok(Provider::Identity);
    }
    if let Some(keys) = p.aesgcm {
        let mut out = Vec::new();
        for k in &keys.keys {
            let bytes = decode_key("aesgcm", k, &[32])?;
            let key = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| format!("aesgcm: key {:?} is not usable", k.name))?;
            out.push((k.name.clone(), LessSafeKey::new(key)));
        }
        if out.is_empty() {
            return Err("aesgcm: at least one key is needed".into());
        }
        return Ok(Provider::AesGcm(out));
    }
    let keys = p.secretbox.expect("one provider is set");
    let mut out = Vec::new();
    for k in &keys.keys {
        let bytes = decode_key("secretbox", k, &[32])?;
        let cipher = XSalsa20Poly1305::new_from_slice(&bytes)
            .map_err(|_| format!("secretbox: key {:?} is not usable", k.name))?;
        out.push((k.name.clone(), cipher));
    }
    if out.is_empty() {
        return Err("secretbox: at least one key is needed".into());
    }
    Ok(Provider::Secretbox(out))
}

impl Encryption {
    /// Read an EncryptionConfiguration file.
    pub fn load(path: &Path) -> Result<Encryption, EncryptionError> {
        let text = std::fs::read_to_string(path).map_err(|source| EncryptionError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Encryption::parse(&text)
            .map_err(|e| EncryptionError::Config(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Encryption, String> {
        let file: File = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if file.kind != "EncryptionConfiguration"
            || !matches!(
                file.api_version.as_str(),
                "apiserver.config.k8s.io/v1" | "apiserver.config.k8s.io/v1beta1"
            )
        {
            return Err(format!(
                "expected kind EncryptionConfiguration of apiserver.config.k8s.io/v1, not {} of {}",
                file.kind, file.api_version
            ));
        }
        let mut rules = Vec::new();
        for r in file.resources {
            let mut prefixes = Vec::new();
            for name in &r.resources {
                prefixes.extend(prefixes_of(name)?);
            }
            let providers = r
                .providers
                .into_iter()
                .map(provider)
                .collect::<Result<Vec<_>, _>>()?;
            if providers.is_empty() {
                return Err(format!(
                    "{:?}: at least one provider is needed",
                    r.resources
                ));
            }
            rules.push(Rule {
                prefixes,
                providers,
            });
        }
        Ok(Encryption { rules })
    }

    /// The first rule naming `key`'s resource (as Kubernetes, the first
    /// match wins).
    fn rule(&self, key: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.prefixes.iter().any(|p| key.starts_with(p.as_str())))
    }

    /// What to store at `key` for `plain`.
    pub fn seal(&self, key: &str, plain: Vec<u8>) -> Result<Vec<u8>, EncryptionError> {
        let Some(rule) = self.rule(key) else {
            return Ok(plain);
        };
        let fail = |reason: &str| EncryptionError::Seal {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        let rng = SystemRandom::new();
        match &rule.providers[0] {
            Provider::Identity => Ok(plain),
            Provider::AesGcm(keys) => {
                let (name, k) = &keys[0];
                let mut nonce = [0u8; 12];
                rng.fill(&mut nonce).map_err(|_| fail("no randomness"))?;
                let mut sealed = plain;
                k.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(key.as_bytes()),
                    &mut sealed,
                )
                .map_err(|_| fail("AES-GCM refused"))?;
                let mut out = format!("{PREFIX}aesgcm:v1:{name}:").into_bytes();
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                Ok(out)
            }
            Provider::Secretbox(keys) => {
                let (name, cipher) = &keys[0];
                let mut nonce = [0u8; 24];
                rng.fill(&mut nonce).map_err(|_| fail("no randomness"))?;
                let sealed = cipher
                    .encrypt((&nonce).into(), plain.as_slice())
                    .map_err(|_| fail("secretbox refused"))?;
                let mut out = format!("{PREFIX}secretbox:v1:{name}:").into_bytes();
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                Ok(out)
            }
        }
    }

    /// The plain bytes of what is stored at `key`.
    pub fn open<'a>(
        &self,
        key: &str,
        stored: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, EncryptionError> {
        let fail = |reason: String| EncryptionError::Open {
            key: key.to_string(),
            reason,
        };
        let Some(rest) = stored.strip_prefix(PREFIX.as_bytes()) else {
            // Unsealed: readable unless the resource's providers leave
            // identity out (as Kubernetes).
            return match self.rule(key) {
                Some(r) if !r.providers.iter().any(|p| matches!(p, Provider::Identity)) => Err(
                    fail("stored unencrypted, and identity is not among its providers".into()),
                ),
                _ => Ok(std::borrow::Cow::Borrowed(stored)),
            };
        };
        // <provider>:v1:<key name>:<nonce><ciphertext>
        let mut parts = rest.splitn(4, |b| *b == b':');
        let (Some(provider), Some(b"v1"), Some(name), Some(body)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail(
                "sealed data without a provider, version and key name".into(),
            ));
        };
        let provider = String::from_utf8_lossy(provider);
        let name = String::from_utf8_lossy(name);
        // Only the providers of the resource's own rule (as Kubernetes):
        // two rules may name different keys alike.
        let candidates = self
            .rule(key)
            .into_iter()
            .flat_map(|r| r.providers.iter())
            .filter(|p| p.name() == provider);
        let mut tried = None;
        for p in candidates {
            match p {
                Provider::AesGcm(keys) => {
                    let Some((_, k)) = keys.iter().find(|(n, _)| *n == name) else {
                        continue;
                    };
                    if body.len() < 12 {
                        return Err(fail("sealed data too short".into()));
                    }
                    let (nonce, sealed) = body.split_at(12);
                    let nonce = Nonce::try_assume_unique_for_key(nonce)
                        .map_err(|_| fail("bad nonce".into()))?;
                    let mut buf = sealed.to_vec();
                    match k.open_in_place(nonce, Aad::from(key.as_bytes()), &mut buf) {
                        Ok(plain) => return Ok(std::borrow::Cow::Owned(plain.to_vec())),
                        Err(_) => tried = Some(format!("aesgcm key {name:?} does not open it")),
                    }
                }
                Provider::Secretbox(keys) => {
                    let Some((_, cipher)) = keys.iter().find(|(n, _)| *n == name) else {
                        continue;
                    };
                    if body.len() < 24 {
                        return Err(fail("sealed data too short".into()));
                    }
                    let (nonce, sealed) = body.split_at(24);
                    match cipher.decrypt(nonce.into(), sealed) {
                        Ok(plain) => return Ok(std::borrow::Cow::Owned(plain)),
                        Err(_) => tried = Some(format!("secretbox key {name:?} does not open it")),
                    }
                }
                Provider::Identity => {}
            }
        }
        Err(fail(tried.unwrap_or_else(|| {
            format!(
                "sealed by {provider} key {name:?}, which the encryption configuration does not hold"
            )
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> String {
        B64.encode([b; 32])
    }

    fn config(providers: &str) -> Encryption {
        Encryption::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
        ))
        .unwrap()
    }

    const SECRET: &str = "/registry/core/secrets/default/db";

    #[test]
    fn sealed_by_the_first_provider_opened_by_any() {
        let aes = format!("  - aesgcm: {{keys: [{{name: k1, secret: {}}}]}}\n", key(1));
        let sbox = format!(
            "  - secretbox: {{keys: [{{name: k2, secret: {}}}]}}\n",
            key(2)
        );
        let first = config(&format!("{aes}  - identity: {{}}\n"));
        let sealed = first.seal(SECRET, b"{\"data\":1}".to_vec()).unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
        assert!(!sealed.windows(8).any(|w| w == b"\"data\":1"));
        assert_eq!(&*first.open(SECRET, &sealed).unwrap(), b"{\"data\":1}");
        // Bound to its key: moved elsewhere, it does not open.
        assert!(first
            .open("/registry/core/secrets/default/other", &sealed)
            .is_err());
        // Rotated: the new key seals, the old still opens.
        let rotated = config(&format!("{sbox}{aes}"));
        assert_eq!(&*rotated.open(SECRET, &sealed).unwrap(), b"{\"data\":1}");
        let resealed = rotated.seal(SECRET, b"{}".to_vec()).unwrap();
        assert!(resealed.starts_with(b"k8s:enc:secretbox:v1:k2:"));
        assert_eq!(&*rotated.open(SECRET, &resealed).unwrap(), b"{}");
        // Plain data: read only where identity is a provider.
        assert_eq!(&*first.open(SECRET, b"{}").unwrap(), b"{}");
        assert!(rotated.open(SECRET, b"{}").is_err());
        // Another resource is untouched.
        let cm = "/registry/core/configmaps/default/c";
        assert_eq!(first.seal(cm, b"{}".to_vec()).unwrap(), b"{}");
        // A key the configuration lost: a clear error.
        let other = config(&format!(
            "  - aesgcm: {{keys: [{{name: k9, secret: {}}}]}}\n",
            key(9)
        ));
        let e = other.open(SECRET, &sealed).unwrap_err().to_string();
        assert!(e.contains("does not hold"), "{e}");
    }

    #[test]
    fn rules_naming_keys_alike_keep_them_apart() {
        let both = Encryption::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
             - resources: [secrets]\n  providers: [{{aesgcm: {{keys: [{{name: key1, secret: {}}}]}}}}]\n\
             - resources: [configmaps]\n  providers: [{{aesgcm: {{keys: [{{name: key1, secret: {}}}]}}}}]\n",
            key(1),
            key(2)
        ))
        .unwrap();
        let cm = "/registry/core/configmaps/default/c";
        let sealed = both.seal(cm, b"{}".to_vec()).unwrap();
        assert_eq!(&*both.open(cm, &sealed).unwrap(), b"{}");
        let secret = both.seal(SECRET, b"{}".to_vec()).unwrap();
        assert_eq!(&*both.open(SECRET, &secret).unwrap(), b"{}");
    }

    #[test]
    fn bad_configurations_are_refused() {
        for (bad, why) in [
            (
                "  - aesgcm: {keys: [{name: k1, secret: c2hvcnQ=}]}\n",
                "bytes",
            ),
            ("  - aescbc: {keys: []}\n", "not supported"),
            ("  - {}\n", "exactly one"),
        ] {
            let e = Encryption::parse(&format!(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{bad}"
            ))
            .err()
            .unwrap();
            assert!(e.contains(why), "{e}");
        }
        let e = Encryption::parse(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [widgets]\n  providers: [{identity: {}}]\n",
        )
        .err()
        .unwrap();
        assert!(e.contains("widgets"), "{e}");
    }
}
