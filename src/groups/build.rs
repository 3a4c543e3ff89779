//! Groups from settings: the `[[groups]]` entries (and `groups_file`), judged whole, or
//! the top-level settings as the one group `default`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use super::{DEFAULT_GROUP, Group, Groups, ProfileTemplate, ProvisioningTemplate};
use crate::auth::{DevicePolicy, KeyDigests, OnboardingAuth};
use crate::ca::{KeyPolicy, KeyType};
use crate::config::{
    ConfigError, DEFAULT_ISSUER, GroupSettings, OnboardingMode, OnboardingSettings, Settings,
    read_groups_file,
};
use crate::domain::KeyKind;
use crate::hook::PreIssuanceHook;

/// `[a-z0-9-]{1,32}`: safe in metric labels, URLs, log lines and file names.
pub fn group_name_is_valid(name: &str) -> bool {
    crate::domain::is_short_name(name)
}

/// The groups `settings` configure, every mistake refused (the first one said).
pub fn load(settings: &Settings) -> Result<Groups, ConfigError> {
    let mut configured = settings.groups.clone();
    if let Some(path) = &settings.groups_file {
        configured.extend(read_groups_file(path)?);
    }
    if configured.is_empty() {
        return Ok(Groups::implicit(implicit_default(settings)?));
    }
    refuse_top_level_credentials(&settings.onboarding)?;
    let mut names = HashSet::new();
    let mut groups: Vec<Arc<Group>> = Vec::new();
    for entry in &configured {
        if !group_name_is_valid(&entry.name) {
            return Err(ConfigError::key(
                "groups.name",
                format!("`{}` is not 1 to 32 of a-z, 0-9 and -", entry.name),
            ));
        }
        if !names.insert(entry.name.as_str()) {
            return Err(ConfigError::key(
                "groups.name",
                format!("two groups are named `{}`", entry.name),
            ));
        }
        let group = build(entry, settings).map_err(|e| ConfigError::in_group(&entry.name, e))?;
        for other in &groups {
            if let (OnboardingAuth::Keys(a), OnboardingAuth::Keys(b)) =
                (&other.onboarding, &group.onboarding)
                && a.overlaps(b)
            {
                return Err(ConfigError::group(
                    &entry.name,
                    "enrollment_keys",
                    format!(
                        "a key is also group `{}`'s: an enrollment key belongs to one group",
                        other.name
                    ),
                ));
            }
        }
        groups.push(Arc::new(group));
    }
    Ok(Groups::new(groups))
}

/// Today's settings as one group: what a server without `[[groups]]` always was.
fn implicit_default(settings: &Settings) -> Result<Group, ConfigError> {
    let validity_days = settings.ca.validity_days;
    Ok(Group {
        name: DEFAULT_GROUP.into(),
        issuer: issuer_named(settings, None).map_err(|e| ConfigError::key("issuers", e))?,
        onboarding: OnboardingAuth::from_settings(&settings.onboarding, &settings.ca.dir)?,
        devices: DevicePolicy::from_settings(&settings.onboarding)?,
        keys: KeyPolicy::from_settings(&settings.ca),
        key_types: None,
        validity_days,
        renewal_window_days: None,
        after_expiry_days: settings.renewal.after_expiry_days,
        profile: ProfileTemplate::device(),
        hook: PreIssuanceHook::new(&settings.hook, validity_days, "hook")?.map(Arc::new),
        mqtt: ProvisioningTemplate::from_settings(&settings.mqtt.template())
            .map_err(|e| ConfigError::key("mqtt.device_id", e))?,
    })
}

/// The issuer `name` (of `[[issuers]]`, which the running server loaded at start), or
/// the first when `None`.
fn issuer_named(settings: &Settings, name: Option<&str>) -> Result<Arc<str>, String> {
    let names: Vec<&str> = match settings.issuers.as_slice() {
        [] => vec![DEFAULT_ISSUER],
        issuers => issuers.iter().map(|i| i.name.as_str()).collect(),
    };
    match name {
        None => Ok(names[0].into()),
        Some(name) if names.contains(&name) => Ok(name.into()),
        Some(name) => Err(format!(
            "no issuer is named `{name}` (the issuers: {}; a new one takes a restart)",
            names.join(", ")
        )),
    }
}

/// With groups, credentials and device rules are each group's: one left at the top
/// level would be silently unused.
fn refuse_top_level_credentials(top: &OnboardingSettings) -> Result<(), ConfigError> {
    let set = [
        (
            "onboarding.enrollment_keys",
            !top.enrollment_keys.0.is_empty(),
        ),
        (
            "onboarding.enrollment_keys_file",
            top.enrollment_keys_file.is_some(),
        ),
        ("onboarding.group_secret", top.group_secret.is_some()),
        (
            "onboarding.group_secret_file",
            top.group_secret_file.is_some(),
        ),
        (
            "onboarding.device_id_pattern",
            top.device_id_pattern.is_some(),
        ),
        (
            "onboarding.device_allowlist_file",
            top.device_allowlist_file.is_some(),
        ),
    ];
    match set.iter().find(|(_, is_set)| *is_set) {
        Some((key, _)) => Err(ConfigError::key(
            key,
            "with [[groups]], onboarding credentials and device rules belong to a group: \
             move this into one (a group named `default` takes devices that name none)",
        )),
        None => Ok(()),
    }
}

fn build(entry: &GroupSettings, settings: &Settings) -> Result<Group, ConfigError> {
    let name = entry.name.as_str();
    let onboarding = OnboardingSettings {
        mode: entry.onboarding,
        enrollment_keys: entry.enrollment_keys.clone(),
        enrollment_keys_file: entry.enrollment_keys_file.clone(),
        group_secret: entry.group_secret.clone(),
        group_secret_file: entry.group_secret_file.clone(),
        clock_skew_seconds: settings.onboarding.clock_skew_seconds,
        device_id_pattern: entry.device_id_pattern.clone(),
        device_allowlist_file: entry.device_allowlist_file.clone(),
    };
    let auth = match entry.onboarding {
        // Read here rather than by `from_settings`, which would generate a key for an
        // empty list: a named group's keys are the operator's to give.
        OnboardingMode::Key => {
            let keys = KeyDigests::load(
                &onboarding.enrollment_keys,
                onboarding.enrollment_keys_file.as_deref(),
                "enrollment_keys",
            )?;
            if keys.is_empty() {
                return Err(ConfigError::group(
                    name,
                    "enrollment_keys",
                    "the group onboards by key but has none (enrollment_keys or enrollment_keys_file)",
                ));
            }
            OnboardingAuth::Keys(keys)
        }
        _ => OnboardingAuth::from_settings(&onboarding, Path::new("/nonexistent"))?,
    };
    let mut keys = KeyPolicy::from_settings(&settings.ca);
    if let Some(types) = &entry.key_types {
        if types.is_empty() {
            return Err(ConfigError::group(
                name,
                "key_types",
                "name at least one key type",
            ));
        }
        keys.only = Some(types.iter().map(|t| key_type(*t)).collect());
    }
    let validity_days = entry.validity_days.unwrap_or(settings.ca.validity_days);
    if !(1..=3650).contains(&validity_days) {
        return Err(ConfigError::group(
            name,
            "validity_days",
            "use 1..=3650 days",
        ));
    }
    let ceiling = settings.renewal.after_expiry_days;
    let after_expiry_days = entry.renewal.after_expiry_days.unwrap_or(ceiling);
    if after_expiry_days > ceiling {
        return Err(ConfigError::group(
            name,
            "renewal.after_expiry_days",
            format!(
                "{after_expiry_days} is more than renewal.after_expiry_days ({ceiling}), which \
                 sets how long the registry keeps expired records: raise that too"
            ),
        ));
    }
    if entry.renewal.window_days == Some(0) {
        return Err(ConfigError::group(
            name,
            "renewal.window_days",
            "use 1 or more days before notAfter, or leave it out (any time)",
        ));
    }
    let profile = ProfileTemplate::from_settings(entry)
        .map_err(|e| ConfigError::group(name, "subject", e))?;
    let issuer = issuer_named(settings, entry.issuer.as_deref())
        .map_err(|e| ConfigError::group(name, "issuer", e))?;
    let hook = entry.hook.as_ref().unwrap_or(&settings.hook);
    let hook_key = if entry.hook.is_some() {
        "groups.hook"
    } else {
        "hook"
    };
    Ok(Group {
        name: name.into(),
        issuer,
        onboarding: auth,
        devices: DevicePolicy::from_settings(&onboarding)?,
        keys,
        key_types: entry.key_types.clone(),
        validity_days,
        renewal_window_days: entry.renewal.window_days,
        after_expiry_days,
        profile,
        hook: PreIssuanceHook::new(hook, validity_days, hook_key)?.map(Arc::new),
        mqtt: ProvisioningTemplate::from_settings(&entry.mqtt)
            .map_err(|e| ConfigError::group(name, "mqtt.device_id", e))?,
    })
}

fn key_type(name: KeyKind) -> KeyType {
    match name {
        KeyKind::P256 => KeyType::EcdsaP256,
        KeyKind::P384 => KeyType::EcdsaP384,
        KeyKind::Ed25519 => KeyType::Ed25519,
        KeyKind::Rsa2048 => KeyType::Rsa(2048),
        KeyKind::Rsa3072 => KeyType::Rsa(3072),
        KeyKind::Rsa4096 => KeyType::Rsa(4096),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyList;
    use crate::secret::Secret;

    const KEY_A: &str = "group-key-a-group-key-a-group-key-a-00";
    const KEY_B: &str = "group-key-b-group-key-b-group-key-b-00";

    fn keyed(name: &str, key: &str) -> GroupSettings {
        GroupSettings {
            name: name.into(),
            enrollment_keys: KeyList(vec![Secret::new(key)]),
            ..GroupSettings::default()
        }
    }

    fn refused(groups: Vec<GroupSettings>, adjust: impl FnOnce(&mut Settings)) -> String {
        let mut settings = Settings {
            groups,
            ..Settings::default()
        };
        adjust(&mut settings);
        match load(&settings) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn without_groups_the_top_level_settings_are_the_default_group() {
        let mut settings = Settings::default();
        settings.onboarding.mode = OnboardingMode::Open;
        let groups = load(&settings).unwrap();
        let only = groups.only().expect("one group");
        assert_eq!(&*only.name, DEFAULT_GROUP);
        assert_eq!(only.validity_days, 365);
        assert_eq!(only.onboarding.mode(), "open");
    }

    #[test]
    fn each_mistake_is_refused_with_the_group_and_key_named() {
        let e = refused(vec![keyed("a", KEY_A), keyed("b", KEY_A)], |_| {});
        assert!(e.contains("group `b`") && e.contains("group `a`'s"), "{e}");
        let e = refused(vec![keyed("a", KEY_A), keyed("a", KEY_B)], |_| {});
        assert!(e.contains("two groups are named `a`"), "{e}");
        let e = refused(vec![keyed("Sensors", KEY_A)], |_| {});
        assert!(e.contains("`Sensors`"), "{e}");
        let e = refused(vec![keyed("a", KEY_A)], |s| {
            s.onboarding.enrollment_keys = KeyList(vec![Secret::new(KEY_B)]);
        });
        assert!(
            e.contains("onboarding.enrollment_keys") && e.contains("ENROLLMENT_KEYS"),
            "{e}"
        );
        let e = refused(vec![GroupSettings::default()], |_| {});
        assert!(e.contains("groups.name"), "{e}");
        let no_keys = GroupSettings {
            name: "bare".into(),
            ..GroupSettings::default()
        };
        let e = refused(vec![no_keys], |_| {});
        assert!(
            e.contains("group `bare`") && e.contains("enrollment_keys"),
            "{e}"
        );

        let mut g = keyed("a", KEY_A);
        g.san_dns = vec!["{serial}.example.com".into()];
        let e = refused(vec![g], |_| {});
        assert!(e.contains("{serial}") && e.contains("{device_id}"), "{e}");
        for host in ["{device_id}", "{device_id}.com", "x.{device_id}"] {
            let mut g = keyed("a", KEY_A);
            g.san_dns = vec![host.into()];
            assert!(refused(vec![g], |_| {}).contains("fixed labels"), "{host}");
        }
        let mut g = keyed("a", KEY_A);
        g.subject.common_name = Some("sensor".into());
        assert!(refused(vec![g], |_| {}).contains("must hold {device_id}"));
        let mut g = keyed("a", KEY_A);
        g.subject.country = Some("Germany".into());
        let e = refused(vec![g], |_| {});
        assert!(e.contains("two upper-case letters"), "{e}");
        let mut g = keyed("a", KEY_A);
        g.san_uris = vec!["{device_id}".into()];
        assert!(refused(vec![g], |_| {}).contains("absolute URI"));
        let mut g = keyed("a", KEY_A);
        g.extended_key_usage = Some(vec![]);
        assert!(refused(vec![g], |_| {}).contains("clientAuth"));
        let mut g = keyed("a", KEY_A);
        g.key_types = Some(vec![]);
        assert!(refused(vec![g], |_| {}).contains("key_types"));
        let mut g = keyed("a", KEY_A);
        g.renewal.after_expiry_days = Some(10);
        let e = refused(vec![g], |_| {});
        assert!(
            e.contains("renewal.after_expiry_days") && e.contains("raise"),
            "{e}"
        );
        let mut g = keyed("a", KEY_A);
        g.validity_days = Some(0);
        assert!(refused(vec![g], |_| {}).contains("validity_days"));
        let derived = GroupSettings {
            name: "d".into(),
            onboarding: OnboardingMode::Derived,
            group_secret: Some(Secret::new("short")),
            ..GroupSettings::default()
        };
        assert!(refused(vec![derived], |_| {}).contains("32 bytes"));
    }

    #[test]
    fn a_groups_file_adds_groups_and_its_mistakes_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("groups.toml");
        std::fs::write(&file, "[[groups]]\nname = \"lab\"\nonboarding = \"open\"\n").unwrap();
        let settings = Settings {
            groups: vec![keyed("a", KEY_A)],
            groups_file: Some(file.clone()),
            ..Settings::default()
        };
        let groups = load(&settings).unwrap();
        let names: Vec<&str> = groups.iter().map(|g| &*g.name).collect();
        assert_eq!(names, ["a", "lab"]);
        std::fs::write(&file, "[[groups]]\nname = \"lab\"\nvalidty_days = 3\n").unwrap();
        let e = load(&settings).err().unwrap().to_string();
        assert!(
            e.contains("groups.toml") && e.contains("validty_days"),
            "{e}"
        );
    }
}
