//! The authorizers in the order Kubernetes' API server runs them.

use std::sync::Arc;

use super::attributes::Attributes;
use super::node::{self, Graph};
use super::rbac::Rbac;
use super::{Decision, Error};
use crate::pki::MASTERS_GROUP;

pub struct Chain {
    rbac: Rbac,
    graph: Arc<dyn Graph>,
}

impl Chain {
    pub fn new(rbac: Rbac, graph: Arc<dyn Graph>) -> Self {
        Chain { rbac, graph }
    }

    pub fn rbac(&self) -> &Rbac {
        &self.rbac
    }

    /// Allow, or refuse with the reason; never NoOpinion.
    pub async fn authorize(&self, attrs: &Attributes) -> Result<Decision, Error> {
        // The privileged group is allowed everything, before any role
        // exists (as kube-apiserver's first authorizer).
        if attrs.user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(Decision::Allow);
        }
        let mut reason = String::new();
        if let Some(name) = attrs.user.node_name() {
            match node::authorize(self.graph.as_ref(), name, attrs).await? {
                Decision::NoOpinion(why) => reason = why,
                decided => return Ok(decided),
            }
        }
        Ok(match self.rbac.authorize(attrs) {
            Decision::Allow => Decision::Allow,
            Decision::Deny(why) => Decision::Deny(why),
            Decision::NoOpinion(why) => Decision::Deny(if why.is_empty() { reason } else { why }),
        })
    }

    /// Whether `attrs` is allowed, as a refusal message when it is not.
    pub async fn check(&self, attrs: &Attributes) -> Result<Result<(), String>, Error> {
        Ok(match self.authorize(attrs).await? {
            Decision::Allow => Ok(()),
            Decision::Deny(why) | Decision::NoOpinion(why) => Err(attrs.forbidden_message(&why)),
        })
    }
}
