//! Image references as Docker and Kubernetes read them:
//! `[registry[:port]/]path[:tag][@algorithm:hex]`.
//!
//! The agent reasons about an image's tag (an untagged image means
//! `:latest`, which defaults the pull policy to Always), so the tag must
//! be told apart from a registry's port: in `localhost:5000/app` the colon
//! belongs to the registry, and the image has no tag. The rules follow the
//! distribution project's reference grammar: the first path component is a
//! registry only if a slash follows it and it has a dot, a colon, an upper
//! case letter, or is `localhost`; a tag is a colon in the last component.

use std::fmt;

/// The longest tag the grammar allows.
const MAX_TAG: usize = 128;

/// A parsed image reference; its parts borrow from the text parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRef<'a> {
    registry: Option<&'a str>,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Why a reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("the image reference is empty")]
    Empty,
    #[error("invalid registry {0:?} (a host name or address, then an optional :port)")]
    Registry(String),
    #[error("invalid repository path {0:?} (lower case letters, digits and . _ - between them)")]
    Path(String),
    #[error("invalid tag {0:?} (up to 128 of letters, digits, _ . -, not starting with . or -)")]
    Tag(String),
    #[error("invalid digest {0:?} (algorithm:hex, sha256 with 64 hex digits)")]
    Digest(String),
}

impl<'a> ImageRef<'a> {
    pub fn parse(text: &'a str) -> Result<ImageRef<'a>, ImageRefError> {
        if text.is_empty() {
            return Err(ImageRefError::Empty);
        }
        let (named, digest) = match text.split_once('@') {
            Some((n, d)) => {
                check_digest(d)?;
                (n, Some(d))
            }
            None => (text, None),
        };
        // A colon after the last slash is a tag; one before it is a port.
        let last = named.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match named[last..].rfind(':') {
            Some(i) => {
                let tag = &named[last + i + 1..];
                check_tag(tag)?;
                (&named[..last + i], Some(tag))
            }
            None => (named, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if is_registry(first) => {
                check_registry(first)?;
                (Some(first), rest)
            }
            _ => (None, name),
        };
        check_path(path)?;
        Ok(ImageRef {
            registry,
            path,
            tag,
            digest,
        })
    }

    /// The registry host (and port), if the reference names one.
    pub fn registry(&self) -> Option<&'a str> {
        self.registry
    }

    /// The repository path within the registry (`library/busybox`, `app`).
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The tag as written, if any.
    pub fn tag(&self) -> Option<&'a str> {
        self.tag
    }

    /// The digest (`sha256:...`), if the reference is pinned by one.
    pub fn digest(&self) -> Option<&'a str> {
        self.digest
    }

    /// The tag the engine will use: as written, else `latest` unless the
    /// reference is pinned by digest (then there is none).
    pub fn effective_tag(&self) -> Option<&'a str> {
        match (self.tag, self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// Kubernetes' default pull policy for this image: Always for the
    /// `latest` tag (written or implied), IfNotPresent otherwise.
    pub fn pulls_always_by_default(&self) -> bool {
        self.effective_tag() == Some("latest")
    }
}

impl fmt::Display for ImageRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = self.registry {
            write!(f, "{r}/")?;
        }
        f.write_str(self.path)?;
        if let Some(t) = self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Whether `image`'s pull policy defaults to Always. An image that does
/// not parse defaults to IfNotPresent, as the API server's defaulting does
/// (it ignores the parse error and leaves the name to be refused later).
pub fn pull_always_by_default(image: &str) -> bool {
    ImageRef::parse(image).is_ok_and(|r| r.pulls_always_by_default())
}

fn is_registry(first: &str) -> bool {
    first == "localhost"
        || first.contains(['.', ':'])
        || first.chars().any(|c| c.is_ascii_uppercase())
}

fn check_registry(r: &str) -> Result<(), ImageRefError> {
    let bad = || ImageRefError::Registry(r.to_string());
    // An IPv6 address is bracketed, and its colons are not the port's.
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match r.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(port) = port {
        if port.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), ImageRefError> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        !b.is_empty()
            && b.first().is_some_and(alnum)
            && b.last().is_some_and(alnum)
            && b.iter().all(|x| alnum(x) || matches!(x, b'.' | b'_' | b'-'))
            // Separators are one '.', one or two '_', or any run of '-'.
            && !c.contains("..")
            && !c.contains("___")
            && !c.contains("._")
            && !c.contains("_.")
            && !c.contains(".-")
            && !c.contains("-.")
            && !c.contains("_-")
            && !c.contains("-_")
    };
    if path.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(ImageRefError::Path(path.to_string()))
    }
}

fn check_tag(tag: &str) -> Result<(), ImageRefError> {
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ImageRefError::Tag(tag.to_string()))
    }
}

fn check_digest(d: &str) -> Result<(), ImageRefError> {
    let bad = || ImageRefError::Digest(d.to_string());
    let (algorithm, hex) = d.split_once(':').ok_or_else(bad)?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
    let hex_ok = hex.chars().all(|c| c.is_ascii_hexdigit())
        && match algorithm {
            "sha256" => hex.len() == 64,
            "sha512" => hex.len() == 128,
            _ => hex.len() >= 32,
        };
    if algorithm_ok && hex_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:4b6d5ecc1d8a1d1a2b0c1d6e3f0b9a8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

    fn parts(s: &str) -> (Option<&str>, &str, Option<&str>, Option<&str>) {
        let r = ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (r.registry(), r.path(), r.tag(), r.digest())
    }

    #[test]
    fn a_registry_port_is_not_a_tag() {
        assert_eq!(
            parts("localhost:5000/app"),
            (Some("localhost:5000"), "app", None, None)
        );
        assert_eq!(
            parts("localhost:5000/app:v1"),
            (Some("localhost:5000"), "app", Some("v1"), None)
        );
        assert_eq!(
            parts("registry.example.com:443/team/app:1.2.3"),
            (
                Some("registry.example.com:443"),
                "team/app",
                Some("1.2.3"),
                None
            )
        );
        assert_eq!(
            parts("[::1]:5000/app:v2"),
            (Some("[::1]:5000"), "app", Some("v2"), None)
        );
        for untagged in ["localhost:5000/app", "10.0.0.1:5000/a/b", "busybox"] {
            let r = ImageRef::parse(untagged).unwrap();
            assert_eq!(r.effective_tag(), Some("latest"), "{untagged}");
            assert!(r.pulls_always_by_default(), "{untagged}");
        }
        assert!(!pull_always_by_default("localhost:5000/app:v1"));
    }

    #[test]
    fn names_without_a_registry() {
        assert_eq!(parts("busybox"), (None, "busybox", None, None));
        assert_eq!(
            parts("busybox:local"),
            (None, "busybox", Some("local"), None)
        );
        assert_eq!(
            parts("library/busybox:1.36"),
            (None, "library/busybox", Some("1.36"), None)
        );
        // Only a dot, a colon, upper case or `localhost` make a registry.
        assert_eq!(parts("team/app"), (None, "team/app", None, None));
        assert_eq!(
            parts("docker.io/library/busybox:latest"),
            (Some("docker.io"), "library/busybox", Some("latest"), None)
        );
        // No slash: `localhost:5000` is the image `localhost`, tag 5000.
        assert_eq!(
            parts("localhost:5000"),
            (None, "localhost", Some("5000"), None)
        );
    }

    #[test]
    fn digests_pin_the_image() {
        let pinned = format!("app@{SHA}");
        let r = ImageRef::parse(&pinned).unwrap();
        assert_eq!((r.path(), r.tag(), r.digest()), ("app", None, Some(SHA)));
        assert_eq!(r.effective_tag(), None);
        assert!(!r.pulls_always_by_default());

        let both = format!("localhost:5000/app:v1@{SHA}");
        assert_eq!(
            parts(&both),
            (Some("localhost:5000"), "app", Some("v1"), Some(SHA))
        );
        // A written `latest` still means Always, digest or not.
        assert!(pull_always_by_default(&format!("app:latest@{SHA}")));
        assert_eq!(ImageRef::parse(&both).unwrap().to_string(), both);
    }

    #[test]
    fn the_default_pull_policy_follows_the_tag() {
        for (image, always) in [
            ("busybox", true),
            ("busybox:latest", true),
            ("busybox:local", false),
            ("localhost:5000/app", true),
            ("localhost:5000/app:latest", true),
            ("localhost:5000/app:v1", false),
            ("my.registry:5000/team/app:2", false),
        ] {
            assert_eq!(pull_always_by_default(image), always, "{image}");
        }
    }

    #[test]
    fn malformed_references_are_refused_with_the_part_at_fault() {
        use ImageRefError as E;
        let err = |s: &str| ImageRef::parse(s).unwrap_err();
        assert_eq!(err(""), E::Empty);
        assert!(matches!(err("app:"), E::Tag(_)));
        assert!(matches!(err("app:-x"), E::Tag(_)));
        assert!(matches!(
            err(&format!("app:{}", "a".repeat(129))),
            E::Tag(_)
        ));
        assert!(matches!(err("App"), E::Path(_)));
        assert!(matches!(err("team//app"), E::Path(_)));
        assert!(matches!(err("app-/x"), E::Path(_)));
        assert!(matches!(err("localhost:port/app"), E::Registry(_)));
        assert!(matches!(err("localhost:99999/app"), E::Registry(_)));
        assert!(matches!(err("app@sha256:abc"), E::Digest(_)));
        assert!(matches!(err("app@nocolon"), E::Digest(_)));
        // An unparseable image defaults to IfNotPresent, as the API does.
        assert!(!pull_always_by_default("App"));
    }
}
