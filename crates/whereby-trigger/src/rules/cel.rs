//! `when`: a trigger's condition, a CEL expression.
//!
//! The expression sees the webhook's top-level fields (`type`, `id`,
//! `createdAt`, `apiVersion`, `data`) with Whereby's names, and `room`, the
//! room's state ([`RoomView`]). It is compiled when the config loads; at run time
//! an expression that fails (a missing field, a type mismatch) counts as false.
//!
//! Why one file: all of CEL is here, behind the one `cel` feature gate:
//! compiling and its bounds, the walks over an expression's tree (free names,
//! the `data.FIELD`s checked against the documented payloads, the comparisons
//! `check` lints) and the input an expression sees at run time; the last 290
//! lines are tests.

use std::sync::{Arc, LazyLock};

use std::collections::{BTreeSet, HashMap};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::objects::Key;
use cel::{Context, Env, Program, Value};

use crate::state::room::RoomView;

/// The names an expression may use.
pub(crate) const NAMES: [&str; 6] = ["type", "id", "createdAt", "apiVersion", "data", "room"];

/// The standard CEL environment, built once: building it per event would
/// dominate the cost of evaluating a short expression.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Longest expression accepted.
pub const MAX_EXPRESSION_LEN: usize = 4096;

/// Deepest nesting accepted: of brackets, and the longest run of unary
/// operators or chained `?` conditionals. Rules are short; the bound keeps the
/// parser's and the evaluator's recursion small on any thread.
pub const MAX_EXPRESSION_DEPTH: usize = 32;

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
    if source.len() > MAX_EXPRESSION_LEN {
        return fail(format!(
            "the expression is longer than {MAX_EXPRESSION_LEN} bytes"
        ));
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
    if deepest > MAX_EXPRESSION_DEPTH || conditionals > MAX_EXPRESSION_DEPTH {
        return fail(format!(
            "the expression nests deeper than {MAX_EXPRESSION_DEPTH} levels"
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
            let line = first
                .and_then(|e| usize::try_from(e.pos.0).ok())
                .filter(|l| *l > 0);
            // 1-based, as the parser counts (0 when it cannot tell).
            let column = first
                .and_then(|e| usize::try_from(e.pos.1).ok())
                .filter(|c| *c > 0);
            let message = first.map_or_else(|| errors.to_string(), |e| e.msg.clone());
            WhenError {
                line,
                message: match (line, column) {
                    (Some(line), Some(column)) => with_caret(&message, source, line, column),
                    _ => message,
                },
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

impl When {
    /// What can be seen wrong with the expression on `input` (a sample of one
    /// of its types): an evaluation that fails (a missing field, an operator
    /// between types it does not take), or `==`/`!=` between a field and a
    /// literal of another type, which CEL answers `false` (or `true`) without
    /// an error. Empty when nothing is seen; a rule with a problem here would
    /// count as not matched on such a webhook.
    pub fn lint(&self, input: &WhenInput) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(err) = self.eval(input) {
            problems.push(format!("fails ({err}) and counts as false"));
        }
        mismatched_comparisons(self.program.expression(), input, &mut problems);
        problems
    }
}

/// [`When::lint`] on the documented sample of each of `types` (those that
/// have one), with a room in which every documented role is present and a
/// session is active: each problem names the type it was seen on and `key`,
/// the condition's name (`when`, `stop_when`).
pub fn lint_samples(
    when: &When,
    key: &str,
    types: &[whereby_webhook::AnyEventType],
) -> Vec<String> {
    let roles: std::collections::BTreeMap<String, u32> = whereby_webhook::RoleName::documented()
        .map(|role| (role.to_owned(), 1))
        .collect();
    let room = RoomView {
        num_clients: u32::try_from(roles.len()).unwrap_or(u32::MAX),
        num_clients_by_role_name: roles,
        session_active: true,
    };
    let mut problems = Vec::new();
    for event_type in types {
        let Some(sample) = whereby_webhook::sample::sample(event_type.as_str()) else {
            continue;
        };
        let Ok(webhook) = serde_json::from_str::<serde_json::Value>(sample) else {
            continue;
        };
        let input = WhenInput::new(&webhook, Some(&room));
        for problem in when.lint(&input) {
            problems.push(format!("on the {event_type} sample, `{key}` {problem}"));
        }
    }
    problems
}

/// Pushes a problem for every `field == literal` (or `!=`) in `expr` whose
/// field, as `input` has it, is of another kind than the literal.
fn mismatched_comparisons(expr: &IdedExpr, input: &WhenInput, out: &mut Vec<String>) {
    match &expr.expr {
        Expr::Call(call) => {
            if (call.func_name == "_==_" || call.func_name == "_!=_")
                && let [left, right] = &call.args[..]
            {
                for (field, literal) in [(left, right), (right, left)] {
                    let (Some(path), Expr::Literal(literal)) = (field_path(field), &literal.expr)
                    else {
                        continue;
                    };
                    let Some(value) = input.lookup(&path) else {
                        continue;
                    };
                    let (seen, wanted) = (kind_of(&value), literal_kind(literal));
                    // Null stands for an absent optional field, comparable with anything.
                    if seen != wanted && seen != "null" && wanted != "null" {
                        let always = if call.func_name == "_==_" {
                            "never true"
                        } else {
                            "always true"
                        };
                        out.push(format!(
                            "`{}` is {seen} in the sample but is compared with {wanted}: \
                             the comparison is {always}",
                            path.join(".")
                        ));
                    }
                }
            }
            if let Some(target) = &call.target {
                mismatched_comparisons(target, input, out);
            }
            for arg in &call.args {
                mismatched_comparisons(arg, input, out);
            }
        }
        Expr::Select(select) => mismatched_comparisons(&select.operand, input, out),
        Expr::List(list) => {
            for element in &list.elements {
                mismatched_comparisons(element, input, out);
            }
        }
        Expr::Comprehension(comp) => {
            mismatched_comparisons(&comp.iter_range, input, out);
            mismatched_comparisons(&comp.loop_step, input, out);
        }
        _ => {}
    }
}

/// `data.a.b` as `["data", "a", "b"]`; `None` for anything but a field path.
fn field_path(expr: &IdedExpr) -> Option<Vec<&str>> {
    match &expr.expr {
        Expr::Ident(name) => Some(vec![name.as_str()]),
        Expr::Select(select) if !select.test => {
            let mut path = field_path(&select.operand)?;
            path.push(&select.field);
            Some(path)
        }
        _ => None,
    }
}

/// The kind of a value, as the lint names it; numbers are one kind, since CEL
/// compares an int with a uint or a double by value.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => "a number",
        Value::String(_) => "a string",
        Value::Bool(_) => "a boolean",
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Null => "null",
        _ => "another kind",
    }
}

fn literal_kind(literal: &cel::common::ast::LiteralValue) -> &'static str {
    use cel::common::ast::LiteralValue as L;
    match literal {
        L::Int(_) | L::UInt(_) | L::Double(_) => "a number",
        L::String(_) => "a string",
        L::Boolean(_) => "a boolean",
        L::Null => "null",
        L::Bytes(_) => "bytes",
    }
}

/// `message`, the column (1-based, as given) and the expression's line with a caret
/// under that column: the parser's own words ("token recognition error at:
/// '= '") do not say where, and an expression is short enough to show.
fn with_caret(message: &str, source: &str, line: usize, column: usize) -> String {
    let Some(text) = source.lines().nth(line - 1) else {
        return message.to_owned();
    };
    // The column counts characters; the caret is placed under the same one.
    let pad: String = text
        .chars()
        .take(column - 1)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!("{message} (column {column})\n    {text}\n    {pad}^")
}

/// The `data.FIELD`s `when` names that no documented payload of any of
/// `types` has, each with the nearest known field as a suggestion: a typo
/// such as `data.numClient` would otherwise fail at run time on every event
/// ("No such key") and count as false. Empty when one of `types` has no
/// documented payload (its fields cannot be known), and for names a macro
/// binds. Fields of the samples and of every shape Whereby has sent count.
pub fn unknown_data_fields(when: &When, types: &[whereby_webhook::AnyEventType]) -> Vec<String> {
    use whereby_webhook::sample::{SHAPES, sample};
    let mut known: BTreeSet<String> = BTreeSet::new();
    for event_type in types {
        let name = event_type.as_str();
        let bodies = sample(name).into_iter().chain(
            SHAPES
                .iter()
                .filter(|shape| shape.event_type == name)
                .map(|shape| shape.body),
        );
        let mut documented = false;
        for body in bodies {
            let data = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("data").and_then(|d| d.as_object()).cloned());
            if let Some(data) = data {
                known.extend(data.keys().cloned());
                documented = true;
            }
        }
        if !documented {
            return Vec::new();
        }
    }
    let mut named = BTreeSet::new();
    data_fields(when.program.expression(), &mut Vec::new(), &mut named);
    let types: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    named
        .into_iter()
        .filter(|field| !known.contains(*field))
        .map(|field| {
            let hint = crate::util::closest(field, known.iter().map(String::as_str))
                .map(|near| format!("did you mean `data.{near}`? "))
                .unwrap_or_default();
            format!(
                "`data.{field}` is not a field of {} webhooks; {hint}(known: {})",
                types.join(" or "),
                known
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect()
}

/// Collects `FIELD` of every `data.FIELD` in `expr` (`has(data.FIELD)`
/// included), where `data` is the webhook's and not a macro's variable.
fn data_fields<'a>(expr: &'a IdedExpr, bound: &mut Vec<&'a str>, out: &mut BTreeSet<&'a str>) {
    match &expr.expr {
        Expr::Select(select) => {
            if let Expr::Ident(name) = &select.operand.expr
                && name == "data"
                && !bound.contains(&"data")
            {
                out.insert(&select.field);
            }
            data_fields(&select.operand, bound, out);
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                data_fields(target, bound, out);
            }
            for arg in &call.args {
                data_fields(arg, bound, out);
            }
        }
        Expr::Comprehension(comp) => {
            data_fields(&comp.iter_range, bound, out);
            data_fields(&comp.accu_init, bound, out);
            let depth = bound.len();
            bound.push(&comp.iter_var);
            if let Some(second) = &comp.iter_var2 {
                bound.push(second);
            }
            bound.push(&comp.accu_var);
            data_fields(&comp.loop_cond, bound, out);
            data_fields(&comp.loop_step, bound, out);
            data_fields(&comp.result, bound, out);
            bound.truncate(depth);
        }
        Expr::List(list) => {
            for element in &list.elements {
                data_fields(element, bound, out);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                entry_data_fields(&entry.expr, bound, out);
            }
        }
        Expr::Struct(st) => {
            for entry in &st.entries {
                entry_data_fields(&entry.expr, bound, out);
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn entry_data_fields<'a>(
    entry: &'a EntryExpr,
    bound: &mut Vec<&'a str>,
    out: &mut BTreeSet<&'a str>,
) {
    match entry {
        EntryExpr::StructField(field) => data_fields(&field.value, bound, out),
        EntryExpr::MapEntry(pair) => {
            data_fields(&pair.key, bound, out);
            data_fields(&pair.value, bound, out);
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
                room.map(room_value)
            } else {
                webhook.get(name).map(json_value)
            };
            if let Some(value) = value {
                vars.push((name, value));
            }
        }
        WhenInput { vars }
    }
}

impl WhenInput {
    /// The value at `path` (`["data", "roleName"]`), if the input has it.
    fn lookup(&self, path: &[&str]) -> Option<Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self
            .vars
            .iter()
            .find(|(name, _)| name == first)
            .map(|(_, v)| v.clone())?;
        for field in rest {
            let Value::Map(map) = value else {
                return None;
            };
            value = map
                .map
                .get(&Key::String(Arc::new((*field).to_owned())))?
                .clone();
        }
        Some(value)
    }
}

/// A JSON value as CEL sees it. Whole numbers are signed `int`s (CEL's own
/// literals are), so that `data.numClients - 1` is arithmetic between two ints
/// rather than an error between a `uint` and an `int`; only a number above
/// `i64::MAX` stays a `uint`.
fn json_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            (None, None) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_value).collect()))
        }
        serde_json::Value::Object(fields) => Value::Map(cel::objects::Map {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), json_value(v)))
                    .collect(),
            ),
        }),
    }
}

/// `room`: the room's state, with its counts as signed `int`s and `numHumans`.
fn room_value(room: &RoomView) -> Value {
    let int = |n: u32| Value::Int(i64::from(n));
    let key = |k: &str| Key::String(Arc::new(k.to_owned()));
    let roles = room
        .num_clients_by_role_name
        .iter()
        .map(|(role, n)| (key(role), int(*n)))
        .collect();
    let fields: HashMap<Key, Value> = [
        (key("numClients"), int(room.num_clients)),
        (key("numHumans"), int(room.num_humans())),
        (
            key("numClientsByRoleName"),
            Value::Map(cel::objects::Map {
                map: Arc::new(roles),
            }),
        ),
        (key("sessionActive"), Value::Bool(room.session_active)),
    ]
    .into();
    Value::Map(cel::objects::Map {
        map: Arc::new(fields),
    })
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
    fn lint_sees_failures_and_comparisons_across_types() {
        use whereby_webhook::EventType::{AssistantRequested, RoomClientJoined};
        let lint = |e: &str| {
            lint_samples(
                &When::compile(e).unwrap(),
                "when",
                &[RoomClientJoined.into()],
            )
        };
        assert_eq!(
            lint(r#"data.roleName == "host" && room.numHumans - 1 >= 0"#),
            Vec::<String>::new()
        );
        assert_eq!(
            lint("has(data.nope) && data.nope > 1"),
            Vec::<String>::new()
        );
        assert_eq!(
            lint("room.numClientsByRoleName.host == 1"),
            Vec::<String>::new()
        );

        let missing = lint("data.nope + 1 > 0");
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].contains("room.client.joined") && missing[0].contains("No such key: nope"),
            "{missing:?}"
        );
        let compared = lint("data.displayName == 1 || 1 != data.roleName");
        assert_eq!(compared.len(), 2, "{compared:?}");
        assert!(
            compared[0].contains("`data.displayName` is a string")
                && compared[0].contains("with a number"),
            "{compared:?}"
        );
        assert!(compared[0].ends_with("never true"), "{compared:?}");
        assert!(
            compared[1].contains("`data.roleName`") && compared[1].ends_with("always true"),
            "{compared:?}"
        );
        // A field the sample sends as null is one that may be absent, not a type.
        let nullable = WhenInput::new(&json!({"data": {"displayName": null}}), None);
        let when = When::compile(r#"data.displayName == "Ada""#).unwrap();
        assert_eq!(when.lint(&nullable), Vec::<String>::new());
        let typed = lint(r#"data.roleName > 1"#);
        assert!(typed[0].contains("no matching overload"), "{typed:?}");
        // Each type's own sample: a field only one of them has.
        let both = lint_samples(
            &When::compile("data.roleName == \"host\"").unwrap(),
            "stop_when",
            &[RoomClientJoined.into(), AssistantRequested.into()],
        );
        assert!(
            !both.is_empty()
                && both
                    .iter()
                    .all(|p| p.contains("assistant.requested") && p.contains("`stop_when`")),
            "{both:?}"
        );
    }

    #[test]
    fn counts_are_signed_ints_and_humans_exclude_machines() {
        let room = RoomView {
            num_clients: 3,
            num_clients_by_role_name: [
                ("host".to_owned(), 1),
                ("assistant".to_owned(), 1),
                ("recorder".to_owned(), 1),
            ]
            .into(),
            session_active: true,
        };
        let i = input("room.client.joined", room);
        // The sample's data.numClients is 1.
        assert_eq!(eval("data.numClients - 1 == 0", &i), Ok(true));
        assert_eq!(eval("room.numClients - 1 == 2", &i), Ok(true));
        assert_eq!(eval("room.numClients - 4 < 0", &i), Ok(true));
        assert_eq!(eval("room.numHumans <= 1", &i), Ok(true));
        assert_eq!(eval("room.numHumans == 1", &i), Ok(true));
        assert_eq!(
            eval("room.numClientsByRoleName.host - 1 == 0", &i),
            Ok(true)
        );
        assert_eq!(
            eval("room.numClients * 2 == 6 && data.numClients + 1 == 2", &i),
            Ok(true)
        );
    }

    #[test]
    fn a_number_above_i64_stays_a_uint_and_fractions_are_doubles() {
        let webhook = json!({"type": "x", "data": {"big": u64::MAX, "half": 0.5, "neg": -3}});
        let i = WhenInput::new(&webhook, None);
        assert_eq!(eval("data.big == 18446744073709551615u", &i), Ok(true));
        assert_eq!(eval("data.half == 0.5", &i), Ok(true));
        assert_eq!(eval("data.neg + 3 == 0", &i), Ok(true));
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
    fn a_syntax_error_shows_its_column_with_a_caret() {
        let err = When::compile("data.roleName = \"host\"").unwrap_err();
        assert_eq!(err.line, Some(1), "{err:?}");
        let lines: Vec<&str> = err.message.lines().collect();
        assert!(lines[0].contains("(column "), "{err}");
        assert_eq!(lines.len(), 3, "{err}");
        let caret = lines[2].find('^').expect("a caret");
        // Under the `=` (the expression is indented as the caret is).
        assert_eq!(&lines[1][caret..=caret], "=", "{err}");
    }

    #[test]
    fn unknown_data_fields_are_named_with_a_suggestion() {
        let joined = ["room.client.joined".parse().unwrap()];
        let when = When::compile("data.numClient >= 2 && has(data.roleName)").unwrap();
        let problems = unknown_data_fields(&when, &joined);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("`data.numClient`"), "{problems:?}");
        assert!(
            problems[0].contains("did you mean `data.numClients`"),
            "{problems:?}"
        );
        // A field of any listened-to type is known; a macro's `data` is its own.
        let both = [
            "room.client.joined".parse().unwrap(),
            "assistant.requested".parse().unwrap(),
        ];
        let fine = When::compile("data.roomName != \"\" && [1].exists(data, data > 0)").unwrap();
        assert!(unknown_data_fields(&fine, &both).is_empty());
        // An undocumented type's fields cannot be known: nothing is said.
        let other = ["meeting.renamed".parse().unwrap()];
        assert!(unknown_data_fields(&when, &other).is_empty());
    }

    #[test]
    fn deep_or_long_expressions_are_refused_not_crashed_on() {
        let deep = format!(
            "{}true{}",
            "(".repeat(MAX_EXPRESSION_DEPTH + 1),
            ")".repeat(MAX_EXPRESSION_DEPTH + 1)
        );
        assert!(When::compile(&deep).unwrap_err().message.contains("nests"));
        assert!(When::compile(&format!("{}true", "!".repeat(40))).is_err());
        assert!(When::compile(&"true ? true : ".repeat(40)).is_err());
        assert!(When::compile(&"a".repeat(MAX_EXPRESSION_LEN + 1)).is_err());
        // Brackets inside strings do not count, and the deepest allowed works,
        // also when evaluated on a small stack.
        assert!(
            When::compile(r#"data.subdomain != "((((((((((((((((((((((((((((((((((((""#).is_ok()
        );
        let ok = format!(
            "{}true{}",
            "(".repeat(MAX_EXPRESSION_DEPTH),
            ")".repeat(MAX_EXPRESSION_DEPTH)
        );
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
