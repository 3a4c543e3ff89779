//! SIGHUP: the groups read again (the configuration file, the environment and
//! `groups_file`), and swapped in whole when every one of them is right.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

use super::{GroupTable, Groups, load};
use crate::config::{ConfigError, Settings};
use crate::metrics::{Metrics, OutcomeLabel};

/// Reloads the groups on each SIGHUP for as long as the server runs. A mistake keeps
/// the groups in force and is said in one line; requests in flight finish under the
/// groups they began with.
pub fn spawn_reloader(
    settings: Settings,
    table: Arc<GroupTable>,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: groups reload only with a restart");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            // Files and clients are made here: off the async workers.
            let reading = settings.clone();
            let reread = tokio::task::spawn_blocking(move || reread(&reading))
                .await
                .unwrap_or_else(|e| Err(ConfigError::key("groups", format!("reload failed: {e}"))));
            let outcome = match reread {
                Ok(groups) => {
                    let names = describe(&groups);
                    announce(&groups, &metrics);
                    table.replace(groups);
                    tracing::info!(groups = %names, "SIGHUP: enrollment groups reloaded");
                    "ok"
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "SIGHUP: enrollment groups NOT reloaded (the groups in force stay)"
                    );
                    "refused"
                }
            };
            metrics
                .groups_reloads
                .get_or_create(&OutcomeLabel { outcome })
                .inc();
        }
    })
}

/// The groups from the files as they are now; every other setting (and what groups
/// inherit from it) as at start, which is what the running server uses.
fn reread(settings: &Settings) -> Result<Groups, ConfigError> {
    let mut base = settings.clone();
    if let Some(from) = &settings.loaded_from {
        let fresh = Settings::load(from.config.as_deref(), &from.overrides)?;
        base.groups = fresh.groups;
        base.groups_file = fresh.groups_file;
    }
    load(&base)
}

/// `sensors (key), gateways (derived)`: for the start-up and reload lines.
pub fn describe(groups: &Groups) -> String {
    groups
        .iter()
        .map(|g| format!("{} ({})", g.name, g.onboarding.mode()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// At start and after each reload: each group's series made, and a group anyone may
/// onboard into said loudly.
pub fn announce(groups: &Groups, metrics: &Metrics) {
    for group in groups.iter() {
        metrics.know_group(&group.name, group.hook.is_some());
        if matches!(group.onboarding, crate::auth::OnboardingAuth::Open) {
            tracing::warn!(
                group = %group.name,
                "ONBOARDING IS OPEN: anyone who can reach this server can get a device \
                 certificate. Set onboarding.mode = \"key\" or \"derived\" for production."
            );
        }
    }
}
