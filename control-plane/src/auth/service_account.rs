//! Service account tokens: JWTs (ES256) that Kubernetes' TokenRequest API
//! issues, in Kubernetes' claims (`kubernetes.io`: namespace, service
//! account, and the pod, node or secret the token is bound to). Signing and
//! checking are here; whether the account and the bound object still exist
//! is for the caller, which reads the store.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Who issues the tokens, and the audience the API accepts by default (as
/// kubeadm's `--service-account-issuer`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A name and uid in the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// Why a token is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by {0:?}, not by this cluster")]
    WrongIssuer(String),
    #[error("the token is not meant for this API (audiences {0:?})")]
    WrongAudience(Vec<String>),
}

/// The cluster's signing key.
pub struct Signer {
    key: EcdsaKeyPair,
    kid: String,
}

impl Signer {
    /// A new key, as PKCS#8 DER.
    pub fn generate() -> Result<Vec<u8>, String> {
        EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| "could not generate a P-256 key".to_string())
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map_err(|e| format!("the service account key is not a P-256 PKCS#8 key: {e}"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = B64.encode(&digest.as_ref()[..16]);
        Ok(Signer { key, kid })
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, String> {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let body = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
        let signed = format!("{}.{}", B64.encode(header.to_string()), B64.encode(body));
        let sig = self
            .key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .map_err(|_| "signing failed".to_string())?;
        Ok(format!("{signed}.{}", B64.encode(sig.as_ref())))
    }

    /// The claims of `token` if this key signed it, it is valid at `now`
    /// (seconds), came from [`ISSUER`] and names `audience`.
    pub fn verify(&self, token: &str, now: i64, audience: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |s: &str| B64.decode(s).map_err(|_| TokenError::Malformed);
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
        if header["alg"] != "ES256" {
            return Err(TokenError::BadSignature);
        }
        let signed = &token[..token.len() - sig.len() - 1];
        signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        )
        .verify(signed.as_bytes(), &decode(sig)?)
        .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims =
            serde_json::from_slice(&decode(body)?).map_err(|_| TokenError::Malformed)?;
        if claims.iss != ISSUER {
            return Err(TokenError::WrongIssuer(claims.iss));
        }
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        // A minute of leeway for clocks a little apart.
        if now + 60 < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        if !claims.aud.iter().any(|a| a == audience) {
            return Err(TokenError::WrongAudience(claims.aud));
        }
        Ok(claims)
    }

    /// The public key as a JSON Web Key Set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        // An uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = self.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": B64.encode(x), "y": B64.encode(y),
        }]})
    }
}

/// `/.well-known/openid-configuration`, for systems that verify the tokens.
pub fn openid_configuration() -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "system:serviceaccount:a:ci".into(),
            aud: vec![ISSUER.into()],
            exp,
            iat: 100,
            nbf: 100,
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "a".into(),
                serviceaccount: Ref {
                    name: "ci".into(),
                    uid: "u".into(),
                },
                pod: None,
                node: None,
                secret: None,
            },
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let signer = Signer::from_pkcs8(&Signer::generate().unwrap()).unwrap();
        let token = signer.sign(&claims(1000)).unwrap();
        assert_eq!(signer.verify(&token, 500, ISSUER).unwrap(), claims(1000));
        assert_eq!(
            signer.verify(&token, 1000, ISSUER),
            Err(TokenError::Expired)
        );
        assert!(matches!(
            signer.verify(&token, 500, "other"),
            Err(TokenError::WrongAudience(_))
        ));
        let other = Signer::from_pkcs8(&Signer::generate().unwrap()).unwrap();
        assert_eq!(
            other.verify(&token, 500, ISSUER),
            Err(TokenError::BadSignature)
        );
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(serde_json::to_vec(&claims(9999)).unwrap());
        parts[1] = &forged;
        assert_eq!(
            signer.verify(&parts.join("."), 500, ISSUER),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            signer.verify("a.b", 500, ISSUER),
            Err(TokenError::Malformed)
        );
        assert_eq!(signer.jwks()["keys"][0]["crv"], "P-256");
    }
}
