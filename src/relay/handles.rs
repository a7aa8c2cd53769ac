//! Lifecycle handles: what the runtime holds for each running scrape loop
//! and each destination's sender, and the only ways to end them. A handle
//! that ends its task is consumed, so a removed target or a handed-over
//! destination cannot be used again by mistake.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RemoteWriteConfig;
use crate::remote_write::sender::Sender;
use crate::scrape::{ScrapeLoop, SharedStatus, Sink};

/// A running scrape loop. Dropping the handle ends the loop as
/// [`TargetHandle::remove`] does (the token is cancelled on drop), so no
/// code path can lose a handle and leave its loop running.
pub(super) struct TargetHandle {
    _remove: tokio_util::sync::DropGuard,
    status: SharedStatus,
}

impl TargetHandle {
    /// Starts `scrape` on `tasks`; it ends at `shutdown` (no staleness
    /// markers, as Prometheus) or at [`TargetHandle::remove`].
    pub(super) fn spawn(
        tasks: &TaskTracker,
        scrape: ScrapeLoop,
        shutdown: CancellationToken,
        status: SharedStatus,
    ) -> Self {
        let remove = CancellationToken::new();
        tasks.spawn(scrape.run(shutdown, remove.clone()));
        TargetHandle {
            _remove: remove.drop_guard(),
            status,
        }
    }

    pub(super) fn status(&self) -> &SharedStatus {
        &self.status
    }

    /// Ends the loop the way a removed target ends: staleness markers for
    /// its series, its per-target metrics removed. (Dropping the handle
    /// does the same; this names the intent.)
    pub(super) fn remove(self) {
        drop(self);
    }
}

/// A running destination: its sender task and the sink scrapes write to.
pub(super) struct DestinationHandle {
    name: String,
    config: RemoteWriteConfig,
    sink: Sink,
    stop: CancellationToken,
    handover: CancellationToken,
    task: JoinHandle<()>,
}

/// A destination that handed its queue over; its successor starts when it
/// has ended.
pub(super) struct HandedOver(JoinHandle<()>);

impl DestinationHandle {
    /// Starts `sender` on `tasks`, once `predecessor` (the destination of the
    /// same name whose queue this one takes over) has ended.
    pub(super) fn spawn(
        tasks: &TaskTracker,
        sender: Sender,
        sink: Sink,
        name: String,
        config: RemoteWriteConfig,
        grace: Duration,
        predecessor: Option<HandedOver>,
    ) -> Self {
        let stop = CancellationToken::new();
        let handover = CancellationToken::new();
        let (s, h) = (stop.clone(), handover.clone());
        let task = tasks.spawn(async move {
            if let Some(HandedOver(p)) = predecessor {
                let _ = p.await;
            }
            tokio::select! {
                _ = sender.run(s, grace) => {}
                _ = h.cancelled() => {}
            }
        });
        DestinationHandle {
            name,
            config,
            sink,
            stop,
            handover,
            task,
        }
    }

    /// This destination runs exactly `config` under `name` (secrets
    /// included: a changed password is a changed destination).
    pub(super) fn runs(&self, name: &str, config: &RemoteWriteConfig) -> bool {
        self.name == name && &self.config == config
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn sink(&self) -> &Sink {
        &self.sink
    }

    /// Seals the open batch and sends what is queued for at most the grace
    /// period, then ends (shutdown, or removed by a reload).
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops at once and leaves the queue to a successor.
    pub(super) fn hand_over(self) -> HandedOver {
        self.handover.cancel();
        HandedOver(self.task)
    }
}
