//! Rules from the config file: which webhooks start (and stop) assistants.
//!
//! webhook → [room state](crate::state::room) folded → each trigger's `on` and
//! `when` (CEL, in `cel` with the feature of that name) → its `once_per` [claim](crate::state::claims) → actions.
//! [`engine`] ties them together; the TOML file is read by [`crate::config`].

#[cfg(feature = "cel")]
pub mod cel;
pub mod engine;
