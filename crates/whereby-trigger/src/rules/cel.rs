//! `when`: a trigger's condition, a CEL expression.
//!
//! The expression sees the webhook's top-level fields (`type`, `id`,
//! `createdAt`, `apiVersion`, `data`) with Whereby's names, and `room`, the
//! room's state ([`RoomView`]). It is compiled when the config loads; at run time
//! an expression that fails (a missing field, a type mismatch) counts as false.

use std::sync::{Arc, LazyLock};

use std::collections::BTreeSet;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::{Context, Env, Program, Value};

use crate::state::room::RoomView;

/// The names an expression may use.
pub(crate) const NAMES: [&str; 6] = ["type", "id", "createdAt", "apiVersion", "data", "room"];

/// The standard CEL environment, built once: building it per event would
/// dominate the cost of evaluating a short expression.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Longest expression accepted.
pub const MAX_LEN: usize = 4096;

/// Deepest nesting accepted: of brackets, and the longest run of unary
/// operators or chained `?` conditionals. Rules are short; the bound keeps the
/// parser's and the evaluator's recursion small on any thread.
pub const MAX_DEPTH: usize = 32;

/// Stack of the thread that parses an expression.
const COMPILE_STACK: usize = 64 << 20;

/// Refuses expressions too long or too deeply nested to handle safely, before
/// the parser sees them.
fn check_shape(source: &str) -> Result<(), WhenError> {
    let fail = |message: String| {
        Err(WhenError {
            line: None,
            message,
        })
    };
    if source.len() > MAX_LEN {
        return fail(format!("the expression is longer than {MAX_LEN} bytes"));
    }
    let (mut depth, mut deepest, mut unary, mut conditionals) = (0usize, 0usize, 0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '?' => conditionals += 1,
            _ => {}
        }
        if c == '!' || c == '-' {
            unary += 1;
        } else if !c.is_whitespace() {
            unary = 0;
        }
        deepest = deepest.max(unary);
    }
    if deepest > MAX_DEPTH || conditionals > MAX_DEPTH {
        return fail(format!(
            "the expression nests deeper than {MAX_DEPTH} levels"
        ));
    }
    Ok(())
}

/// A compiled `when` expression.
pub struct When {
    source: String,
    program: Program,
}

impl std::fmt::Debug for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("When").field(&self.source).finish()
    }
}

/// Why an expression does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WhenError {
    /// 1-based line within the expression, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl When {
    /// Compiles `source`, refusing syntax errors and names other than `type`, `id`, `createdAt`, `apiVersion`, `data` and `room`.
    ///
    /// # Errors
    /// A [`WhenError`] with the line within the expression where it can tell.
    ///
    /// ```
    /// use whereby_trigger::rules::cel::When;
    /// assert!(When::compile(r#"data.subdomain == "acme" && room.numClients >= 2"#).is_ok());
    /// assert!(When::compile("room.numClients >=").is_err());
    /// assert!(When::compile("rooom.numClients > 1").is_err());
    /// ```
    pub fn compile(source: &str) -> Result<When, WhenError> {
        check_shape(source)?;
        // The CEL parser recurses deeply per level of nesting (hundreds of KiB
        // per level in a debug build): parse on a thread with a stack to match,
        // so that loading or reloading a config never overflows a worker's.
        let owned = source.to_owned();
        std::thread::Builder::new()
            .name("cel-compile".into())
            .stack_size(COMPILE_STACK)
            .spawn(move || When::compile_here(&owned))
            .map_err(|err| WhenError {
                line: None,
                message: format!("cannot start the compiler thread: {err}"),
            })?
            .join()
            .unwrap_or_else(|_| {
                Err(WhenError {
                    line: None,
                    message: "the expression could not be compiled".to_owned(),
                })
            })
    }

    fn compile_here(source: &str) -> Result<When, WhenError> {
        let program = ENV.compile(source).map_err(|errors| {
            let first = errors.errors.first();
            WhenError {
                line: first
                    .and_then(|e| usize::try_from(e.pos.0).ok())
                    .filter(|l| *l > 0),
                message: first.map_or_else(|| errors.to_string(), |e| e.msg.clone()),
            }
        })?;
        let mut free = BTreeSet::new();
        free_names(program.expression(), &mut Vec::new(), &mut free);
        let unknown: Vec<&str> = free
            .into_iter()
            .filter(|name| !NAMES.contains(name))
            .collect();
        if !unknown.is_empty() {
            return Err(WhenError {
                line: None,
                message: format!(
                    "unknown name{} {} (an expression may use {})",
                    if unknown.len() > 1 { "s" } else { "" },
                    unknown
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    NAMES.join(", ")
                ),
            });
        }
        Ok(When {
            source: source.to_owned(),
            program,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression against `input`.
    ///
    /// # Errors
    /// The evaluation error, or a note that the result was not a boolean. The
    /// caller treats either as "false" and logs it.
    pub fn eval(&self, input: &WhenInput) -> Result<bool, String> {
        let mut context = Context::with_env(ENV.clone());
        for (name, value) in &input.vars {
            context.add_variable_from_value(*name, value.clone());
        }
        match self.program.execute(&context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the expression gave {other:?}, not a boolean")),
            Err(err) => Err(err.to_string()),
        }
    }
}

/// Collects the names `expr` uses that no enclosing comprehension binds: the
/// crate's own reference list also counts macro variables (`x` in
/// `list.exists(x, x > 1)`), which are not names the user must supply.
fn free_names<'a>(expr: &'a IdedExpr, bound: &mut Vec<&'a str>, out: &mut BTreeSet<&'a str>) {
    match &expr.expr {
        Expr::Ident(name) => {
            // '@'-names are the macro expansion's own accumulators.
            if !name.starts_with('@') && !bound.contains(&name.as_str()) {
                out.insert(name);
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                free_names(target, bound, out);
            }
            for arg in &call.args {
                free_names(arg, bound, out);
            }
        }
        Expr::Comprehension(comp) => {
            free_names(&comp.iter_range, bound, out);
            free_names(&comp.accu_init, bound, out);
            let depth = bound.len();
            bound.push(&comp.iter_var);
            if let Some(second) = &comp.iter_var2 {
                bound.push(second);
            }
            bound.push(&comp.accu_var);
            free_names(&comp.loop_cond, bound, out);
            free_names(&comp.loop_step, bound, out);
            free_names(&comp.result, bound, out);
            bound.truncate(depth);
        }
        Expr::List(list) => {
            for element in &list.elements {
                free_names(element, bound, out);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                entry_names(&entry.expr, bound, out);
            }
        }
        Expr::Struct(st) => {
            for entry in &st.entries {
                entry_names(&entry.expr, bound, out);
            }
        }
        Expr::Select(select) => free_names(&select.operand, bound, out),
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn entry_names<'a>(entry: &'a EntryExpr, bound: &mut Vec<&'a str>, out: &mut BTreeSet<&'a str>) {
    match entry {
        EntryExpr::StructField(field) => free_names(&field.value, bound, out),
        EntryExpr::MapEntry(pair) => {
            free_names(&pair.key, bound, out);
            free_names(&pair.value, bound, out);
        }
    }
}

/// What an expression sees for one event, converted once and shared by every
/// trigger that evaluates it.
#[derive(Debug, Clone)]
pub struct WhenInput {
    vars: Vec<(&'static str, Value)>,
}

impl WhenInput {
    /// The input for a webhook (as JSON) and its room's state.
    pub fn new(webhook: &serde_json::Value, room: Option<&RoomView>) -> WhenInput {
        let mut vars = Vec::with_capacity(NAMES.len());
        for name in NAMES {
            let value = if name == "room" {
                room.and_then(|r| cel::to_value(r).ok())
            } else {
                webhook.get(name).and_then(|v| cel::to_value(v).ok())
            };
            if let Some(value) = value {
                vars.push((name, value));
            }
        }
        WhenInput { vars }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(event_type: &str, room: RoomView) -> WhenInput {
        let webhook: serde_json::Value =
            serde_json::from_str(whereby_webhook::sample::sample(event_type).unwrap()).unwrap();
        WhenInput::new(&webhook, Some(&room))
    }

    fn eval(expr: &str, input: &WhenInput) -> Result<bool, String> {
        When::compile(expr).unwrap().eval(input)
    }

    #[test]
    fn sees_fields_as_sent_and_absent_ones_as_absent() {
        let mut webhook: serde_json::Value =
            serde_json::from_str(whereby_webhook::sample::sample("room.client.joined").unwrap())
                .unwrap();
        let data = webhook["data"].as_object_mut().unwrap();
        data.remove("displayName");
        data.remove("subdomain");
        data.insert("meetingId".into(), json!(134));
        let i = WhenInput::new(&webhook, Some(&RoomView::default()));
        assert_eq!(eval("has(data.displayName)", &i), Ok(false));
        assert_eq!(eval("has(data.subdomain)", &i), Ok(false));
        assert_eq!(eval("has(data.participantId)", &i), Ok(true));
        assert_eq!(eval("data.meetingId == 134", &i), Ok(true));
        assert!(eval(r#"data.displayName == "Ada""#, &i).is_err());
    }

    #[test]
    fn sees_the_webhook_and_the_room() {
        let room = RoomView {
            num_clients: 2,
            num_clients_by_role_name: [("host".to_owned(), 1), ("visitor".to_owned(), 1)].into(),
            session_active: true,
        };
        let i = input("room.client.joined", room);
        assert_eq!(
            eval(r#"data.subdomain == "acme" && room.numClients >= 2"#, &i),
            Ok(true)
        );
        assert_eq!(eval(r#"type == "room.client.joined""#, &i), Ok(true));
        assert_eq!(
            eval(r#"data.roleName == "host" && data.numClients == 1"#, &i),
            Ok(true)
        );
        assert_eq!(
            eval(r#"room.numClientsByRoleName.visitor == 1"#, &i),
            Ok(true)
        );
        assert_eq!(eval(r#"room.sessionActive"#, &i), Ok(true));
        assert_eq!(eval(r#"createdAt.startsWith("2026-11-02")"#, &i), Ok(true));
        assert_eq!(
            eval(r#"has(data.isDialIn) && !data.isDialIn"#, &i),
            Ok(true)
        );
        assert_eq!(eval(r#"data.metadata == null"#, &i), Ok(true));
        assert_eq!(
            eval(r#"data.externalId.matches("^user-[0-9]+$")"#, &i),
            Ok(true)
        );
        assert_eq!(
            eval(
                r#"data.numClientsByRoleName.exists(role, role == "host")"#,
                &i
            ),
            Ok(true)
        );
    }

    #[test]
    fn every_fixture_can_be_evaluated() {
        for (event_type, _) in whereby_webhook::sample::SAMPLES {
            let i = input(event_type, RoomView::default());
            assert_eq!(eval(&format!("type == {:?}", event_type), &i), Ok(true));
            assert_eq!(eval(r#"data.roomName == "/standup-3f9a2c""#, &i), Ok(true));
            assert_eq!(
                eval("room.numClients == 0 && !room.sessionActive", &i),
                Ok(true)
            );
        }
    }

    #[test]
    fn runtime_failures_are_errors_not_panics() {
        let i = input("room.session.started", RoomView::default());
        // A field that session events do not have.
        assert!(eval("data.numClients > 1", &i).is_err());
        assert!(
            eval(r#"data.subdomain"#, &i)
                .unwrap_err()
                .contains("not a boolean")
        );
        assert!(eval(r#"data.subdomain + 1 == 2"#, &i).is_err());
        assert!(eval(r#"1 / 0 == 1"#, &i).is_err());
    }

    #[test]
    fn compile_errors_name_the_line_or_the_name() {
        let err = When::compile("data.subdomain ==\n  && true").unwrap_err();
        assert_eq!(err.line, Some(2), "{err:?}");
        let err = When::compile("rooms.numClients > 1 && foo").unwrap_err();
        assert!(
            err.message.contains("`foo`") && err.message.contains("`rooms`"),
            "{err}"
        );
        // A macro's variable is bound inside it, and only there.
        assert!(When::compile("data.a.exists(x, x > 1)").is_ok());
        assert!(When::compile("[1].all(x, x > 0) && x > 0").is_err());
        let err = When::compile("data.a.exists(x, x > y)").unwrap_err();
        assert!(
            err.message.contains("`y`") && !err.message.contains("`x`"),
            "{err}"
        );
        assert!(When::compile("").is_err());
    }

    #[test]
    fn deep_or_long_expressions_are_refused_not_crashed_on() {
        let deep = format!(
            "{}true{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(When::compile(&deep).unwrap_err().message.contains("nests"));
        assert!(When::compile(&format!("{}true", "!".repeat(40))).is_err());
        assert!(When::compile(&"true ? true : ".repeat(40)).is_err());
        assert!(When::compile(&"a".repeat(MAX_LEN + 1)).is_err());
        // Brackets inside strings do not count, and the deepest allowed works,
        // also when evaluated on a small stack.
        assert!(
            When::compile(r#"data.subdomain != "((((((((((((((((((((((((((((((((((((""#).is_ok()
        );
        let ok = format!("{}true{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        let when = When::compile(&ok).unwrap();
        let webhook = json!({"type": "x"});
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || when.eval(&WhenInput::new(&webhook, None)))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result, Ok(true));
    }

    #[test]
    fn a_missing_room_is_an_error_at_run_time() {
        let webhook = json!({"type": "room.session.started", "data": {}});
        let i = WhenInput::new(&webhook, None);
        assert!(eval("room.numClients > 0", &i).is_err());
    }
}
