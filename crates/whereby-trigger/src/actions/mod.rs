//! Dispatch for config rules: what happens when a trigger fires.
//!
//! Every action gets the same [`ActionEvent`]; each kind lives in its own file
//! behind the [`Action`] trait, so a Rust program can add its own.

use std::sync::Arc;

use bytes::Bytes;
use whereby_webhook::WebhookEvent;

use crate::state::claims::ClaimHandle;
use crate::state::room::RoomKey;

mod delivery;
#[cfg(feature = "forward")]
pub mod forward;
pub mod run;
pub mod stdout;
pub mod template;

pub use delivery::{DeliveryLedger, DeliveryTicket};

/// Whether an assistant should start or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// A trigger fired: start an assistant in the room.
    Start,
    /// A `stop_on` event arrived for a room the trigger had claimed.
    Stop,
}

impl ActionKind {
    /// `"start"` or `"stop"`, as in the JSON every action gets.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Start => "start",
            ActionKind::Stop => "stop",
        }
    }
}

/// What an action is asked to do, and for which room.
///
/// Serialised (by [`ActionEvent::to_json`]) as
/// `{"action":"start","trigger":NAME,"roomUrl":…,"triggerWebhook":{…}}`, the
/// webhook exactly as received.
#[derive(Debug, Clone)]
pub struct ActionEvent {
    /// Start or stop.
    pub action: ActionKind,
    /// Name of the trigger that fired.
    pub trigger: Arc<str>,
    /// The room an assistant should join (or leave).
    pub room_url: String,
    /// The room, as subdomain and room name.
    pub room: RoomKey,
    /// The webhook that fired the trigger, or that stopped it.
    pub webhook: WebhookEvent,
    /// That webhook's body as received.
    pub raw: Bytes,
    /// The claim this start holds; `None` for a stop.
    pub claim: Option<ClaimHandle>,
    /// The queued delivery this call carries out, when the Trigger has a durable
    /// store; an action that [tracks deliveries](Action::tracks_delivery)
    /// reports through it.
    pub delivery: Option<DeliveryTicket>,
}

impl ActionEvent {
    /// The event as one compact JSON document, without a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len() + self.room_url.len() + 80);
        out.extend_from_slice(b"{\"action\":\"");
        out.extend_from_slice(self.action.as_str().as_bytes());
        out.extend_from_slice(b"\",\"trigger\":");
        // Writing strings into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &*self.trigger);
        out.extend_from_slice(b",\"roomUrl\":");
        let _ = serde_json::to_writer(&mut out, &self.room_url);
        out.extend_from_slice(b",\"triggerWebhook\":");
        crate::util::push_single_line(&mut out, &self.raw);
        out.push(b'}');
        out
    }

    /// The webhook's `id`.
    pub fn event_id(&self) -> &str {
        self.webhook.id()
    }
}

/// Something that happens when a trigger fires or stops: run a process, call a
/// service, print a line, or whatever a Rust program registers.
///
/// Both methods are called on the task that handles the webhook, after its
/// outcome is decided: they must return quickly and do slow work on a task of
/// their own.
pub trait Action: Send + Sync + 'static {
    /// A short name for logs (`run`, `forward`, `stdout`, …).
    fn kind(&self) -> &'static str;

    /// Starts an assistant for `event`. An action that owns the assistant's
    /// lifetime (like `run`) releases `event.claim` when the assistant ends.
    fn start(&self, event: Arc<ActionEvent>);

    /// Stops the assistants this action started for the trigger in `event.room`.
    fn stop(&self, event: Arc<ActionEvent>);

    /// Whether this action reports the fate of its delivery through
    /// `event.delivery` (done, dead). When `false` (the default), a delivery
    /// counts as done as soon as `start` or `stop` returns.
    fn tracks_delivery(&self) -> bool {
        false
    }
}
