//! Service account tokens for the projected volumes of the node's pods:
//! asked of the masters (the kubelet's TokenRequest, over the agent
//! protocol), held in memory only, and asked for again once 80% of their
//! life has passed or after a day, as the kubelet does. A pod's tokens
//! are forgotten with the pod.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, ServiceAccountTokenProjection};
use proto::agent::{TokenRequest, TokenResponse};

use super::spec::{self, SpecError};

/// What a pod's volume asks for: an audience ("" for the API's) and a
/// life in seconds; the token answering it.
pub type Wanted = (String, i64);
pub type Projected = BTreeMap<Wanted, String>;

/// The kubelet's default and least life of a projected token.
const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 600;
/// Refresh after this long whatever the token's life.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Where tokens come from: the masters.
pub trait Issuer: Send + Sync {
    fn issue(&self, request: TokenRequest) -> BoxFuture<'_, Result<TokenResponse, String>>;
}

/// An issuer with no masters behind it (tests of what needs no token).
#[cfg(test)]
pub struct NoMasters;

#[cfg(test)]
impl Issuer for NoMasters {
    fn issue(&self, _: TokenRequest) -> BoxFuture<'_, Result<TokenResponse, String>> {
        Box::pin(async { Err("no masters".to_string()) })
    }
}

struct Held {
    token: String,
    refresh_at: SystemTime,
    expires: SystemTime,
}

pub struct Tokens {
    issuer: Arc<dyn Issuer>,
    held: Mutex<HashMap<(String, Wanted), Held>>,
}

/// What one projection asks for.
pub fn wanted_of(t: &ServiceAccountTokenProjection) -> Wanted {
    (
        t.audience.clone().unwrap_or_default(),
        t.expiration_seconds
            .unwrap_or(DEFAULT_EXPIRATION)
            .max(MIN_EXPIRATION),
    )
}

/// The tokens `pod`'s projected volumes ask for.
pub fn wanted(pod: &Pod) -> Vec<Wanted> {
    let mut out: Vec<Wanted> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .map(wanted_of)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// When a token fetched at `fetched`, expiring at `expires`, is due for
/// renewal.
fn refresh_at(fetched: SystemTime, expires: SystemTime) -> SystemTime {
    let life = expires.duration_since(fetched).unwrap_or(Duration::ZERO);
    fetched + life.mul_f64(0.8).min(MAX_AGE)
}

impl Tokens {
    pub fn new(issuer: Arc<dyn Issuer>) -> Self {
        Tokens {
            issuer,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Wanted), Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every token `pod` projects, fetched or refreshed as needed.
    pub async fn for_pod(&self, pod: &Pod) -> Result<Projected, SpecError> {
        let uid = spec::uid(pod).to_string();
        let mut out = Projected::new();
        for w in wanted(pod) {
            let key = (uid.clone(), w.clone());
            let now = SystemTime::now();
            let fresh = self
                .lock()
                .get(&key)
                .filter(|h| h.refresh_at > now)
                .map(|h| h.token.clone());
            let token = match fresh {
                Some(t) => t,
                None => match self.fetch(pod, &w).await {
                    Ok(t) => t,
                    // A token still valid serves while a new one cannot be had.
                    Err(e) => match self.lock().get(&key).filter(|h| h.expires > now) {
                        Some(h) => {
                            tracing::warn!(pod = %spec::name(pod), "refreshing a token: {e}");
                            h.token.clone()
                        }
                        None => return Err(e),
                    },
                },
            };
            out.insert(w, token);
        }
        Ok(out)
    }

    async fn fetch(&self, pod: &Pod, (audience, expiration): &Wanted) -> Result<String, SpecError> {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            pod_namespace: spec::namespace(pod).to_string(),
            pod_name: spec::name(pod).to_string(),
            pod_uid: spec::uid(pod).to_string(),
            service_account: account.clone(),
            audiences: if audience.is_empty() {
                Vec::new()
            } else {
                vec![audience.clone()]
            },
            expiration_seconds: *expiration,
        };
        let fetched = SystemTime::now();
        let answer = self.issuer.issue(request).await.map_err(|e| {
            SpecError::Invalid(format!(
                "asking for a token of service account {account:?}: {e}"
            ))
        })?;
        if !answer.refused.is_empty() || answer.token.is_empty() {
            return Err(SpecError::Invalid(format!(
                "a token of service account {account:?} was refused: {}",
                answer.refused
            )));
        }
        let expires = UNIX_EPOCH + Duration::from_secs(answer.expiration_timestamp.max(0) as u64);
        metrics::counter!("skiff_agent_tokens_fetched_total").increment(1);
        self.lock().insert(
            (spec::uid(pod).to_string(), (audience.clone(), *expiration)),
            Held {
                token: answer.token.clone(),
                refresh_at: refresh_at(fetched, expires),
                expires,
            },
        );
        Ok(answer.token)
    }

    /// Drop the tokens of pod `uid`.
    pub fn forget(&self, uid: &str) {
        self.lock().retain(|(u, _), _| u != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewed_at_four_fifths_of_its_life_or_after_a_day() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            refresh_at(t0, t0 + Duration::from_secs(3600)),
            t0 + Duration::from_secs(2880)
        );
        assert_eq!(
            refresh_at(t0, t0 + Duration::from_secs(365 * 24 * 3600)),
            t0 + MAX_AGE
        );
    }

    #[test]
    fn a_pod_wants_each_audience_and_life_once() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [], "volumes": [
                {"name": "a", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"serviceAccountToken": {"path": "vault", "audience": "vault", "expirationSeconds": 60}},
                ]}},
                {"name": "b", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                ]}},
            ]},
        }))
        .unwrap();
        assert_eq!(
            wanted(&pod),
            vec![(String::new(), 3607), ("vault".to_string(), MIN_EXPIRATION)]
        );
    }
}
