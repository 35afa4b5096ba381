//! A Job's pod selector, as Kubernetes sets and checks it. Unless the Job
//! says `spec.manualSelector: true`, the server labels the pod template
//! with the job's uid and name and selects the uid, on create (when the uid
//! is first known): so `kubectl logs job/x` and anything else that follows
//! the selector finds this job's pods and no other's. Whoever set it, the
//! selector must match the template's labels, and it never changes.

use serde_json::{json, Map, Value};

use super::objects::name_of;
use super::resources::Resource;
use super::selector::LabelSelector;
use super::status::{ApiError, ApiResult};

pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The labels older clients select by; set beside the prefixed ones.
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";

type Causes = Vec<(String, String)>;

fn manual(job: &Value) -> bool {
    job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true)
}

fn uid_of(job: &Value) -> &str {
    job.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `v[key]` (`v` an object), made an object if it is not one.
fn object_at<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    &mut v[key]
}

fn map_of(v: &mut Value) -> &mut Map<String, Value> {
    v.as_object_mut().expect("made an object by object_at")
}

/// Label the template and select by uid, keeping what the user set (a
/// conflicting value is then refused by [`check`], as in Kubernetes).
fn generate(job: &mut Value) {
    let (name, uid) = (name_of(job).to_string(), uid_of(job).to_string());
    let Some(spec) = job.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    let template = spec
        .as_object_mut()
        .expect("checked")
        .entry("template")
        .or_insert_with(|| json!({}));
    if template.is_object() {
        let labels = map_of(object_at(object_at(template, "metadata"), "labels"));
        for (k, v) in [
            (LEGACY_JOB_NAME, &name),
            (JOB_NAME, &name),
            (LEGACY_CONTROLLER_UID, &uid),
            (CONTROLLER_UID, &uid),
        ] {
            labels.entry(k).or_insert_with(|| json!(v));
        }
    }
    map_of(object_at(object_at(spec, "selector"), "matchLabels"))
        .entry(CONTROLLER_UID)
        .or_insert_with(|| json!(uid));
}

/// Go's `%#v` of a `map[string]string`, which is how Kubernetes shows the
/// labels in its message.
fn go_map(labels: &Value) -> String {
    let mut pairs: Vec<(&String, &Value)> = labels.as_object().into_iter().flatten().collect();
    pairs.sort_by_key(|(k, _)| *k);
    let body: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or("")))
        .collect();
    format!("map[string]string{{{}}}", body.join(", "))
}

/// What is wrong with the job's selector: absent, malformed, or not
/// matching the template's labels; and, when the server generated it,
/// not the one it generated.
fn check(job: &Value) -> Causes {
    let mut causes = Vec::new();
    let selector = &job["spec"]["selector"];
    let template = &job["spec"]["template"];
    let labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    if !manual(job) {
        let uid = uid_of(job);
        let expected = [
            (LEGACY_CONTROLLER_UID, uid),
            (LEGACY_JOB_NAME, name_of(job)),
            (CONTROLLER_UID, uid),
            (JOB_NAME, name_of(job)),
        ];
        for (k, want) in expected {
            let field = format!("spec.template.metadata.labels[{k}]");
            match labels[k].as_str() {
                Some(v) if v == want => {}
                Some(_) => causes.push((field, format!("{}: must be '{want}'", go_map(&labels)))),
                None => causes.push((field, format!("Required value: must be '{want}'"))),
            }
        }
    }
    if selector.is_null() {
        causes.push(("spec.selector".into(), "Required value".into()));
        return causes;
    }
    match LabelSelector::from_object(selector) {
        Err(e) => causes.push(("spec.selector".into(), e)),
        Ok(s) => {
            let generated = json!({"metadata": {"labels": {CONTROLLER_UID: uid_of(job)}}});
            if !manual(job) && !s.matches(&generated) {
                causes.push((
                    "spec.selector".into(),
                    format!("{selector}: `selector` not auto-generated"),
                ));
            }
            if !s.matches(template) {
                causes.push((
                    "spec.template.metadata.labels".into(),
                    format!(
                        "{}: `selector` does not match template `labels`",
                        go_map(&labels)
                    ),
                ));
            }
        }
    }
    causes
}

fn refuse(r: &Resource, job: &Value, causes: Causes) -> ApiResult<()> {
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(r, name_of(job), &causes))
    }
}

/// A new Job (its uid and name set): generate its selector unless it is
/// manual, then check it (422 when it does not hold).
pub fn on_create(r: &Resource, job: &mut Value) -> ApiResult<()> {
    if !manual(job) {
        generate(job);
    }
    refuse(r, job, check(job))
}

/// A replaced Job (not its status): the selector stays as it was and
/// still matches. A job stored before selectors were generated, with none,
/// may be updated as long as it still has none.
pub fn on_update(r: &Resource, old: &Value, new: &Value) -> ApiResult<()> {
    let (was, is) = (&old["spec"]["selector"], &new["spec"]["selector"]);
    if was.is_null() && is.is_null() {
        return Ok(());
    }
    if was != is {
        return refuse(
            r,
            new,
            vec![("spec.selector".into(), format!("{is}: field is immutable"))],
        );
    }
    refuse(r, new, check(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;

    fn job(spec: Value) -> Value {
        json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": spec})
    }

    fn template(labels: Value) -> Value {
        json!({"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    }

    #[test]
    fn a_job_without_a_selector_selects_its_own_uid() {
        let r = find("batch", "v1", "jobs").unwrap();
        let mut j = job(json!({"template": {"spec": {"containers": []}}}));
        on_create(r, &mut j).unwrap();
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {CONTROLLER_UID: "u-1"}})
        );
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"],
            json!({CONTROLLER_UID: "u-1", LEGACY_CONTROLLER_UID: "u-1",
                JOB_NAME: "pi", LEGACY_JOB_NAME: "pi"})
        );
        // The user's own labels are kept beside them.
        let mut j = job(json!({"template": template(json!({"app": "x"}))}));
        on_create(r, &mut j).unwrap();
        assert_eq!(j["spec"]["template"]["metadata"]["labels"]["app"], "x");
        assert_eq!(j["spec"]["template"]["metadata"]["labels"][JOB_NAME], "pi");
    }

    #[test]
    fn a_selector_must_match_the_template() {
        let r = find("batch", "v1", "jobs").unwrap();
        let mut j = job(json!({"manualSelector": true,
            "selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "y"}))}));
        let e = on_create(r, &mut j).unwrap_err();
        assert_eq!(e.code.as_u16(), 422);
        assert_eq!(
            e.message,
            "Job.batch \"pi\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"y\"}: `selector` does not match template `labels`"
        );
        // A selector of the user's, not the server's, needs manualSelector
        // (as in Kubernetes), even one that matches.
        let mut j = job(json!({"selector": {"matchLabels": {"app": "x"}},
            "template": template(json!({"app": "x"}))}));
        let e = on_create(r, &mut j).unwrap_err();
        assert!(
            e.message.contains("spec.selector: Invalid value: ")
                && e.message.contains("`selector` not auto-generated"),
            "{}",
            e.message
        );
        let mut j = job(json!({"selector": {"matchLabels": {"app": "x"}},
            "template": template(json!({"app": "y"}))}));
        let e = on_create(r, &mut j).unwrap_err();
        assert!(
            e.message
                .ends_with("`selector` does not match template `labels`"),
            "{}",
            e.message
        );
        // A generated label set by hand to another value.
        let mut j = job(json!({"template": template(json!({CONTROLLER_UID: "other"}))}));
        let e = on_create(r, &mut j).unwrap_err();
        assert!(e.message.contains("must be 'u-1'"), "{}", e.message);
        // Manual: the user's selector is kept, but must still match.
        let mut j = job(json!({"manualSelector": true,
            "selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"}))}));
        on_create(r, &mut j).unwrap();
        assert_eq!(j["spec"]["selector"], json!({"matchLabels": {"app": "x"}}));
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"],
            json!({"app": "x"})
        );
        let mut j = job(json!({"manualSelector": true, "template": template(json!({}))}));
        let e = on_create(r, &mut j).unwrap_err();
        assert!(e.message.contains("spec.selector"), "{}", e.message);
    }

    #[test]
    fn the_selector_is_immutable() {
        let r = find("batch", "v1", "jobs").unwrap();
        let mut old = job(json!({"template": template(json!({}))}));
        on_create(r, &mut old).unwrap();
        on_update(r, &old, &old.clone()).unwrap();
        let mut changed = old.clone();
        changed["spec"]["selector"]["matchLabels"]["extra"] = json!("1");
        let e = on_update(r, &old, &changed).unwrap_err();
        assert_eq!(e.code.as_u16(), 422);
        assert!(e.message.contains("field is immutable"), "{}", e.message);
        let mut dropped = old.clone();
        dropped["spec"]["template"]["metadata"]["labels"] = json!({});
        assert_eq!(on_update(r, &old, &dropped).unwrap_err().code.as_u16(), 422);
        // A job stored with no selector may still be updated without one.
        let legacy = job(json!({"template": template(json!({}))}));
        let mut next = legacy.clone();
        next["spec"]["parallelism"] = json!(2);
        on_update(r, &legacy, &next).unwrap();
    }
}
