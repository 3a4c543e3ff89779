//! Enrollment groups: which devices onboard how, and what their certificates say.
//!
//! Each group carries its own onboarding (`key`, `derived`, `open` with its own keys or
//! secret), device-id rules, key types, validity, renewal window and certificate
//! profile, and optionally its own pre-issuance hook. A request finds its group once:
//! onboarding by the enrollment key or the body's `group`, sign-csr by the token's `grp`
//! claim, renewal by the registry record of the certificate presented. Without
//! `[[groups]]` the top-level settings form one group, `default`, and nothing changes.
//!
//! The table is swapped whole on SIGHUP ([`GroupTable::replace`]): a request holds the
//! [`Arc`] it started with, so one in flight finishes under the groups it began with.

mod build;
mod profile;
mod reload;
mod template;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::HttpRequest;

pub use build::{group_name_is_valid, load};
pub use profile::ProfileTemplate;
pub use reload::{announce, describe, spawn_reloader};
pub use template::ProvisioningTemplate;

use crate::auth::{DevicePolicy, OnboardingAuth};
use crate::ca::KeyPolicy;
use crate::domain::KeyKind;
use crate::hook::PreIssuanceHook;

pub use crate::registry::DEFAULT_GROUP;

pub struct Group {
    pub name: Arc<str>,
    /// The issuer that signs its certificates (`[[issuers]]`'s name; `default` without).
    pub issuer: Arc<str>,
    pub onboarding: OnboardingAuth,
    pub devices: DevicePolicy,
    pub keys: KeyPolicy,
    /// As configured (`None`: those `[ca]` allows), for the listing.
    pub key_types: Option<Vec<KeyKind>>,
    pub validity_days: u32,
    /// Renewal is taken only this many days before notAfter or later.
    pub renewal_window_days: Option<u32>,
    pub after_expiry_days: u32,
    pub profile: ProfileTemplate,
    pub hook: Option<Arc<PreIssuanceHook>>,
    /// Its provisioning template over MQTT (`[groups.mqtt]`).
    pub mqtt: ProvisioningTemplate,
}

impl Group {
    pub fn validity(&self) -> time::Duration {
        time::Duration::days(self.validity_days.into())
    }

    /// How long after notAfter a certificate of this group may still renew.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(u64::from(self.after_expiry_days) * 86_400)
    }
}

/// The groups in force: in the order configured.
pub struct Groups {
    list: Vec<Arc<Group>>,
    /// The one group the top-level settings make when no `[[groups]]` are configured.
    implicit: bool,
}

impl Groups {
    pub fn new(list: Vec<Arc<Group>>) -> Self {
        Self {
            list,
            implicit: false,
        }
    }

    /// The top-level settings as the group `default`, with no `[[groups]]`: a request
    /// names no group then (a `group` field is ignored, as any unknown field was).
    pub fn implicit(group: Group) -> Self {
        Self {
            list: vec![Arc::new(group)],
            implicit: true,
        }
    }

    pub fn is_implicit(&self) -> bool {
        self.implicit
    }

    /// The first group whose own device rules (a pattern, an allowlist) take `device`:
    /// the group the id belongs to. A group without rules claims no id, and takes those
    /// no other group claims; so an open or wide group cannot hand out an id that a
    /// stricter group was given.
    pub fn claimed_by(&self, device: &crate::domain::DeviceId) -> Option<&Arc<Group>> {
        self.list
            .iter()
            .find(|g| g.devices.has_rules() && g.devices.check(device).is_ok())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Group>> {
        self.list.iter().find(|g| &*g.name == name)
    }

    /// The group, when there is only one.
    pub fn only(&self) -> Option<&Arc<Group>> {
        match self.list.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.list.iter()
    }

    /// The `key`-mode group whose enrollment key the request bears, with the key's name.
    /// Every key of every group is compared, so the time taken says nothing of which one
    /// (or which group) matched.
    pub fn by_enrollment_key(&self, req: &HttpRequest) -> Option<&Arc<Group>> {
        let mut found = None;
        for group in &self.list {
            if let OnboardingAuth::Keys(keys) = &group.onboarding
                && keys.accepts(req)
                && found.is_none()
            {
                found = Some(group);
            }
        }
        found
    }
}

/// The groups, swapped whole on reload.
pub struct GroupTable(RwLock<Arc<Groups>>);

impl GroupTable {
    pub fn new(groups: Groups) -> Self {
        Self(RwLock::new(Arc::new(groups)))
    }

    /// The groups now; a request keeps this for its whole life.
    pub fn current(&self) -> Arc<Groups> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, groups: Groups) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(groups);
    }
}
