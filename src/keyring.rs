//! Named keys from files, as upstream SPDK's keyring (v24.01) keeps them:
//! `keyring_file_add_key {name, path}`, `keyring_file_remove_key {name}`,
//! `keyring_get_keys`, and a `keyring` entry of `save_config` ahead of
//! `nvmf`'s, naming each key's file, never its contents.
//!
//! A key file must be a regular file of the target's user, readable by that
//! user only (mode 0600 or 0400), at an absolute path: a key others can read
//! is no secret. Its contents are read when it is added and checked there
//! (a DH-HMAC-CHAP secret, `DHHC-1:...`), so a bad key is refused with a
//! clear error at once rather than failing a host later; rewriting the file
//! afterwards changes nothing until the key is removed and added again.
//! A key a host uses cannot be removed (save_config could not bring the
//! host's keys back): give the host other keys first.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::secret::Secret;
use crate::rpc::{self, RpcError, RpcStates};
use crate::sys;
use std::sync::{Arc, Mutex};

/// A key of the keyring.
#[derive(Debug)]
pub struct Key {
    name: String,
    path: String,
    secret: Secret,
}

impl Key {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was read from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The DH-HMAC-CHAP secret it holds.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }
}

fn keys() -> &'static Mutex<BTreeMap<String, Arc<Key>>> {
    static KEYS: std::sync::OnceLock<Mutex<BTreeMap<String, Arc<Key>>>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// The key named `name`.
pub fn get(name: &str) -> Option<Arc<Key>> {
    crate::sync::lock(keys()).get(name).cloned()
}

/// Reads the key file at `path` for key `name`, checking where it is, whose
/// it is and who may read it.
pub fn read_key_file(name: &str, path: &str) -> Result<Key, String> {
    if name.is_empty() {
        return Err("a key needs a name".into());
    }
    if !Path::new(path).is_absolute() {
        return Err(format!(
            "key file '{path}' must be given by its absolute path"
        ));
    }
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read key file '{path}': {e}"))?;
    if !meta.is_file() {
        return Err(format!("key file '{path}' is not a regular file"));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(format!(
            "key file '{path}' belongs to user {}, not to the target's user {euid}",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "key file '{path}' may be read by others (mode {mode:04o}): a key must be its owner's only (chmod 0600 '{path}')"
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read key file '{path}': {e}"))?;
    let secret = Secret::parse(&text).map_err(|e| format!("key file '{path}': {e}"))?;
    Ok(Key {
        name: name.to_string(),
        path: path.to_string(),
        secret,
    })
}

/// Adds a key read from `path`; refused if the name is taken.
pub fn add_file_key(name: &str, path: &str) -> Result<(), String> {
    let key = read_key_file(name, path)?;
    let mut keys = crate::sync::lock(keys());
    if keys.contains_key(name) {
        return Err(format!(
            "key '{name}' already exists (keyring_file_remove_key removes it)"
        ));
    }
    keys.insert(name.to_string(), Arc::new(key));
    Ok(())
}

/// Removes key `name` from the keyring; refused while a host uses it
/// (save_config names a host's keys, and could not bring them back).
pub fn remove_key(name: &str) -> Result<(), String> {
    let mut keys = crate::sync::lock(keys());
    let key = keys
        .get(name)
        .ok_or_else(|| format!("key '{name}' does not exist (keyring_get_keys lists the keys)"))?;
    // The keyring holds one reference; each host using the key another.
    let users = Arc::strong_count(key) - 1;
    if users > 0 {
        return Err(format!(
            "key '{name}' is used by {users} host(s) (keyring_get_keys: refcnt): give them \
             other keys (nvmf_subsystem_set_keys) or remove them first"
        ));
    }
    keys.remove(name);
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddKey {
    name: String,
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveKey {
    name: String,
}

#[derive(Serialize)]
struct KeyInfo {
    name: String,
    module: &'static str,
    removed: bool,
    probed: bool,
    refcnt: usize,
    path: String,
}

fn list() -> Vec<KeyInfo> {
    crate::sync::lock(keys())
        .values()
        .map(|k| KeyInfo {
            name: k.name.clone(),
            module: "keyring_file",
            removed: false,
            probed: true,
            refcnt: Arc::strong_count(k),
            path: k.path.clone(),
        })
        .collect()
}

/// The `keyring` subsystem's `save_config` entries: one
/// `keyring_file_add_key` per key, by file.
extern "C" fn write_config_json(w: *mut sys::spdk_json_write_ctx) {
    let entries: Vec<Value> = match crate::panics::catch(|| {
        crate::sync::lock(keys())
            .values()
            .map(|k| {
                serde_json::json!({
                    "method": "keyring_file_add_key",
                    "params": {"name": k.name, "path": k.path},
                })
            })
            .collect()
    }) {
        Ok(entries) => entries,
        Err(caught) => {
            crate::log::error(&format!(
                "save_config: the keyring's entries: {}",
                caught.message()
            ));
            Vec::new()
        }
    };
    // SAFETY: SPDK hands a live write context for the subsystem's value.
    unsafe { crate::rpc::write_json_value(w, &Value::Array(entries)) };
}

/// Serves the keyring's RPCs and registers its `save_config` entry (before
/// `spdk_app_start`: SPDK orders its subsystems when it starts them).
pub fn serve_rpcs() -> crate::Result<()> {
    rpc::register_typed_method("keyring_file_add_key", RpcStates::Runtime, |p: AddKey| {
        add_file_key(&p.name, &p.path)
            .map(|()| true)
            .map_err(|e| RpcError::invalid_params(format!("keyring_file_add_key: {e}")))
    })?;
    rpc::register_typed_method(
        "keyring_file_remove_key",
        RpcStates::Runtime,
        |p: RemoveKey| {
            remove_key(&p.name)
                .map(|()| true)
                .map_err(|e| RpcError::invalid_params(format!("keyring_file_remove_key: {e}")))
        },
    )?;
    rpc::register_typed_method("keyring_get_keys", RpcStates::Runtime, |(): ()| Ok(list()))?;
    // SAFETY: the shim keeps the subsystem in static storage; the callback
    // lives forever and never unwinds.
    unsafe { sys::spdk_pmem_register_keyring_subsystem(Some(write_config_json)) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key_file(dir: &Path, name: &str, mode: u32, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.to_str().unwrap().to_string()
    }

    #[test]
    fn a_key_file_others_may_read_or_a_relative_path_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let good = Secret::from_key(&[1u8; 32], None).unwrap().to_text();
        let open = key_file(dir.path(), "open", 0o644, &good);
        let e = read_key_file("k", &open).unwrap_err();
        assert!(e.contains("mode 0644") && e.contains("chmod 0600"), "{e}");
        let e = read_key_file("k", "relative/key").unwrap_err();
        assert!(e.contains("absolute path"), "{e}");
        let e = read_key_file("k", "/nonexistent/key").unwrap_err();
        assert!(e.contains("cannot read key file '/nonexistent/key'"), "{e}");
        let junk = key_file(dir.path(), "junk", 0o600, "hello");
        let e = read_key_file("k", &junk).unwrap_err();
        assert!(e.contains("DHHC-1") && !e.contains("hello"), "{e}");
        let fine = key_file(dir.path(), "fine", 0o600, &format!("{good}\n"));
        assert_eq!(
            read_key_file("k", &fine).unwrap().secret(),
            &Secret::parse(&good).unwrap()
        );
    }
}
