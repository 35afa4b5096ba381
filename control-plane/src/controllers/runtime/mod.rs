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

/// Help text and units of the controllers' series.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "skiff_controller_queue_depth",
        Unit::Count,
        "Objects waiting in a controller's work queue."
    );
    describe_histogram!(
        "skiff_controller_reconcile_seconds",
        Unit::Seconds,
        "Time a controller took to reconcile one object."
    );
    describe_counter!(
        "skiff_controller_reconcile_errors_total",
        Unit::Count,
        "Reconciles that failed (the object is queued again with back-off)."
    );
    describe_counter!(
        "skiff_controller_commits_total",
        Unit::Count,
        "Leader-only writes committed, by the Raft term of the leadership that made them."
    );
    describe_counter!(
        "skiff_controller_fenced_writes_total",
        Unit::Count,
        "Leader-only writes refused because the leadership that made them had ended."
    );
    describe_counter!(
        "skiff_controllers_starts_total",
        Unit::Count,
        "Times this master started the scheduler and controllers on becoming leader."
    );
    describe_gauge!(
        "skiff_controllers_running",
        Unit::Count,
        "1 while the scheduler and controllers run on this master (it is the leader)."
    );
}
