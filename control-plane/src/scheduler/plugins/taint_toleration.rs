//! A node's NoSchedule and NoExecute taints keep off pods that do not
//! tolerate them.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::super::cycle::Cycle;
use super::super::pod_info::{NodeInfo, PodInfo};
use super::Filter;

pub struct TaintToleration;

/// Whether `t` tolerates `taint` (the rules of the core API).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    match t.key.as_deref() {
        None | Some("") => t.operator.as_deref() == Some("Exists"),
        Some(k) if k != taint.key => false,
        Some(_) => match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" => true,
            _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        },
    }
}

impl Filter for TaintToleration {
    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle) -> Result<(), String> {
        for taint in &node.taints {
            if taint.effect == "PreferNoSchedule" {
                continue;
            }
            if !pod.tolerations.iter().any(|t| tolerates(t, taint)) {
                return Err(format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    taint.key,
                    taint.value.as_deref().unwrap_or("")
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toleration_rules() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let equal = Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("gpu".into()),
            effect: Some("NoSchedule".into()),
            toleration_seconds: None,
        };
        assert!(tolerates(&equal, &taint));
        let wrong_value = Toleration {
            value: Some("cpu".into()),
            ..equal.clone()
        };
        assert!(!tolerates(&wrong_value, &taint));
        let exists_all = Toleration {
            key: None,
            operator: Some("Exists".into()),
            value: None,
            effect: None,
            toleration_seconds: None,
        };
        assert!(tolerates(&exists_all, &taint));
        let other_effect = Toleration {
            effect: Some("NoExecute".into()),
            ..equal
        };
        assert!(!tolerates(&other_effect, &taint));
    }
}
