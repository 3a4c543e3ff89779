//! A group's provisioning template for MQTT (AWS IoT's RegisterThing template): how the
//! device id is made from the parameters a device sends, and what it is answered.

use std::collections::BTreeMap;

use crate::config::MqttTemplateSettings;
use crate::domain::DeviceId;

/// `{SerialNumber}`: AWS's own examples name the device by its serial number.
const DEFAULT_DEVICE_ID: &str = "{SerialNumber}";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Parameter(String),
}

/// `[groups.mqtt]`, checked.
#[derive(Debug, Clone)]
pub struct ProvisioningTemplate {
    /// Whether the server may make a device's key (`$aws/certificates/create/json`).
    pub create_keys: bool,
    device_id: Vec<Piece>,
    pub device_configuration: BTreeMap<String, String>,
}

impl ProvisioningTemplate {
    /// Errors: the device id template's mistake, for `mqtt.device_id`.
    pub fn from_settings(settings: &MqttTemplateSettings) -> Result<Self, String> {
        let text = settings.device_id.as_deref().unwrap_or(DEFAULT_DEVICE_ID);
        Ok(Self {
            create_keys: settings.create_keys,
            device_id: parse(text)?,
            device_configuration: settings.device_configuration.clone(),
        })
    }

    /// The device id `parameters` make (RegisterThing's `parameters`, strings only).
    ///
    /// Errors: a parameter the template names is missing, or the id made is not a device
    /// id (1..=128 of `[A-Za-z0-9._:-]`): said in words fit for `/rejected`.
    pub fn device_id(&self, parameters: &BTreeMap<String, String>) -> Result<DeviceId, String> {
        let mut id = String::new();
        for piece in &self.device_id {
            match piece {
                Piece::Text(text) => id.push_str(text),
                Piece::Parameter(name) => id.push_str(
                    parameters
                        .get(name)
                        .ok_or_else(|| format!("the parameter {name} is required"))?,
                ),
            }
        }
        DeviceId::parse(&id).map_err(|e| format!("the parameters make no device id: {e}"))
    }
}

fn parse(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("`{text}` opens a {{ it does not close"))?;
                let name = &rest[1..end];
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!(
                        "`{{{name}}}` in `{text}` is no parameter name (letters, digits, _ and -)"
                    ));
                }
                pieces.push(Piece::Parameter(name.to_owned()));
                rest = &rest[end + 1..];
            }
            found => {
                let end = found.unwrap_or(rest.len());
                let literal = &rest[..end];
                if literal.contains('}') {
                    return Err(format!("`{text}` closes a }} it did not open"));
                }
                pieces.push(Piece::Text(literal.to_owned()));
                rest = &rest[end..];
            }
        }
    }
    if !pieces.iter().any(|p| matches!(p, Piece::Parameter(_))) {
        return Err(format!(
            "`{text}` names no parameter: every device would get the same id"
        ));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> Result<ProvisioningTemplate, String> {
        ProvisioningTemplate::from_settings(&MqttTemplateSettings {
            device_id: Some(text.to_owned()),
            ..Default::default()
        })
    }

    #[test]
    fn the_parameters_make_the_device_id() {
        let t = template("meter-{Site}-{SerialNumber}").unwrap();
        let params = BTreeMap::from([
            ("Site".to_owned(), "ber".to_owned()),
            ("SerialNumber".to_owned(), "0042".to_owned()),
        ]);
        assert_eq!(t.device_id(&params).unwrap().as_str(), "meter-ber-0042");
        let missing = BTreeMap::from([("Site".to_owned(), "ber".to_owned())]);
        assert!(t.device_id(&missing).unwrap_err().contains("SerialNumber"));
        let bad = BTreeMap::from([
            ("Site".to_owned(), "b/r".to_owned()),
            ("SerialNumber".to_owned(), "1".to_owned()),
        ]);
        assert!(t.device_id(&bad).is_err());
    }

    #[test]
    fn a_template_that_cannot_work_is_refused() {
        for text in ["fixed", "{", "a}b", "{}", "{a b}"] {
            assert!(template(text).is_err(), "{text}");
        }
        let default = ProvisioningTemplate::from_settings(&Default::default()).unwrap();
        let params = BTreeMap::from([("SerialNumber".to_owned(), "sn-1".to_owned())]);
        assert_eq!(default.device_id(&params).unwrap().as_str(), "sn-1");
    }
}
