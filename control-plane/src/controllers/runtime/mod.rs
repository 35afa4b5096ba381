//! The machinery every controller shares: informer caches fed by the local
//! store's watch hub ([`informer`]), de-duplicating work queues with
//! backoff ([`queue`]), and the worker loop that calls a controller's
//! reconcile function ([`runner`]).

pub mod informer;
pub mod queue;
pub mod runner;

pub use informer::{
    key_of, split_key, AnyInformer, Cached, Change, Informer, Object, PartialObjectMetadata,
};
pub use queue::WorkQueue;
pub use runner::Action;
