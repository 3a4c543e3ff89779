//! `[mqtt]` and `[groups.mqtt]`: provisioning over MQTT, as AWS IoT fleet provisioning
//! does it (see [`crate::mqtt`]).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[mqtt]`: the listener, and the provisioning template of the group `default` when no
/// `[[groups]]` are configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSettings {
    /// `host:port` the MQTT-over-TLS listener binds (`MQTT_LISTEN`), for example
    /// `0.0.0.0:8883`; none: no listener. It needs `server.tls`'s certificate and key.
    pub listen: Option<String>,
    /// Most MQTT connections open at once; one more is closed at accept.
    pub max_connections: Option<usize>,
    /// The group `default`'s template (without `[[groups]]`).
    pub create_keys: bool,
    pub device_id: Option<String>,
    pub device_configuration: BTreeMap<String, String>,
}

/// A group's provisioning template (`[groups.mqtt]`): AWS's RegisterThing template.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttTemplateSettings {
    /// Whether `$aws/certificates/create/json` (the server makes the device's key) is
    /// served for the group; off: only create-from-csr.
    pub create_keys: bool,
    /// How RegisterThing's `parameters` make the device id, `{Name}` for a parameter's
    /// value; default `{SerialNumber}`.
    pub device_id: Option<String>,
    /// What RegisterThing answers as `deviceConfiguration`.
    pub device_configuration: BTreeMap<String, String>,
}

impl MqttSettings {
    /// The template part, for the group `default` made of the top-level settings.
    pub fn template(&self) -> MqttTemplateSettings {
        MqttTemplateSettings {
            create_keys: self.create_keys,
            device_id: self.device_id.clone(),
            device_configuration: self.device_configuration.clone(),
        }
    }
}
