//! Dispatch for config rules: what happens when a trigger fires.
//!
//! Every action gets the same [`ActionEvent`]; each kind lives in its own file
//! behind the [`Action`] trait, so a Rust program can add its own.

use std::sync::Arc;

use bytes::Bytes;
use whereby_webhook::{BaseDomain, WebhookEvent};

use crate::state::claims::ClaimHandle;
use crate::state::room::{RoomKey, RoomView};

mod delivery;
#[cfg(feature = "forward")]
pub mod forward;
pub mod run;
pub mod stdout;
pub mod template;

pub(crate) use delivery::delivery_id;
pub use delivery::{DeliveryLedger, DeliveryTicket};

/// Whether an assistant should start or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActionKind {
    /// A trigger fired: start an assistant in the room.
    Start,
    /// A stop (`stop_on`, `stop_when`) released the room the trigger had claimed.
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
/// `{"action":"start","trigger":NAME,"roomUrl":…,"room":{…},"triggerWebhook":{…}}`:
/// `roomUrl` is `null` for a webhook without a room, `room` is the room's
/// state as folded when the webhook was processed (absent without a room), and
/// the webhook is exactly as received.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ActionEvent {
    /// Start or stop.
    pub action: ActionKind,
    /// Name of the trigger that fired.
    pub trigger: Arc<str>,
    /// The room an assistant should join (or leave); `None` for a webhook
    /// without a room (a recording, a transcription).
    pub room_url: Option<String>,
    /// The room, as subdomain and room name; `None` without a room.
    pub room: Option<RoomKey>,
    /// The room's state after the webhook, as the rules saw it.
    pub state: Option<RoomView>,
    /// The webhook that fired the trigger, or that stopped it.
    pub webhook: WebhookEvent,
    /// That webhook's body as received.
    pub raw: Bytes,
    /// The claim this start holds; `None` for a stop, and for a start without
    /// a room.
    pub claim: Option<ClaimHandle>,
    /// The queued delivery this call carries out, when the Trigger has a durable
    /// store; an action that [tracks deliveries](Action::tracks_delivery)
    /// reports through it.
    pub delivery: Option<DeliveryTicket>,
}

/// `room` of the action event: the view's fields and `numHumans`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomOut<'a> {
    num_clients: u32,
    num_clients_by_role_name: &'a std::collections::BTreeMap<String, u32>,
    num_humans: u32,
    session_active: bool,
}

impl<'a> From<&'a RoomView> for RoomOut<'a> {
    fn from(view: &'a RoomView) -> Self {
        RoomOut {
            num_clients: view.num_clients,
            num_clients_by_role_name: &view.num_clients_by_role_name,
            num_humans: view.num_humans(),
            session_active: view.session_active,
        }
    }
}

impl ActionEvent {
    /// A start or stop of `trigger` for `webhook` (its body as received:
    /// `raw`), with the webhook's room and its URL on `whereby.com`, and no
    /// room state, claim or delivery: for testing an [`Action`] of your own.
    /// The rules make these themselves; set any other field on the result.
    pub fn new(
        action: ActionKind,
        trigger: impl Into<Arc<str>>,
        webhook: WebhookEvent,
        raw: Bytes,
    ) -> ActionEvent {
        let room = webhook.in_room();
        ActionEvent {
            action,
            trigger: trigger.into(),
            room_url: room.and_then(|r| r.room_url(&BaseDomain::default()).ok()),
            room: room.map(RoomKey::of),
            state: None,
            webhook,
            raw,
            claim: None,
            delivery: None,
        }
    }

    /// The event as one compact JSON document, without a trailing newline, on
    /// one line for every line splitter (U+2028, U+2029 and U+0085 escaped).
    pub fn to_json(&self) -> Vec<u8> {
        let url_len = self.room_url.as_ref().map_or(4, String::len);
        let mut out = Vec::with_capacity(self.raw.len() + url_len + 160);
        self.write_json(&mut out);
        out
    }

    /// [`ActionEvent::to_json`] appended to `out`, which a caller can reuse.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"action\":\"");
        out.extend_from_slice(self.action.as_str().as_bytes());
        out.extend_from_slice(b"\",\"trigger\":");
        // A line to consumers that split lines: no raw line separator in any
        // string (a role name comes from the payload).
        crate::util::write_json_line(out, &*self.trigger);
        out.extend_from_slice(b",\"roomUrl\":");
        crate::util::write_json_line(out, &self.room_url);
        if let Some(state) = &self.state {
            out.extend_from_slice(b",\"room\":");
            crate::util::write_json_line(out, &RoomOut::from(state));
        }
        out.extend_from_slice(b",\"triggerWebhook\":");
        crate::util::push_single_line(out, &self.raw);
        out.push(b'}');
    }

    /// The room for logs: `subdomain/roomName`, or `-` without a room.
    pub fn room_label(&self) -> String {
        self.room
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string)
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

    /// Stops what this action runs, keeping its deliveries (and claims)
    /// pending: this server can no longer renew its hold on them in a store
    /// shared with other servers (it is cut off from it), so another takes
    /// them over once their lease lapses, and two must not run at once. Does
    /// nothing by default: nothing of the action runs on.
    fn fence(&self) {}
}
