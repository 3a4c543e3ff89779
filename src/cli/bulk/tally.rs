//! What a `bulk` run has done so far, and whether its first answers refuse it as a whole.

use std::collections::BTreeMap;

use super::Failure;

/// Devices whose answers decide whether the run is refused as a whole.
const FIRST_ANSWERS: usize = 5;

#[derive(Default)]
pub struct Tally {
    /// Enrolled and durable (committed).
    pub done: usize,
    pub skipped: usize,
    pub failures: Vec<Failure>,
}

impl Tally {
    pub fn fail(&mut self, id: &str, code: &str, message: &str) {
        self.failures.push(Failure {
            device_id: id.to_owned(),
            code: code.to_owned(),
            message: message.to_owned(),
        });
    }

    pub fn by_code(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for failure in &self.failures {
            *counts.entry(failure.code.clone()).or_default() += 1;
        }
        counts
    }

    pub fn handled(&self) -> usize {
        self.done + self.skipped + self.failures.len()
    }
}

/// The first answers of a run (five, or every device when fewer are sent): when all of
/// them are 401 `unauthorized`, the key is missing or wrong for the whole fleet, and
/// going on would only repeat it. A mix of outcomes never stops the run.
pub struct FirstAnswers {
    wanted: usize,
    pub seen: usize,
    unauthorized: usize,
    /// The server's message with the first refusal.
    pub message: String,
}

impl FirstAnswers {
    pub fn new(devices_to_send: usize) -> Self {
        Self {
            wanted: devices_to_send.min(FIRST_ANSWERS),
            seen: 0,
            unauthorized: 0,
            message: String::new(),
        }
    }

    /// A device's answer: `None` for a certificate, its code and message otherwise.
    pub fn see(&mut self, failure: Option<(&str, &str)>) {
        if self.seen >= self.wanted {
            return;
        }
        self.seen += 1;
        if let Some(("unauthorized", message)) = failure {
            self.unauthorized += 1;
            if self.message.is_empty() {
                self.message = message.to_owned();
            }
        }
    }

    pub fn all_unauthorized(&self) -> bool {
        self.wanted > 0 && self.seen == self.wanted && self.unauthorized == self.wanted
    }
}
