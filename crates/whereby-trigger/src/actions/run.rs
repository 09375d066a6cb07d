//! `run`: spawn the assistant as a child process. (In progress.)
