//! Which host authenticates with which keys, and what the target allows:
//! written by the RPC thread (`nvmf_subsystem_add_host --dhchap-key`,
//! `nvmf_subsystem_set_keys`, `nvmf_set_config`), read by the poll groups'
//! threads at each Connect and each reply. A host's entry lives as long as
//! the host is allowed: vendor patch 0034 reports its removal, and that of
//! its subsystem.

use std::collections::HashMap;

use super::dhchap::{Keys, Policy};
use crate::keyring::Key;
use std::sync::{Arc, Mutex};

/// A host's keys by name in the keyring (as `save_config` restores them).
#[derive(Debug, Clone)]
pub struct HostKeys {
    /// The host's key.
    pub key: Arc<Key>,
    /// The controller's key (bidirectional authentication).
    pub ctrlr_key: Option<Arc<Key>>,
}

impl HostKeys {
    /// The secrets of the exchange.
    pub fn secrets(&self) -> Keys {
        Keys {
            host: self.key.secret().clone(),
            ctrlr: self.ctrlr_key.as_ref().map(|k| k.secret().clone()),
        }
    }
}

type Table = HashMap<(String, String), HostKeys>;

fn table() -> &'static Mutex<Table> {
    static HOSTS: std::sync::OnceLock<Mutex<Table>> = std::sync::OnceLock::new();
    HOSTS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn policy_slot() -> &'static Mutex<Policy> {
    static POLICY: std::sync::OnceLock<Mutex<Policy>> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| Mutex::new(Policy::default()))
}

fn id(subnqn: &str, hostnqn: &str) -> (String, String) {
    (subnqn.to_string(), hostnqn.to_string())
}

/// The keys `hostnqn` authenticates to `subnqn` with, if it must.
pub fn keys(subnqn: &str, hostnqn: &str) -> Option<HostKeys> {
    crate::sync::lock(table())
        .get(&id(subnqn, hostnqn))
        .cloned()
}

/// Sets (or, with `None`, clears) the keys of `hostnqn` on `subnqn`.
pub fn set(subnqn: &str, hostnqn: &str, keys: Option<HostKeys>) {
    let mut t = crate::sync::lock(table());
    match keys {
        Some(k) => t.insert(id(subnqn, hostnqn), k),
        None => t.remove(&id(subnqn, hostnqn)),
    };
}

/// What the target allows.
pub fn policy() -> Policy {
    crate::sync::lock(policy_slot()).clone()
}

/// Sets what the target allows.
pub fn set_policy(policy: Policy) {
    *crate::sync::lock(policy_slot()) = policy;
}
