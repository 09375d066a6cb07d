//! `forward`: POST the event to a service. (In progress.)
