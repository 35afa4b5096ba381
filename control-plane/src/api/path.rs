//! Request paths: `/api/v1/...` and `/apis/<group>/<version>/...` down to
//! a resource, an object and a subresource.

use super::resources::{self, Resource};
use super::{reviews, usage};

#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/`: the paths served.
    Root,
    Version,
    CoreVersions,
    Groups,
    /// `/api/v1` or `/apis/<group>/<version>`.
    GroupVersion {
        group: &'a str,
        version: &'a str,
    },
    Object(ObjectPath<'a>),
    /// Under `/apis/metrics.k8s.io/v1beta1/`.
    Usage(usage::UsagePath<'a>),
    /// An access or identity review (`authorization.k8s.io`,
    /// `authentication.k8s.io`).
    Review(reviews::ReviewPath<'a>),
    /// `/openapi/v3` (the index) or `/openapi/v3/<api/v1|apis/g/v>`.
    OpenApiV3(Option<&'a str>),
    OpenApiV2,
    /// `/debug/flags/v`: the log filter.
    DebugFlagsV,
    /// `/skiff/v1/http-sd`: Prometheus service discovery.
    HttpSd,
    /// `/.well-known/openid-configuration`: where the token issuer's keys are.
    OpenIdConfiguration,
    /// `/openid/v1/jwks`: the keys that verify service account tokens.
    Jwks,
}

/// A resource, or one object of it, or one of its subresources.
#[derive(Debug, PartialEq, Eq)]
pub struct ObjectPath<'a> {
    pub resource: &'static Resource,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub sub: Option<&'a str>,
}

/// Why a path names nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct Unknown;

pub fn parse(path: &str) -> Result<Target<'_>, Unknown> {
    let path = path.trim_matches('/');
    if let Some(rest) = path.strip_prefix("openapi/v3") {
        return match rest.trim_start_matches('/') {
            "" => Ok(Target::OpenApiV3(None)),
            gv => Ok(Target::OpenApiV3(Some(gv))),
        };
    }
    let segs: Vec<&str> = path.split('/').collect();
    match segs.as_slice() {
        [""] => Ok(Target::Root),
        ["version"] => Ok(Target::Version),
        ["api"] => Ok(Target::CoreVersions),
        ["apis"] => Ok(Target::Groups),
        ["openapi", ..] => Ok(Target::OpenApiV2),
        ["debug", "flags", "v"] => Ok(Target::DebugFlagsV),
        ["skiff", "v1", "http-sd"] => Ok(Target::HttpSd),
        [".well-known", "openid-configuration"] => Ok(Target::OpenIdConfiguration),
        ["openid", "v1", "jwks"] => Ok(Target::Jwks),
        ["api", "v1"] => Ok(Target::GroupVersion {
            group: "",
            version: "v1",
        }),
        ["apis", g, v] => Ok(Target::GroupVersion {
            group: g,
            version: v,
        }),
        ["api", "v1", rest @ ..] => object("", "v1", rest),
        ["apis", usage::GROUP, usage::VERSION, rest @ ..] => {
            usage::parse(rest).map(Target::Usage).ok_or(Unknown)
        }
        ["apis", g, reviews::VERSION, rest @ ..] if reviews::is_review_group(g) => {
            reviews::parse(g, rest).map(Target::Review).ok_or(Unknown)
        }
        ["apis", g, v, rest @ ..] => object(g, v, rest),
        _ => Err(Unknown),
    }
}

fn object<'a>(group: &str, version: &str, rest: &[&'a str]) -> Result<Target<'a>, Unknown> {
    let lookup = |plural: &str| resources::find(group, version, plural).ok_or(Unknown);
    let (namespace, rest) = match rest {
        // `namespaces/<ns>/<resource>...`, unless it is the namespace's own subresource.
        ["namespaces", ns, res, tail @ ..]
            if !(tail.is_empty() && matches!(*res, "status" | "finalize")) =>
        {
            (
                Some(*ns),
                std::iter::once(*res)
                    .chain(tail.iter().copied())
                    .collect::<Vec<_>>(),
            )
        }
        _ => (None, rest.to_vec()),
    };
    let resource = lookup(rest.first().ok_or(Unknown)?)?;
    if namespace.is_some() && !resource.namespaced {
        return Err(Unknown);
    }
    let (name, sub) = match rest.len() {
        1 => (None, None),
        2 => (Some(rest[1]), None),
        3 if resource.has(rest[2])
            || (resource.plural == "namespaces" && rest[2] == "finalize") =>
        {
            (Some(rest[1]), Some(rest[2]))
        }
        _ => return Err(Unknown),
    };
    if name.is_some_and(str::is_empty) {
        return Err(Unknown);
    }
    Ok(Target::Object(ObjectPath {
        resource,
        namespace,
        name,
        sub,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(path: &str) -> (String, Option<String>, Option<String>, Option<String>) {
        match parse(path).unwrap() {
            Target::Object(o) => (
                o.resource.plural.to_string(),
                o.namespace.map(String::from),
                o.name.map(String::from),
                o.sub.map(String::from),
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            obj("/api/v1/namespaces"),
            ("namespaces".into(), None, None, None)
        );
        assert_eq!(
            obj("/api/v1/namespaces/kube-system"),
            ("namespaces".into(), None, s("kube-system"), None)
        );
        assert_eq!(
            obj("/api/v1/namespaces/x/status"),
            ("namespaces".into(), None, s("x"), s("status"))
        );
        assert_eq!(
            obj("/api/v1/namespaces/d/pods"),
            ("pods".into(), s("d"), None, None)
        );
        assert_eq!(
            obj("/api/v1/namespaces/d/pods/p/log"),
            ("pods".into(), s("d"), s("p"), s("log"))
        );
        assert_eq!(obj("/api/v1/pods"), ("pods".into(), None, None, None));
        assert_eq!(
            obj("/apis/apps/v1/namespaces/d/deployments/w/scale"),
            ("deployments".into(), s("d"), s("w"), s("scale"))
        );
        assert_eq!(parse("/api/v1/namespaces/d/nodes"), Err(Unknown));
        assert_eq!(
            parse("/api/v1/namespaces/d/configmaps/c/scale"),
            Err(Unknown)
        );
        assert_eq!(parse("/apis/apps/v1/widgets"), Err(Unknown));
        assert_eq!(parse("/"), Ok(Target::Root));
        assert_eq!(parse("/openid/v1/jwks"), Ok(Target::Jwks));
        assert_eq!(
            parse("/apis/apps/v1"),
            Ok(Target::GroupVersion {
                group: "apps",
                version: "v1"
            })
        );
    }
}
