//! From a [`Config`] to running [`Rule`]s: one set of actions per trigger,
//! kept across config reloads so that running assistants survive them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::actions::Action;
#[cfg(feature = "forward")]
use crate::actions::forward::ForwardAction;
use crate::actions::run::RunAction;
use crate::actions::stdout::{LineSink, StdoutAction};
use crate::config::{Config, TriggerConfig};
use crate::rules::engine::{Rule, RulePredicate};

/// Builds rules from config and owns their actions.
///
/// A `run` action is kept per trigger name: on reload it is reconfigured, not
/// replaced, so its running processes, their claims and its `max_running`
/// queue carry on. A reload that removes a trigger's `run` stops its
/// processes and releases their claims. Rust programs add their own actions
/// and predicates by trigger name:
///
/// ```
/// use std::sync::Arc;
/// use whereby_trigger::actions::{Action, ActionEvent};
/// use whereby_trigger::actions::stdout::LineSink;
/// use whereby_trigger::registry::Registry;
/// use whereby_trigger::config::Config;
/// use whereby_trigger::rules::engine::Engine;
/// use whereby_trigger::webhook::{InRoom, RoomClientJoined};
/// use whereby_trigger::Trigger;
///
/// /// Starts the assistant in-process.
/// struct LaunchAssistant;
///
/// impl Action for LaunchAssistant {
///     fn kind(&self) -> &'static str { "launch" }
///     fn start(&self, event: Arc<ActionEvent>) {
///         // `None` only for a type without a room, which this trigger is not on.
///         if let Some(url) = &event.room_url {
///             println!("joining {url}");
///         }
///     }
///     fn stop(&self, event: Arc<ActionEvent>) {
///         println!("leaving {}", event.room_label());
///     }
/// }
///
/// let config = Config::from_toml(r#"
///     [[trigger]]
///     name = "note-taker"
///     on = ["room.session.started", "assistant.requested"]
///     once_per = "session"
///     stop_on = ["room.session.ended"]
///     stdout = true
/// "#, &|name: &str| std::env::var(name).ok())?;
///
/// let mut actions = Registry::new(LineSink::stdout());
/// actions.add_action("note-taker", Arc::new(LaunchAssistant));
/// // A typed Rust condition, ANDed with the trigger's `when`.
/// actions.add_predicate("note-taker", |event| {
///     event.in_room().is_some_and(|room| room.room_name().starts_with("/standup"))
/// });
/// let engine = Arc::new(Engine::new(actions.rules(&config)?));
///
/// // Config rules and typed predicates side by side on one Trigger.
/// let trigger = Trigger::builder()
///     .rules(engine)
///     .on(|joined: &RoomClientJoined| joined.data.num_clients == Some(1))
///     .build()?;
/// # drop(trigger);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Registry {
    #[cfg(feature = "forward")]
    client: reqwest::Client,
    stdout: LineSink,
    runs: Mutex<HashMap<Arc<str>, Arc<RunAction>>>,
    /// `run` actions a reload removed, whose children may still be exiting.
    retired_runs: Mutex<Vec<Arc<RunAction>>>,
    /// Current `forward` actions by trigger, and those a reload replaced while
    /// they still had deliveries in flight (drained on shutdown too).
    #[cfg(feature = "forward")]
    forwards: Mutex<Forwards>,
    extra_actions: HashMap<String, Vec<Arc<dyn Action>>>,
    extra_predicates: HashMap<String, RulePredicate>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("runs", &self.lock_runs().len())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "forward")]
#[derive(Default)]
struct Forwards {
    current: HashMap<Arc<str>, Arc<ForwardAction>>,
    retired: Vec<Arc<ForwardAction>>,
}

/// An error while building a trigger's actions.
#[derive(Debug, thiserror::Error)]
#[error("trigger `{trigger}`: {message}")]
pub struct BuildError {
    /// The trigger.
    pub trigger: String,
    /// What went wrong.
    pub message: String,
}

impl Registry {
    /// A registry whose `stdout` actions write to `stdout`.
    pub fn new(stdout: LineSink) -> Self {
        Registry {
            // No redirects: a followed 301-303 would turn the POST into a GET.
            #[cfg(feature = "forward")]
            client: ForwardAction::client().unwrap_or_default(),
            stdout,
            runs: Mutex::new(HashMap::new()),
            retired_runs: Mutex::new(Vec::new()),
            #[cfg(feature = "forward")]
            forwards: Mutex::new(Forwards::default()),
            extra_actions: HashMap::new(),
            extra_predicates: HashMap::new(),
        }
    }

    /// Adds `action` to the trigger named `trigger`, besides its configured ones.
    pub fn add_action(&mut self, trigger: &str, action: Arc<dyn Action>) {
        self.extra_actions
            .entry(trigger.to_owned())
            .or_default()
            .push(action);
    }

    /// ANDs a Rust condition with the `when` of the trigger named `trigger`.
    pub fn add_predicate(
        &mut self,
        trigger: &str,
        predicate: impl Fn(&whereby_webhook::WebhookEvent) -> bool + Send + Sync + 'static,
    ) {
        self.extra_predicates
            .insert(trigger.to_owned(), Arc::new(predicate));
    }

    /// The rules of `config`, with their actions.
    ///
    /// # Errors
    /// When an action cannot be built (a `forward` spec the client refuses).
    ///
    /// Called again with a reloaded config, it keeps the `run` actions of the
    /// triggers that still have one, and retires the others (see
    /// [`RunAction::retire`]) once every rule is built.
    pub fn rules(&self, config: &Config) -> Result<Vec<Rule>, BuildError> {
        let rules = config
            .triggers
            .iter()
            .map(|t| self.rule(t))
            .collect::<Result<Vec<_>, _>>()?;
        let removed: Vec<Arc<RunAction>> = {
            let mut runs = self.lock_runs();
            let gone: Vec<Arc<str>> = runs
                .keys()
                .filter(|name| {
                    !config
                        .triggers
                        .iter()
                        .any(|t| t.run.is_some() && t.name == **name)
                })
                .cloned()
                .collect();
            gone.iter().filter_map(|name| runs.remove(name)).collect()
        };
        let mut retired = self.retired_runs.lock().unwrap_or_else(|p| p.into_inner());
        retired.retain(|run| run.running() > 0);
        for run in removed {
            run.retire();
            retired.push(run);
        }
        Ok(rules)
    }

    /// The rules of `config` without any action: what `replay` evaluates.
    pub fn dry_rules(config: &Config) -> Vec<Rule> {
        config.triggers.iter().map(base_rule).collect()
    }

    fn rule(&self, trigger: &TriggerConfig) -> Result<Rule, BuildError> {
        let mut rule = base_rule(trigger);
        if let Some(predicate) = self.extra_predicates.get(&*trigger.name) {
            let predicate = predicate.clone();
            rule = rule.predicate(move |event| predicate(event));
        }
        if let Some(spec) = &trigger.run {
            let mut runs = self.lock_runs();
            let run = match runs.get(&trigger.name) {
                Some(existing) => {
                    existing.reconfigure(spec.clone());
                    existing.clone()
                }
                None => {
                    let created = RunAction::new(trigger.name.clone(), spec.clone());
                    runs.insert(trigger.name.clone(), created.clone());
                    created
                }
            };
            rule = rule.action(run);
        }
        #[cfg(feature = "forward")]
        if let Some(spec) = &trigger.forward {
            let forward = Arc::new(
                ForwardAction::new(trigger.name.clone(), spec.clone(), self.client.clone())
                    .map_err(|err| BuildError {
                        trigger: trigger.name.to_string(),
                        message: err.to_string(),
                    })?,
            );
            let mut forwards = self.forwards.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = forwards
                .current
                .insert(trigger.name.clone(), forward.clone())
            {
                forwards.retired.push(old);
            }
            forwards.retired.retain(|f| f.in_flight() > 0);
            rule = rule.action(forward);
        }
        if trigger.stdout {
            rule = rule.action(Arc::new(StdoutAction::new(self.stdout.clone())));
        }
        for action in self.extra_actions.get(&*trigger.name).into_iter().flatten() {
            rule = rule.action(action.clone());
        }
        Ok(rule)
    }

    /// Stops every assistant process (SIGTERM, then SIGKILL after its grace) and
    /// waits up to `drain` for `forward` deliveries in flight.
    pub async fn shutdown(&self, drain: std::time::Duration) {
        let mut runs: Vec<Arc<RunAction>> = self.lock_runs().values().cloned().collect();
        runs.extend(
            self.retired_runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        #[cfg(feature = "forward")]
        let forwards: Vec<Arc<ForwardAction>> = {
            let forwards = self.forwards.lock().unwrap_or_else(|p| p.into_inner());
            forwards
                .current
                .values()
                .chain(&forwards.retired)
                .cloned()
                .collect()
        };
        // Concurrently, so shutdown takes the longest grace, not their sum.
        let mut stopping = tokio::task::JoinSet::new();
        for run in runs {
            stopping.spawn(async move { run.shutdown().await });
        }
        #[cfg(feature = "forward")]
        for forward in forwards {
            stopping.spawn(async move {
                forward.drain(drain).await;
            });
        }
        #[cfg(not(feature = "forward"))]
        let _ = drain;
        while stopping.join_next().await.is_some() {}
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<RunAction>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn base_rule(trigger: &TriggerConfig) -> Rule {
    let mut rule = Rule::new(trigger.name.clone(), trigger.on.iter().cloned())
        .once_per(trigger.once_per)
        .lease(trigger.lease)
        .claim(trigger.claim.clone())
        .stop_on(trigger.stop_on.iter().cloned());
    if let Some(after) = trigger.stop_after {
        rule = rule.stop_after(after);
    }
    #[cfg(feature = "cel")]
    if let Some(when) = &trigger.when {
        rule = rule.when_shared(when.clone());
    }
    #[cfg(feature = "cel")]
    if let Some(stop_when) = &trigger.stop_when {
        rule = rule.stop_when(stop_when.clone());
    }
    rule
}
