//! Rules from the config file: which webhooks start (and stop) assistants.
//!
//! webhook → [room state](crate::state::room) folded → each trigger's `on` and
//! `when` ([`cel`]) → its `once_per` [claim](crate::state::claims) → actions.
//! [`engine`] ties them together; [`config`] reads the TOML file.

#[cfg(feature = "cel")]
pub mod cel;
pub mod config;
pub mod engine;
