//! nodeSelector and required node affinity (filter), preferred node
//! affinity (score).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use super::super::cycle::Cycle;
use super::super::pod_info::{NodeInfo, PodInfo};
use super::{normalize, Filter, Score};

pub struct NodeAffinity;

fn requirement_holds(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node with `labels` and `name` satisfies `term` (all of its
/// requirements; a term with none matches nothing).
pub fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_holds(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_holds(r, Some(name)))
}

impl Filter for NodeAffinity {
    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle) -> Result<(), String> {
        let selector_ok = pod
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v));
        // Terms are ORed.
        let affinity_ok = pod.required_terms.is_empty()
            || pod
                .required_terms
                .iter()
                .any(|t| term_matches(t, &node.labels, &node.name));
        if selector_ok && affinity_ok {
            Ok(())
        } else {
            Err("node(s) didn't match Pod's node affinity/selector".into())
        }
    }
}

pub struct PreferredAffinity;

impl Score for PreferredAffinity {
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle) -> i64 {
        pod.preferred_terms
            .iter()
            .filter(|p| term_matches(&p.preference, &node.labels, &node.name))
            .map(|p| p.weight as i64)
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize(scores, false);
    }
}
