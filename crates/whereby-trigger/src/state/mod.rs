//! State: what the server knows about each room and who holds it.
//!
//! [`room`] folds the webhooks of each room into its state (clients, session),
//! ordered by `createdAt`; [`claims`] are the `once_per` leases that keep one
//! assistant per event, room or session. Rules read and take them, actions hold
//! and release them, the store persists them; this module depends on none of
//! those.

pub mod claims;
pub mod room;
