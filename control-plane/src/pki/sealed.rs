//! The control-plane certificates a joining master needs (the cluster CA's
//! certificate and key, and the static tokens file if there is one), sealed
//! for the trip: kubeadm's `--upload-certs`. `init` (or `certs upload`)
//! seals them with AES-256-GCM under a fresh certificate key, stores only
//! the ciphertext in the Secret `kube-system/skiff-control-plane-certs`
//! for two hours, and prints the key; the masters never hold it. A joiner
//! with a bootstrap token gets the ciphertext from the agent port, and only
//! one also given the key can open it.

use std::collections::BTreeMap;
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::{write_private, CA_CERT, CA_KEY};

/// Where the sealed certificates are kept.
pub const SECRET_NAMESPACE: &str = "kube-system";
pub const SECRET_NAME: &str = "skiff-control-plane-certs";
/// The annotation that says until when a joiner may fetch them.
pub const EXPIRES_ANNOTATION: &str = "skiff.io/expires";
/// How long an upload serves, as kubeadm's.
pub const LIFETIME: chrono::Duration = chrono::Duration::hours(2);

/// The files that travel, relative to the PKI directory.
const FILES: [&str; 3] = [CA_CERT, CA_KEY, "tokens.csv"];
/// Bound into the ciphertext, so a blob sealed for something else does not
/// open as certificates.
const AAD: &[u8] = b"skiff control-plane certificates v1";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "the certificate key must be 64 hex digits (32 bytes), as `control-plane init` printed it"
    )]
    BadKey,
    #[error("the sealed certificates do not open with this certificate key (a wrong key, or certificates uploaded again since: run `control-plane certs upload` on a master for a new key)")]
    WrongKey,
    #[error("the sealed certificates are malformed: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the system's random source failed")]
    Random,
    #[error("writing the PKI directory: {0}")]
    Write(String),
}

/// kubeadm's certificate key: 32 random bytes, written as 64 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateKey([u8; 32]);

impl std::fmt::Debug for CertificateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateKey(..)")
    }
}

impl std::fmt::Display for CertificateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl CertificateKey {
    pub fn generate() -> Result<Self, SealError> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| SealError::Random)?;
        Ok(CertificateKey(key))
    }

    pub fn parse(hex: &str) -> Result<Self, SealError> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(SealError::BadKey);
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| SealError::BadKey)?;
        }
        Ok(CertificateKey(key))
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte AES-256 key"))
    }
}

/// The PKI files that travel, by name.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    pub files: BTreeMap<String, String>,
}

impl Bundle {
    /// The files present in `dir` (the CA certificate and key must be).
    pub fn read(dir: &Path) -> Result<Self, SealError> {
        let mut files = BTreeMap::new();
        for name in FILES {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(text) => {
                    files.insert(name.to_string(), text);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == "tokens.csv" => {}
                Err(e) => {
                    return Err(SealError::Io(std::io::Error::new(
                        e.kind(),
                        format!("reading {}: {e}", dir.join(name).display()),
                    )))
                }
            }
        }
        Ok(Bundle { files })
    }

    /// Write the files into `dir`, each whole and readable by its owner only.
    pub fn write(&self, dir: &Path) -> Result<(), SealError> {
        std::fs::create_dir_all(dir)?;
        for (name, text) in &self.files {
            if !FILES.contains(&name.as_str()) {
                return Err(SealError::Malformed(format!("unexpected file {name:?}")));
            }
            write_private(&dir.join(name), text).map_err(|e| SealError::Write(format!("{e:#}")))?;
        }
        Ok(())
    }

    pub fn seal(&self, key: &CertificateKey) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut data = serde_json::to_vec(self).map_err(|e| SealError::Malformed(e.to_string()))?;
        key.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut data,
            )
            .map_err(|_| SealError::Malformed("sealing failed".into()))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok(sealed)
    }

    pub fn open(sealed: &[u8], key: &CertificateKey) -> Result<Self, SealError> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Malformed(format!("{} bytes", sealed.len())));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| SealError::Malformed("nonce".into()))?;
        let mut data = rest.to_vec();
        let plain = key
            .aead()
            .open_in_place(nonce, Aad::from(AAD), &mut data)
            .map_err(|_| SealError::WrongKey)?;
        let bundle: Bundle =
            serde_json::from_slice(plain).map_err(|e| SealError::Malformed(e.to_string()))?;
        for name in [CA_CERT, CA_KEY] {
            if !bundle.files.contains_key(name) {
                return Err(SealError::Malformed(format!("{name} is missing")));
            }
        }
        Ok(bundle)
    }
}

/// The Secret that holds `sealed` until `expires`.
pub fn secret(sealed: &[u8], expires: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    use base64::Engine;
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET_NAME,
            "namespace": SECRET_NAMESPACE,
            "annotations": {
                EXPIRES_ANNOTATION: expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        },
        "type": "Opaque",
        "data": {"sealed": base64::engine::general_purpose::STANDARD.encode(sealed)},
    })
}

/// The ciphertext a Secret holds, unless it has expired at `now`.
pub fn from_secret(
    secret: &serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let expires = secret["metadata"]["annotations"][EXPIRES_ANNOTATION]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .ok_or("the uploaded certificates carry no valid expiry")?;
    if expires <= now {
        return Err(format!(
            "the uploaded control-plane certificates expired at {expires}: run `control-plane \
             certs upload` on a master and join with the certificate key it prints"
        ));
    }
    let data = secret["data"]["sealed"]
        .as_str()
        .ok_or("the uploaded certificates Secret holds no data")?;
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("the uploaded certificates are not base64: {e}"))
}

/// Seal `dir`'s certificates under a fresh key and store them through the
/// API (replacing an earlier upload); the key, for the join command.
pub async fn upload(
    client: &crate::rest_client::RestClient,
    dir: &Path,
) -> anyhow::Result<CertificateKey> {
    let key = CertificateKey::generate()?;
    let sealed = Bundle::read(dir)?.seal(&key)?;
    let body = secret(&sealed, chrono::Utc::now() + LIFETIME);
    let path = format!("/api/v1/namespaces/{SECRET_NAMESPACE}/secrets");
    // Replace any earlier upload: its key stops working.
    let _ = client.delete(&format!("{path}/{SECRET_NAME}")).await;
    client.post(&path, &body).await?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Bundle {
        Bundle {
            files: [(CA_CERT, "cert"), (CA_KEY, "key")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn sealed_certificates_open_only_with_their_key() {
        let key = CertificateKey::generate().unwrap();
        let sealed = bundle().seal(&key).unwrap();
        assert_eq!(Bundle::open(&sealed, &key).unwrap(), bundle());
        let other = CertificateKey::generate().unwrap();
        assert!(matches!(
            Bundle::open(&sealed, &other),
            Err(SealError::WrongKey)
        ));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            Bundle::open(&tampered, &key),
            Err(SealError::WrongKey)
        ));
        assert!(Bundle::open(&sealed[..10], &key).is_err());
    }

    #[test]
    fn keys_print_and_parse_as_hex() {
        let key = CertificateKey::generate().unwrap();
        let hex = key.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(CertificateKey::parse(&hex).unwrap(), key);
        for bad in ["", "00", &"zz".repeat(32), &"0".repeat(63), &"é".repeat(32)] {
            assert!(CertificateKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_expired_upload_is_refused() {
        let now = chrono::Utc::now();
        let s = secret(b"abc", now + chrono::Duration::minutes(1));
        assert_eq!(from_secret(&s, now).unwrap(), b"abc");
        assert!(from_secret(&s, now + chrono::Duration::minutes(2))
            .unwrap_err()
            .contains("expired"));
    }
}
