//! Who may do what: the one chain every request passes before it reaches
//! the registry, over a narrow request type ([`Attributes`]: user, groups,
//! verb, resource, subresource, namespace, name, or a path).
//!
//! - [`attributes`]: that request type, and Kubernetes' refusal message.
//! - [`chain`]: the authorizers in order: the `system:masters` group, the
//!   [`node`] authorizer for nodes, then [`rbac`]; the first to allow wins,
//!   a node refused is refused, and nothing allowing means 403.
//! - [`escalation`]: no one writes a role or binding that grants more than
//!   they hold.
//! - [`impersonation`]: `Impersonate-*` headers (`kubectl --as`).
//! - [`service_account`]: the tokens the TokenRequest API issues (JWTs).
//!
//! This module reads the store only through the traits it defines
//! ([`rbac::Policy`], [`node::Graph`]); the API and the gateway implement
//! them and build the attributes.

pub mod attributes;
pub mod chain;
pub mod escalation;
pub mod impersonation;
pub mod node;
pub mod rbac;
pub mod service_account;

pub use attributes::{Attributes, On, ResourceRef};
pub use chain::Chain;

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, whatever later authorizers would say; the reason is shown.
    Deny(String),
    /// Neither: the next authorizer decides (a reason, if any, is shown
    /// when none allows).
    NoOpinion(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What a decision needs could not be read now (503).
    #[error("{0}")]
    Unavailable(String),
}
