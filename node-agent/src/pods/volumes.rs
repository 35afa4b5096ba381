//! A pod's volumes on the node, under `<data-dir>/pods/<uid>/volumes/`:
//! emptyDir directories, hostPath as it is, and ConfigMap, Secret,
//! downwardAPI and projected volumes as files. File volumes are written
//! as the kubelet's atomic writer does: the files go into a fresh
//! directory, a `..data` symlink is swapped to it in one rename, and each
//! top-level name is a symlink through `..data`; so a running container
//! sees the old files or the new ones, never half of each.
//!
//! Secret, projected and downwardAPI volumes live on a tmpfs of their own
//! (as the kubelet puts them), so that no Secret and no token ever reaches
//! the node's disk; the files are written with their final modes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use k8s_openapi::api::core::v1::{KeyToPath, Pod, Volume};

use super::spec::{self, Lookup, PodFields, SpecError};
use super::tokens::{self, Projected};
use crate::runtime::Mount;

/// One file of a volume: its content and mode.
type Files = BTreeMap<String, (Vec<u8>, u32)>;

pub fn pod_dir(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir.join("pods").join(uid)
}

fn volume_dir(data_dir: &Path, uid: &str, name: &str) -> PathBuf {
    pod_dir(data_dir, uid).join("volumes").join(name)
}

fn items_of(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    what: &str,
) -> Result<Files, SpecError> {
    let mut out = Files::new();
    match items {
        None => {
            for (k, v) in data {
                out.insert(k, (v, mode));
            }
        }
        Some(items) => {
            for i in items {
                let v = data
                    .get(&i.key)
                    .ok_or_else(|| SpecError::Invalid(format!("{what}: no key {:?}", i.key)))?;
                out.insert(
                    i.path.clone(),
                    (v.clone(), i.mode.map(|m| m as u32).unwrap_or(mode)),
                );
            }
        }
    }
    Ok(out)
}

fn object_data(
    lookup: &dyn Lookup,
    kind: &'static str,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, SpecError> {
    let Some(o) = lookup.object(kind, ns, name) else {
        return if optional {
            Ok(None)
        } else {
            Err(SpecError::Missing {
                kind: if kind == "Secret" {
                    "secret"
                } else {
                    "configmap"
                },
                name: name.to_string(),
            })
        };
    };
    let mut out = BTreeMap::new();
    let b64 = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
    };
    for (k, v) in o["data"].as_object().into_iter().flatten() {
        let bytes = if kind == "Secret" {
            b64(v)
        } else {
            v.as_str().map(|s| s.as_bytes().to_vec())
        };
        if let Some(b) = bytes {
            out.insert(k.clone(), b);
        }
    }
    for (k, v) in o["binaryData"].as_object().into_iter().flatten() {
        if let Some(b) = b64(v) {
            out.insert(k.clone(), b);
        }
    }
    Ok(Some(out))
}

fn downward_files(
    fields: &PodFields<'_>,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    mode: u32,
    cpus: u64,
    memory: u64,
) -> Result<Files, SpecError> {
    let mut out = Files::new();
    for i in items {
        let v = if let Some(f) = &i.field_ref {
            spec::field_value(fields, &f.field_path)?
        } else if let Some(r) = &i.resource_field_ref {
            spec::resource_value(fields.pod, None, r, cpus, memory)?
        } else {
            continue;
        };
        out.insert(
            i.path.clone(),
            (v.into_bytes(), i.mode.map(|m| m as u32).unwrap_or(mode)),
        );
    }
    Ok(out)
}

/// Where file volumes' contents come from: the objects the node holds,
/// the pod's tokens, and the node's size (for resource fields).
pub struct Sources<'a> {
    pub lookup: &'a dyn Lookup,
    pub tokens: &'a Projected,
    pub cpus: u64,
    pub memory: u64,
}

/// The files a file volume holds, or None for a volume that is a directory.
fn files_of(
    v: &Volume,
    fields: &PodFields<'_>,
    sources: &Sources<'_>,
) -> Result<Option<Files>, SpecError> {
    let Sources {
        lookup,
        tokens,
        cpus,
        memory,
    } = *sources;
    let ns = spec::namespace(fields.pod);
    if let Some(s) = &v.config_map {
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let data = object_data(
            lookup,
            "ConfigMap",
            ns,
            &s.name,
            s.optional.unwrap_or(false),
        )?;
        return Ok(Some(match data {
            Some(d) => items_of(d, s.items.as_ref(), mode, &s.name)?,
            None => Files::new(),
        }));
    }
    if let Some(s) = &v.secret {
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let name = s.secret_name.clone().unwrap_or_default();
        let data = object_data(lookup, "Secret", ns, &name, s.optional.unwrap_or(false))?;
        return Ok(Some(match data {
            Some(d) => items_of(d, s.items.as_ref(), mode, &name)?,
            None => Files::new(),
        }));
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        return Ok(Some(downward_files(
            fields,
            d.items.as_deref().unwrap_or(&[]),
            mode,
            cpus,
            memory,
        )?));
    }
    if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        let mut out = Files::new();
        for src in p.sources.iter().flatten() {
            if let Some(s) = &src.config_map {
                if let Some(d) = object_data(
                    lookup,
                    "ConfigMap",
                    ns,
                    &s.name,
                    s.optional.unwrap_or(false),
                )? {
                    out.extend(items_of(d, s.items.as_ref(), mode, &s.name)?);
                }
            }
            if let Some(s) = &src.secret {
                if let Some(d) =
                    object_data(lookup, "Secret", ns, &s.name, s.optional.unwrap_or(false))?
                {
                    out.extend(items_of(d, s.items.as_ref(), mode, &s.name)?);
                }
            }
            if let Some(t) = &src.service_account_token {
                let token = tokens.get(&tokens::wanted_of(t)).ok_or_else(|| {
                    SpecError::Invalid(format!("volume {:?}: no service account token yet", v.name))
                })?;
                out.insert(t.path.clone(), (token.as_bytes().to_vec(), mode));
            }
            if let Some(d) = &src.downward_api {
                out.extend(downward_files(
                    fields,
                    d.items.as_deref().unwrap_or(&[]),
                    mode,
                    cpus,
                    memory,
                )?);
            }
        }
        return Ok(Some(out));
    }
    Ok(None)
}

fn io(e: std::io::Error, what: &Path) -> SpecError {
    SpecError::Invalid(format!("{}: {e}", what.display()))
}

/// What a file volume holds now (through `..data`).
fn current_files(dir: &Path) -> Option<Files> {
    let data = dir.join("..data");
    let mut out = Files::new();
    fn walk(base: &Path, dir: &Path, out: &mut Files) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(base, &p, out)?;
            } else {
                let rel = p
                    .strip_prefix(base)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                let mode = e.metadata()?.permissions().mode() & 0o7777;
                out.insert(rel, (std::fs::read(&p)?, mode));
            }
        }
        Ok(())
    }
    walk(&data, &data, &mut out).ok()?;
    Some(out)
}

/// Write `files` into `dir` atomically, unless it holds them already.
fn write_files(dir: &Path, files: &Files) -> Result<(), SpecError> {
    if current_files(dir).as_ref() == Some(files) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let fresh = dir.join(&stamp);
    for (rel, (content, mode)) in files {
        if rel.starts_with("..") || rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            return Err(SpecError::Invalid(format!(
                "invalid path {rel:?} in volume"
            )));
        }
        let p = fresh.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(e, parent))?;
        }
        std::fs::write(&p, content).map_err(|e| io(e, &p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| io(e, &p))?;
    }
    std::fs::create_dir_all(&fresh).map_err(|e| io(e, &fresh))?;
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(|e| io(e, &tmp))?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(|e| io(e, dir))?;
    // Top-level names through ..data; stale ones go.
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_string))
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link).map_err(|e| io(e, &link))?;
        }
    }
    for e in std::fs::read_dir(dir).map_err(|e| io(e, dir))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old {
        if old.as_os_str() != stamp.as_str() {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

/// Make (or bring up to date) every volume of the pod; returns each
/// volume's directory on the node.
pub fn prepare(
    data_dir: &Path,
    pod: &Pod,
    fields: &PodFields<'_>,
    sources: &Sources<'_>,
    in_memory: bool,
) -> Result<BTreeMap<String, PathBuf>, SpecError> {
    let uid = spec::uid(pod);
    let mut out = BTreeMap::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let path = if let Some(h) = &v.host_path {
            let p = PathBuf::from(&h.path);
            match h.type_.as_deref() {
                Some("DirectoryOrCreate") => std::fs::create_dir_all(&p).map_err(|e| io(e, &p))?,
                Some("FileOrCreate") if !p.exists() => {
                    std::fs::write(&p, b"").map_err(|e| io(e, &p))?
                }
                Some("Directory") if !p.is_dir() => {
                    return Err(SpecError::Invalid(format!(
                        "hostPath {} is not a directory",
                        h.path
                    )))
                }
                Some("File") if !p.is_file() => {
                    return Err(SpecError::Invalid(format!(
                        "hostPath {} is not a file",
                        h.path
                    )))
                }
                _ => {}
            }
            p
        } else if v.empty_dir.is_some() {
            let p = volume_dir(data_dir, uid, &v.name);
            std::fs::create_dir_all(&p).map_err(|e| io(e, &p))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| io(e, &p))?;
            p
        } else if let Some(files) = files_of(v, fields, sources)? {
            let p = volume_dir(data_dir, uid, &v.name);
            if in_memory
                && (v.secret.is_some() || v.projected.is_some() || v.downward_api.is_some())
            {
                memory_backed(&p)?;
            }
            write_files(&p, &files)?;
            p
        } else {
            return Err(SpecError::Invalid(format!(
                "volume {:?}: this node supports emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes",
                v.name
            )));
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// The container's mounts, from its volumeMounts.
pub fn mounts(
    c: &k8s_openapi::api::core::v1::Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<Vec<Mount>, SpecError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let base = volumes.get(&m.name).ok_or_else(|| {
            SpecError::Invalid(format!("volumeMount {:?}: no volume of that name", m.name))
        })?;
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) if sub.split('/').any(|c| c == "..") || sub.starts_with('/') => {
                return Err(SpecError::Invalid(format!(
                    "subPath {sub:?} must be a relative path inside the volume"
                )))
            }
            Some(sub) => {
                let p = base.join(sub);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(|e| io(e, &p))?;
                }
                p
            }
            None => base.clone(),
        };
        out.push(Mount {
            host_path: host.to_string_lossy().into_owned(),
            container_path: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    Ok(out)
}

/// Whether `dir` is a mount point (on another device than its parent).
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(here), Some(Ok(parent))) = (
        std::fs::symlink_metadata(dir),
        dir.parent().map(std::fs::symlink_metadata),
    ) else {
        return false;
    };
    here.dev() != parent.dev()
}

/// Make `dir` a tmpfs of its own, unless it is one already.
fn memory_backed(dir: &Path) -> Result<(), SpecError> {
    use nix::mount::{mount, MsFlags};
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    if is_mount_point(dir) {
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )
    .map_err(|e| SpecError::Invalid(format!("mounting a tmpfs at {}: {e}", dir.display())))
}

/// Unmount every tmpfs under the pod's volumes.
fn unmount_volumes(pod: &Path) {
    let Ok(entries) = std::fs::read_dir(pod.join("volumes")) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if is_mount_point(&p) {
            if let Err(e) = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(dir = %p.display(), "unmounting a volume: {e}");
            }
        }
    }
}

/// Remove the pod's directory once its containers are gone.
pub fn clean(data_dir: &Path, uid: &str) {
    let dir = pod_dir(data_dir, uid);
    unmount_volumes(&dir);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "removing the pod's directory: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_volumes_are_swapped_whole() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("v");
        let mut files = Files::new();
        files.insert("a".into(), (b"1".to_vec(), 0o644));
        files.insert("sub/b".into(), (b"2".to_vec(), 0o600));
        write_files(&v, &files).unwrap();
        assert_eq!(std::fs::read(v.join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read(v.join("sub/b")).unwrap(), b"2");
        let first = std::fs::read_link(v.join("..data")).unwrap();

        // Unchanged: nothing is rewritten.
        write_files(&v, &files).unwrap();
        assert_eq!(std::fs::read_link(v.join("..data")).unwrap(), first);

        files.insert("a".into(), (b"changed".to_vec(), 0o644));
        files.remove("sub/b");
        write_files(&v, &files).unwrap();
        assert_eq!(std::fs::read(v.join("a")).unwrap(), b"changed");
        assert!(
            !v.join("sub").exists(),
            "a name no longer in the volume goes"
        );
        assert!(!v.join(first).exists(), "the old generation is removed");
    }
}
