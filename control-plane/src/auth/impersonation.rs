//! Impersonation (`kubectl --as`, `--as-group`): a caller allowed to
//! `impersonate` users, groups or service accounts acts as someone else.
//! Every requested name is authorized on its own; the request then runs
//! as the impersonated user alone, with none of the caller's groups.

use super::attributes::{Attributes, ResourceRef};
use super::rbac::bootstrap::AUTHENTICATED;
use crate::pki::Identity;

pub const USER: &str = "impersonate-user";
pub const GROUP: &str = "impersonate-group";
pub const UID: &str = "impersonate-uid";
pub const EXTRA_PREFIX: &str = "impersonate-extra-";

/// What a request's `Impersonate-*` headers ask for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub uid: Option<String>,
    /// (key, value) of each `Impersonate-Extra-<key>` header.
    pub extra: Vec<(String, String)>,
}

impl Wanted {
    /// Read the headers (names lowercased); None when there are none, an
    /// error when they ask for groups or extras without a user.
    pub fn from_headers<'a>(
        headers: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Wanted>, String> {
        let mut w = Wanted::default();
        let mut any = false;
        for (name, value) in headers {
            match name {
                USER => w.user = Some(value.to_string()),
                GROUP => w.groups.push(value.to_string()),
                UID => w.uid = Some(value.to_string()),
                n if n.starts_with(EXTRA_PREFIX) => w
                    .extra
                    .push((n[EXTRA_PREFIX.len()..].to_string(), value.to_string())),
                _ => continue,
            }
            any = true;
        }
        if !any {
            return Ok(None);
        }
        if w.user.as_deref().is_none_or(str::is_empty) {
            return Err(
                "requested impersonation of groups, a uid or extras without impersonating a user"
                    .into(),
            );
        }
        Ok(Some(w))
    }

    /// The checks to make, each an `impersonate` request of `caller`.
    pub fn checks(&self, caller: &Identity) -> Vec<Attributes> {
        let ask = |r: ResourceRef| Attributes::resource(caller, "impersonate", r);
        let mut out = Vec::new();
        if let Some(user) = &self.user {
            out.push(match service_account(user) {
                Some((ns, name)) => ask(ResourceRef::new("", "serviceaccounts")
                    .in_namespace(Some(ns))
                    .named(Some(name))),
                None => ask(ResourceRef::new("", "users").named(Some(user))),
            });
        }
        for g in &self.groups {
            out.push(ask(ResourceRef::new("", "groups").named(Some(g))));
        }
        if let Some(uid) = &self.uid {
            out.push(ask(
                ResourceRef::new("authentication.k8s.io", "uids").named(Some(uid))
            ));
        }
        for (key, value) in &self.extra {
            out.push(ask(ResourceRef::new("authentication.k8s.io", "userextras")
                .subresource(Some(key))
                .named(Some(value))));
        }
        out
    }

    /// Who the request runs as once every check passed.
    pub fn identity(&self) -> Identity {
        let user = self.user.clone().unwrap_or_default();
        let mut groups = self.groups.clone();
        if let Some((ns, _)) = service_account(&user) {
            groups.push("system:serviceaccounts".into());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        if user != "system:anonymous" && !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        Identity { user, groups }
    }
}

/// (namespace, name) of a service account's user name.
fn service_account(user: &str) -> Option<(&str, &str)> {
    user.strip_prefix("system:serviceaccount:")?.split_once(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_a_user_and_groups() {
        let h = [
            (USER, "jane"),
            (GROUP, "devs"),
            (GROUP, "ops"),
            ("accept", "x"),
        ];
        let w = Wanted::from_headers(h.into_iter()).unwrap().unwrap();
        assert_eq!(w.user.as_deref(), Some("jane"));
        assert_eq!(w.groups, ["devs", "ops"]);
        let who = w.identity();
        assert_eq!(who.groups, ["devs", "ops", AUTHENTICATED]);
        assert_eq!(w.checks(&Identity::admin()).len(), 3);
        assert!(Wanted::from_headers([(GROUP, "devs")].into_iter()).is_err());
        assert_eq!(
            Wanted::from_headers([("accept", "x")].into_iter()),
            Ok(None)
        );
    }

    #[test]
    fn a_service_account_is_checked_as_one() {
        let w = Wanted {
            user: Some("system:serviceaccount:ci:runner".into()),
            ..Default::default()
        };
        let c = &w.checks(&Identity::admin())[0];
        assert_eq!(
            c.on,
            super::super::attributes::On::Resource(
                ResourceRef::new("", "serviceaccounts")
                    .in_namespace(Some("ci"))
                    .named(Some("runner"))
            )
        );
        assert!(w
            .identity()
            .groups
            .contains(&"system:serviceaccounts:ci".to_string()));
    }
}
