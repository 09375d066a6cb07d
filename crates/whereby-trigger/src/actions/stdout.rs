//! `stdout`: one JSON line per event. (In progress.)
